//! The provider-facing transport: `GET` and `POST /channels/whatsapp/{botID}`,
//! the callback URL configured in the Meta app's WhatsApp webhook settings.
//!
//! - `GET`: the subscription handshake (Meta, "Webhooks: verification
//!   requests"): `hub.mode=subscribe` and the bot's `hub.verify_token` →
//!   200 with `hub.challenge` as plain text; anything else → 403.
//! - `POST`: `X-Hub-Signature-256` is checked against the raw body with the
//!   bot's app secret (constant time) before anything is parsed: 401 when
//!   missing or wrong. The body is then applied in one durable write and
//!   answered 200 — after the write, so that a crash makes Meta redeliver
//!   rather than lose it. The write is a single group-committed batch
//!   (milliseconds); callbacks and events go out afterwards from their
//!   outboxes, never inside the request.
//!
//! Errors: 404 unknown bot (or not a WhatsApp bot), 413 over
//! `max_body_bytes`, 400 not a webhook JSON body, 500 store failure.

use crate::channel::whatsapp::{signature_valid, Notification};
use crate::model::Bot;
use crate::server::AppState;
use crate::Ctx;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

fn whatsapp_bot(ctx: &Ctx, bot_id: u64) -> Option<(String, Bot)> {
    let org = ctx.store.whatsapp_bot_org(bot_id).ok().flatten()?;
    let bot = ctx.store.bot(&org, bot_id).ok().flatten()?;
    (bot.kind == crate::domain::BotKind::Whatsapp).then_some((org, bot))
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (code, text).into_response()
}

/// `GET /channels/whatsapp/{botID}`: the verification handshake.
pub async fn verify(
    State(app): State<AppState>,
    Path(bot_id): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((_, bot)) = whatsapp_bot(&app.ctx, bot_id) else {
        return status(StatusCode::NOT_FOUND, "unknown bot\n");
    };
    let expected = bot
        .whatsapp
        .as_ref()
        .and_then(|w| w.verify_token.as_ref())
        .and_then(|t| app.ctx.sealer.open(&t.0).ok());
    let given = q.get("hub.verify_token").map(String::as_str);
    let ok = q.get("hub.mode").map(String::as_str) == Some("subscribe")
        && matches!((&expected, given), (Some(e), Some(g))
            if subtle::ConstantTimeEq::ct_eq(e.expose().as_bytes(), g.as_bytes()).into());
    match (ok, q.get("hub.challenge")) {
        (true, Some(challenge)) => (
            StatusCode::OK,
            [("content-type", "text/plain")],
            challenge.clone(),
        )
            .into_response(),
        _ => status(StatusCode::FORBIDDEN, "verification failed\n"),
    }
}

/// `POST /channels/whatsapp/{botID}`: messages and statuses from Meta.
pub async fn notify(
    State(app): State<AppState>,
    Path(bot_id): Path<u64>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = &app.ctx;
    let Some((org, bot)) = whatsapp_bot(ctx, bot_id) else {
        return status(StatusCode::NOT_FOUND, "unknown bot\n");
    };
    let bytes = match axum::body::to_bytes(body, ctx.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let secret = bot
        .whatsapp
        .as_ref()
        .and_then(|w| w.app_secret.as_ref())
        .and_then(|s| ctx.sealer.open(&s.0).ok());
    let Some(secret) = secret else {
        tracing::warn!(
            bot = bot_id,
            "webhook POST for a bot without an app secret; refused"
        );
        return status(StatusCode::UNAUTHORIZED, "no app secret configured\n");
    };
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(secret.expose(), &bytes, sig) {
        tracing::debug!(
            bot = bot_id,
            "webhook POST with a wrong or missing signature"
        );
        return status(StatusCode::UNAUTHORIZED, "invalid signature\n");
    }
    let n: Notification = match serde_json::from_slice(&bytes) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(bot = bot_id, error = %e, "unreadable webhook body");
            return status(StatusCode::BAD_REQUEST, "not a webhook body\n");
        }
    };
    if n.object != "whatsapp_business_account" {
        // Acknowledged so that Meta does not retry what we will never read.
        return status(StatusCode::OK, "ignored\n");
    }
    match crate::messages::apply_notification(ctx, &org, &bot, &n).await {
        Ok(a) => {
            tracing::debug!(bot = bot_id, ?a, "webhook applied");
            status(StatusCode::OK, "ok\n")
        }
        Err(e) => {
            tracing::error!(bot = bot_id, error = %e, "webhook not stored; Meta will retry");
            status(StatusCode::INTERNAL_SERVER_ERROR, "not stored\n")
        }
    }
}
