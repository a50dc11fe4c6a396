//! The provider-facing transport: `GET` and `POST /channels/{kind}/{botID}`,
//! the URL given to each provider (e.g. the callback URL of a Meta app's
//! WhatsApp webhook, `/channels/whatsapp/{botID}`). One route for every
//! kind: the bot's channel, from the registry, does what is specific.
//!
//! - `GET`: the channel's subscription handshake ([`Channel::handshake`]).
//! - `POST`: the body is read (413 over `max_body_bytes`), the channel
//!   verifies its signature before anything is parsed (401/403), parses it
//!   into neutral events (400 when unreadable), and they are applied in one
//!   durable write ([`crate::messages::apply_inbound`]), answered 2xx only
//!   after the write, so that a crash makes the provider redeliver rather
//!   than lose it (500 when the write fails). Callbacks and events go out
//!   afterwards from their outboxes, never inside the request.
//!
//! Errors: 404 an unknown bot, a bot of another kind than the path says, or
//! a kind without a channel.

use super::AppState;
use crate::channel::{Channel, HttpReply, InboundRequest};
use crate::model::Bot;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// The bot of `bot_id`, its organization and its channel, when the path's
/// `kind` is the bot's.
fn find(app: &AppState, kind: &str, bot_id: u64) -> Option<(String, Bot, Arc<dyn Channel>)> {
    let ctx = &app.ctx;
    let (org, bot) = ctx.store.bot_by_id(bot_id).ok().flatten()?;
    if bot.kind.as_str() != kind {
        return None;
    }
    let channel = ctx.channels.get(bot.kind)?.clone();
    Some((org, bot, channel))
}

fn reply(r: HttpReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response()
}

fn status(code: u16, text: &'static str) -> Response {
    reply(HttpReply::text(code, text))
}

/// `GET /channels/{kind}/{botID}`: the channel's handshake.
pub async fn handshake(
    State(app): State<AppState>,
    Path((kind, bot_id)): Path<(String, u64)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((_, bot, channel)) = find(&app, &kind, bot_id) else {
        return status(404, "unknown bot\n");
    };
    let Ok(settings) = app.ctx.settings(&bot) else {
        return status(500, "bot settings unavailable\n");
    };
    reply(channel.handshake(&settings, &q))
}

/// `POST /channels/{kind}/{botID}`: messages and statuses from a provider.
pub async fn notify(
    State(app): State<AppState>,
    Path((kind, bot_id)): Path<(String, u64)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = &app.ctx;
    let Some((org, bot, channel)) = find(&app, &kind, bot_id) else {
        return status(404, "unknown bot\n");
    };
    let bytes = match axum::body::to_bytes(body, ctx.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return status(413, "body too large\n"),
    };
    let Ok(settings) = ctx.settings(&bot) else {
        return status(500, "bot settings unavailable\n");
    };
    let req = InboundRequest {
        uri: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        headers: &headers,
        body: &bytes,
    };
    if let Err(r) = channel.verify(&settings, &req) {
        tracing::debug!(bot = bot_id, status = r.status, "provider webhook refused");
        return reply(r);
    }
    let events = match channel.parse(&bytes) {
        // Acknowledged so that the provider does not retry what we will never read.
        Ok(events) if events.is_empty() => return reply(channel.accepted()),
        Ok(events) => events,
        Err(r) => return reply(r),
    };
    let apply = crate::messages::apply_inbound(ctx, &org, &bot, &*channel, &events);
    match crate::model::ACTOR
        .scope(crate::model::Actor::channel(bot_id), apply)
        .await
    {
        Ok(a) => {
            tracing::debug!(bot = bot_id, ?a, "provider webhook applied");
            // Waiting route runs resume in the background: the provider's
            // answer does not wait for them.
            if !a.replies.is_empty() {
                let (c, org) = (ctx.clone(), org.clone());
                ctx.tasks.spawn(async move {
                    crate::cmd::route_run::on_replies(&c, &org, &a.replies).await
                });
            }
            reply(channel.accepted())
        }
        Err(e) => {
            tracing::error!(bot = bot_id, error = %e, "provider webhook not stored; the provider will retry");
            status(500, "not stored\n")
        }
    }
}
