//! Health and metrics: `GET /healthz` (200 while the store answers) and
//! `GET /metrics` (Prometheus text format 0.0.4).

use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
    let age = oldest.map_or(0.0, |t| (crate::time::now_ms() - t).max(0) as f64 / 1000.0);
    let c = app.ctx.deliveries.counters();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "convgate_runs_workers",
        "gauge",
        "1 when this node runs the background workers (with several nodes, the one holding the workers' lease).",
        u8::from(app.ctx.deliveries.running()).to_string(),
    );
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
    metric(
        "convgate_auth_failures_total",
        "counter",
        "Failed authentications (1000/1001) since start.",
        app.ctx.limits.auth_failures().to_string(),
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
