//! `GetOpenConversations` (reference, "Commands - Conversations"): the
//! conversations open now.
//!
//! # Format
//! `{"cmd":"GetOpenConversations"}` →
//! `{"ok":1,"cmd":"GetOpenConversations","data":[{"id":"…","uid":"3941-wa3-16505551234","aid":1,"agent":"Ann Agent","bid":3941,"sdt":"2026-11-22T08:24:31.909Z","aco":2,"uco":3}]}`
//! (`aid` 0 and `agent` "" when unassigned). Extension filters:
//! `agentEmail` (only that agent's), `botID`.
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
}

impl GetOpenConversations {
    pub(crate) fn parse(f: &Fields) -> Result<GetOpenConversations, ApiError> {
        Ok(GetOpenConversations {
            agent_email: f
                .opt_str("agentEmail", ErrorCode::UnknownAgent)?
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            bot_id: f.opt_u64("botID", ErrorCode::InvalidJson)?,
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
        let data: Vec<_> = ctx
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
                open_view(c, agent)
            })
            .collect();
        Ok(Reply::ok("GetOpenConversations").with_data(data))
    }
}
