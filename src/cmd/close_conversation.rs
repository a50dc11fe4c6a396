//! `CloseConversation` (extension): closes the user's open conversation,
//! emitting the reference's `onUserConversation` with every row of it.
//!
//! # Format
//! `{"cmd":"CloseConversation","uid":"3941-wa3-16505551234","agentEmail":"ann@example.com"}` →
//! `{"ok":1,"cmd":"CloseConversation","data":{"cid":"…"}}`. `agentEmail`
//! (optional) names who closed it. A closed conversation never changes;
//! the user's next message opens a new one.
//!
//! # Errors
//! 1025 missing uid, 2002 unknown agent, 1005 no open conversation.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use serde_json::json;

/// Close a conversation.
#[derive(Debug)]
pub struct CloseConversation {
    uid: String,
    agent_email: Option<String>,
}

impl CloseConversation {
    pub(crate) fn parse(f: &Fields) -> Result<CloseConversation, ApiError> {
        Ok(CloseConversation {
            uid: f.uid()?.to_string(),
            agent_email: f
                .opt_str("agentEmail", ErrorCode::UnknownAgent)?
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        })
    }

    /// Closes durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let agent = super::fields::agent_of(ctx, org, self.agent_email.as_deref())?;
        let cid = ctx
            .store
            .write(&org.id, |tx| {
                tx.track_users();
                let c = tx
                    .store()
                    .open_conversation(&org.id, &self.uid)?
                    .ok_or_else(|| crate::conversations::no_open(&self.uid))?;
                crate::conversations::close(
                    tx,
                    &org.id,
                    &c,
                    agent.as_ref().map(|a| a.email.as_str()),
                )?;
                Ok::<_, ApiError>(c.cid)
            })
            .await?;
        Ok(Reply::ok("CloseConversation").with_data(json!({"cid": cid})))
    }
}
