//! `GetConversation` (reference, "Commands - Conversations"): a user's
//! messages, inbound and outbound, oldest first.
//!
//! # Format
//! `{"cmd":"GetConversation","uid":"3941-wa3-16505551234"}` →
//! `{"ok":1,"cmd":"GetConversation","data":[{"uid":"…","email":"…","name":"…","phone":"+16505551234","url":"","aid":0,"agent":"","agentemail":"","mid":"…","msg":"Does it come in another color?","typ":"text","sender":"client","dt":"2025-06-08T20:59:43.000Z","bot":"WA3"}]}`
//!
//! Rows carry the user's current `email`, `name`, `phone`, `url`; `aid`,
//! `agent`, `agentemail` name the agent of an agent's send (0 and empty
//! otherwise). A template send's `msg` is its body with the parameters
//! filled in. Media rows keep the caption in `msg` and add `mediaId`
//! (extension); every row names its conversation in `cid` (extension).
//! At most the last 1000 messages. Extension `details: true` adds each
//! outbound row's `ack` (as in `onMessage`) and, for a failed one, the
//! provider's `errorDesc`.
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::load_user;

/// Most rows returned (the reference limits GetConversationsFlat to 1000).
pub const MAX_ROWS: usize = 1000;

/// Read a user's conversation.
#[derive(Debug)]
pub struct GetConversation {
    uid: String,
    details: bool,
}

impl GetConversation {
    pub(crate) fn parse(f: &Fields) -> Result<GetConversation, ApiError> {
        Ok(GetConversation {
            uid: f.uid()?.to_string(),
            details: f.flag("details")?,
        })
    }

    /// Replies with the rows.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let user = load_user(ctx, org, &self.uid)?.user;
        let mut rows = Vec::new();
        for m in ctx.store.conversation(&org.id, &self.uid, MAX_ROWS)? {
            let agent = match &m.agent_email {
                Some(e) => ctx.store.agent(&org.id, e)?,
                None => None,
            };
            let mut row = crate::conversations::row(&user, &m, agent.as_ref());
            if self.details && m.sender != crate::model::Sender::Client {
                row["ack"] = m.ack.into();
                if let Some(desc) = &m.error_desc {
                    row["errorDesc"] = desc.clone().into();
                }
            }
            rows.push(row);
        }
        Ok(Reply::ok("GetConversation").with_data(rows))
    }
}
