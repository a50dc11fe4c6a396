//! `AssignConversation` (extension): hands the user's open conversation to
//! an agent, or unassigns it.
//!
//! # Format
//! `{"cmd":"AssignConversation","uid":"3941-wa3-16505551234","agentEmail":"bob@example.com"}` →
//! `{"ok":1,"cmd":"AssignConversation","data":{…GetOpenConversations object…}}`.
//! An empty `agentEmail` unassigns. A change from one agent to another adds
//! a `transfer` row (`sender` system); `onConversationUpdate` follows.
//!
//! # Errors
//! 1025 missing uid, 2002 unknown agent, 1005 no open conversation.

use super::Fields;
use crate::conversations::{open_view, Staged};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// Assign or unassign a conversation.
#[derive(Debug)]
pub struct AssignConversation {
    uid: String,
    agent_email: Option<String>,
}

impl AssignConversation {
    pub(crate) fn parse(f: &Fields) -> Result<AssignConversation, ApiError> {
        Ok(AssignConversation {
            uid: f.uid()?.to_string(),
            agent_email: f
                .opt_str("agentEmail", ErrorCode::UnknownAgent)?
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        })
    }

    /// Assigns durably and replies with the conversation.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let agent = super::fields::agent_of(ctx, org, self.agent_email.as_deref())?;
        let c = ctx
            .store
            .write(&org.id, |tx| {
                tx.track_users();
                Staged::default().assign(tx, &org.id, &self.uid, agent.as_ref())
            })
            .await?;
        Ok(Reply::ok("AssignConversation").with_data(open_view(&c, agent.as_ref())))
    }
}
