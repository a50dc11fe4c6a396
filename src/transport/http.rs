//! The POST transport: `POST /api` takes one JSON envelope
//! (`{"token":…,"cmd":…,…}`) and returns one Convrs reply.
//!
//! The body is the Convrs reply for every outcome; the status gives its class
//! (200 ok, 400 validation, 401 token, 404 unknown, 413 too large, 429 rate
//! limited with `Retry-After`, 500 internal). This module never looks inside
//! a command's fields.

use super::AppState;
use crate::cmd::{self, Envelope};
use crate::error::{ApiError, ErrorCode};
use crate::reply::Reply;
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
    let caller = match ctx.authenticate(env.token.as_deref()) {
        Ok(c) => c,
        Err(e) => return respond(&Reply::error(&env.cmd, &e)),
    };
    respond(&cmd::execute(ctx, &caller, &env).await)
}
