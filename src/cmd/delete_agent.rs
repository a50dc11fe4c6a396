//! `DeleteAgent` (extension): removes an agent; the open conversations
//! assigned to it become unassigned (`onConversationUpdate`); its console
//! sessions end (sockets closed with 1008).
//!
//! # Format
//! `{"cmd":"DeleteAgent","email":"ann@example.com"}` →
//! `{"ok":1,"cmd":"DeleteAgent","data":{"unassigned":2}}`.
//!
//! # Errors
//! 1024 missing email, 2002 no such agent.

use super::Fields;
use crate::conversations::Staged;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use serde_json::json;

/// Remove an agent.
#[derive(Debug)]
pub struct DeleteAgent {
    email: String,
}

impl DeleteAgent {
    pub(crate) fn parse(f: &Fields) -> Result<DeleteAgent, ApiError> {
        Ok(DeleteAgent {
            email: f
                .req_str("email", ErrorCode::InvalidEmail, ErrorCode::InvalidEmail)?
                .trim()
                .to_string(),
        })
    }

    /// Deletes durably, unassigning its conversations in the same write.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let agent = super::fields::agent_of(ctx, org, Some(&self.email))?.expect("named");
        let unassigned = ctx
            .store
            .write(&org.id, |tx| {
                tx.track_users();
                let mut staged = Staged::default();
                let mine = tx.store().open_conversations(&org.id, |c| {
                    c.agent
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(&agent.email))
                })?;
                for c in &mine {
                    staged.assign(tx, &org.id, &c.uid, None)?;
                }
                tx.delete_agent(&agent.email);
                Ok::<_, ApiError>(mine.len())
            })
            .await?;
        crate::console::end_sessions(ctx, &org.id, &agent.email);
        Ok(Reply::ok("DeleteAgent").with_data(json!({"unassigned": unassigned})))
    }
}
