//! `GetOpenConversations` (reference, "Commands - Conversations"): the
//! conversations open now.
//!
//! # Format
//! `{"cmd":"GetOpenConversations"}` →
//! `{"ok":1,"cmd":"GetOpenConversations","data":[{"id":"…","uid":"3941-wa3-16505551234","aid":1,"agent":"Ann Agent","bid":3941,"sdt":"2026-11-22T08:24:31.909Z","aco":2,"uco":3}]}`
//! (`aid` 0 and `agent` "" when unassigned). Extension filters:
//! `agentEmail` (only that agent's), `botID`. Extension `details: true`
//! adds to each object `user` (`{name, phone, bot}`), `last` (the last
//! message, `{msg, typ, sender, dt}`, or `null`) and `ldt` (ISO time of
//! the last message): what an inbox shows, in one request.
//!
//! # Errors
//! 2002 unknown `agentEmail`, 1015 `botID` not an integer.

use super::Fields;
use crate::conversations::open_view;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// List open conversations.
#[derive(Debug)]
pub struct GetOpenConversations {
    agent_email: Option<String>,
    bot_id: Option<u64>,
    details: bool,
}

impl GetOpenConversations {
    pub(crate) fn parse(f: &Fields) -> Result<GetOpenConversations, ApiError> {
        Ok(GetOpenConversations {
            agent_email: f
                .opt_str("agentEmail", ErrorCode::UnknownAgent)?
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            bot_id: f.opt_u64("botID", ErrorCode::InvalidJson)?,
            details: f.flag("details")?,
        })
    }

    /// Replies with every open conversation that passes the filters, by uid.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let only = match &self.agent_email {
            Some(e) => Some(
                super::fields::agent_of(ctx, org, Some(e))?
                    .expect("named")
                    .email,
            ),
            None => None,
        };
        let agents = ctx.store.agents(&org.id)?;
        let data: Vec<serde_json::Value> = ctx
            .store
            .open_conversations(&org.id, |c| {
                self.bot_id.is_none_or(|b| c.bot_id == b)
                    && only.as_ref().is_none_or(|e| {
                        c.agent
                            .as_deref()
                            .is_some_and(|a| a.eq_ignore_ascii_case(e))
                    })
            })?
            .iter()
            .map(|c| {
                let agent = c
                    .agent
                    .as_ref()
                    .and_then(|e| agents.iter().find(|a| a.email.eq_ignore_ascii_case(e)));
                let mut v = open_view(c, agent);
                if self.details {
                    details(ctx, org, c, &mut v)?;
                }
                Ok(v)
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Reply::ok("GetOpenConversations").with_data(data))
    }
}

/// Adds the `details` extension fields to `v`, the view of `c`.
fn details(
    ctx: &Ctx,
    org: &Org,
    c: &crate::model::Conversation,
    v: &mut serde_json::Value,
) -> Result<(), ApiError> {
    use serde_json::json;
    let user = ctx.store.user(&org.id, &c.uid)?;
    v["user"] = user.map_or(
        serde_json::Value::Null,
        |r| json!({"name": r.user.name, "phone": r.user.phone, "bot": r.user.bot}),
    );
    let last = ctx.store.conversation(&org.id, &c.uid, 1)?;
    v["last"] = last.first().map_or(
        serde_json::Value::Null,
        |m| json!({"msg": m.msg, "typ": m.typ, "sender": m.sender, "dt": m.dt}),
    );
    v["ldt"] = crate::time::iso_of_ms(c.last_ms).into();
    Ok(())
}
