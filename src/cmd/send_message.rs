//! `SendMessage` (reference, "SendMessage": "send a message with
//! server-side routing logic; routes are configured on the server"):
//! finds or creates the user of `phone` on the route's bot, merges
//! `userdata` into their data, and starts the route for them
//! ([`super::route_run`]).
//!
//! # Format
//! `{"cmd":"SendMessage","phone":"44-792-202-1411","route":"welcome","message":"Welcome to our service!","userdata":{"plan":"pro"}}`
//! → `{"ok":1,"cmd":"SendMessage","mid":"5fd89d8f15cf735bd7aaaee0","uid":"3941-wa3-447922021411","runId":"run_…"}`.
//!
//! `mid` is the first message the run sends: the reply waits until the
//! run sends, waits for a reply or ends, at most the provider's timeout
//! (`provider_timeout` plus its retries); `mid` is absent when the route
//! sent nothing by then. `message` is `{{message}}` in the route's texts.
//! Starting a route a user is already running replaces that run.
//!
//! # Errors
//! 1009/1006/1007 phone, 1011 missing route, 1014 route over 256
//! characters, 1012 unknown route, 1013 message over 2000 characters, 1017
//! `userdata` not an object, 1016 a route on a bot without phone numbers
//! (Telegram: start it with `SetUserData`), 2001 the user is chatting to an agent
//! (nothing runs), and the error of the route's first send when it fails
//! before sending anything (e.g. 2006).

use super::route_run::{self, call};
use super::Fields;
use crate::ctx::Ctx;
use crate::domain::E164;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::routes::check_name;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// 1012: no route named `name`.
pub fn unknown_route(name: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownRoute, format!("unknown route {name:?}"))
}

/// Start a route for a phone number.
#[derive(Debug)]
pub struct SendMessage {
    phone: E164,
    route: String,
    message: String,
    userdata: Option<Map<String, Value>>,
}

impl SendMessage {
    pub(crate) fn parse(f: &Fields) -> Result<SendMessage, ApiError> {
        let phone = E164::parse(
            f.opt_str("phone", ErrorCode::InvalidPhone)?
                .unwrap_or_default(),
        )?;
        let route = check_name(f.opt_str("route", ErrorCode::MissingRoute)?)?;
        let message = f
            .opt_str("message", ErrorCode::MissingMessage)?
            .unwrap_or_default();
        if message.chars().count() > 2000 {
            return Err(ApiError::new(
                ErrorCode::MessageTooLong,
                "message max characters reached (2000)",
            ));
        }
        let userdata = match f.checked_value("userdata") {
            None | Some(Ok(Value::Null)) => None,
            Some(Ok(Value::Object(m))) => Some(m),
            Some(Err(why)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("userdata: {why}"),
                ))
            }
            Some(Ok(_)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "userdata must be a JSON object",
                ))
            }
        };
        Ok(SendMessage {
            phone,
            route,
            message: message.to_string(),
            userdata,
        })
    }

    /// Starts the route and waits for its first send.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let route = ctx
            .store
            .route(&org.id, &self.route)?
            .ok_or_else(|| unknown_route(&self.route))?;
        let me = Arc::new(org.clone());
        let upsert =
            json!({"cmd": "UpsertUser", "botID": route.bot_id, "phone": self.phone.as_str()});
        let reply = call(ctx, &me, upsert).await?;
        let uid = reply
            .uid()
            .or_else(|| reply.field("uid").and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(ApiError::internal)?;
        if let Some(data) = self.userdata {
            call(
                ctx,
                &me,
                json!({"cmd": "SetUserData", "uid": uid, "data": data}),
            )
            .await?;
        }
        if let Some(c) = ctx.store.open_conversation(&org.id, &uid)? {
            if c.agent.is_some() {
                return Err(ApiError::new(
                    ErrorCode::ChattingToAgent,
                    "user is chatting to an agent, message cannot be sent",
                ));
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = route_run::start(ctx, &org.id, &uid, &route, &self.message, Some(tx)).await?;
        let bound = ctx.config.provider_timeout
            + ctx.config.provider_retry_schedule.iter().sum::<f64>()
            + 1.0;
        let first = tokio::time::timeout(Duration::from_secs_f64(bound), rx).await;
        let mut reply = Reply::ok("SendMessage")
            .with_field("uid", uid)
            .with_field("runId", run.run_id);
        match first {
            Ok(Ok(Ok(Some(mid)))) => reply = reply.with_field("mid", mid),
            Ok(Ok(Err(e))) => return Err(e),
            _ => {}
        }
        Ok(reply)
    }
}
