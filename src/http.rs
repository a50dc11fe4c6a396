//! The POST transport: `POST /api` takes one JSON envelope
//! (`{"token":…,"cmd":…,…}`) and returns one Convrs reply; `GET /healthz`.
//!
//! The body is the Convrs reply for every outcome; the status gives its class
//! (200 ok, 400 validation, 401 token, 404 unknown, 413 too large, 429 rate
//! limited with `Retry-After`, 500 internal). This module never looks inside
//! a command's fields.

use crate::auth::authenticate;
use crate::cmd::{self, Envelope};
use crate::error::{ApiError, ErrorCode};
use crate::reply::Reply;
use crate::server::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Turns a reply into the HTTP response: JSON body, status by class,
/// `Retry-After` (whole seconds, at least 1) when rate limited.
pub fn respond(reply: &Reply) -> Response {
    respond_with(reply, reply.http_status())
}

fn respond_with(reply: &Reply, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        reply.to_json(),
    )
        .into_response();
    let h = res.headers_mut();
    if let Some(wait) = reply.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let Some(r) = reply.rate {
        h.insert("x-ratelimit-limit", HeaderValue::from(r.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(r.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(r.reset));
    }
    if reply.replayed.is_some() {
        h.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    res
}

fn too_large(limit: usize) -> Response {
    let e = ApiError::new(
        ErrorCode::InvalidJson,
        format!("request body exceeds max_body_bytes ({limit} bytes)"),
    );
    respond_with(&Reply::error("", &e), 413)
}

/// `POST /api`: one envelope in, one reply out.
pub async fn api(State(app): State<AppState>, req: Request) -> Response {
    let ctx = &app.ctx;
    // The request taken whole: the `HeaderMap` extractor would copy the headers.
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let limit = ctx.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(limit),
    };
    let mut env = match Envelope::parse(&bytes) {
        Ok(env) => env,
        Err(e) => return respond(&Reply::error("", &e)),
    };
    // Extension: the `Idempotency-Key` header stands for the
    // `idempotencyKey` field (the field wins when both are given).
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        env.default_str("idempotencyKey", key.trim());
    }
    let caller = match authenticate(ctx, env.token.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond(&Reply::error(&env.cmd, &e)),
    };
    respond(&cmd::execute(ctx, &caller, &env).await)
}

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub async fn healthz(State(app): State<AppState>) -> Response {
    if app.ctx.store.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
    }
}

/// `GET /metrics`: Prometheus text format (version 0.0.4). Delivery
/// counters since start, pending deliveries and the age of the oldest, and
/// the store's group-commit counters.
pub async fn metrics(State(app): State<AppState>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let (pending, oldest) = app.ctx.deliveries.pending();
    let age = oldest.map_or(0.0, |t| {
        (crate::webhook::now_ms() - t).max(0) as f64 / 1000.0
    });
    let c = app.ctx.deliveries.counters();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "convgate_webhook_pending",
        "gauge",
        "Webhook deliveries waiting for an attempt or in flight.",
        pending.to_string(),
    );
    metric(
        "convgate_webhook_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest pending webhook delivery.",
        format!("{age:.3}"),
    );
    metric(
        "convgate_webhook_delivered_total",
        "counter",
        "Webhook deliveries acknowledged with a 2xx since start.",
        c.delivered.load(Relaxed).to_string(),
    );
    metric(
        "convgate_webhook_failed_total",
        "counter",
        "Webhook deliveries that exhausted their retries since start.",
        c.failed.load(Relaxed).to_string(),
    );
    metric(
        "convgate_webhook_attempts_total",
        "counter",
        "Webhook HTTP attempts since start.",
        c.attempts.load(Relaxed).to_string(),
    );
    let (cb_delivered, cb_failed) = app.ctx.callbacks.counters();
    let (cb_queued, cb_dead) = app.ctx.store.callback_counts();
    metric(
        "convgate_callback_queued",
        "gauge",
        "Delivery callbacks (webhookURL) waiting in the outbox.",
        cb_queued.to_string(),
    );
    metric(
        "convgate_callback_dead_letters",
        "gauge",
        "Delivery callbacks kept after exhausting their retries.",
        cb_dead.to_string(),
    );
    metric(
        "convgate_callback_delivered_total",
        "counter",
        "Delivery callbacks acknowledged with a 2xx since start.",
        cb_delivered.to_string(),
    );
    metric(
        "convgate_callback_failed_total",
        "counter",
        "Delivery callbacks that exhausted their retries since start.",
        cb_failed.to_string(),
    );
    let (flushes, writes) = app.ctx.store.commit_stats();
    metric(
        "convgate_store_flushes_total",
        "counter",
        "Store flushes (group commits) since start.",
        flushes.to_string(),
    );
    metric(
        "convgate_store_writes_total",
        "counter",
        "Acknowledged durable writes since start.",
        writes.to_string(),
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        out,
    )
        .into_response()
}
