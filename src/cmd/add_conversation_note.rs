//! `AddConversationNote` (extension): an agent's note in the user's open
//! conversation — a `note` row, never sent to the user.
//!
//! # Format
//! `{"cmd":"AddConversationNote","uid":"3941-wa3-16505551234","agentEmail":"ann@example.com","note":"Refund approved"}` →
//! `{"ok":1,"cmd":"AddConversationNote","mid":"…"}`.
//!
//! # Errors
//! 1025 missing uid, 2002 missing or unknown agent, 1023 missing note or
//! over 1024 characters, 1005 no open conversation.

use super::Fields;
use crate::conversations::{Staged, MAX_NOTE_CHARS};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// Add a note.
#[derive(Debug)]
pub struct AddConversationNote {
    uid: String,
    agent_email: String,
    note: String,
}

impl AddConversationNote {
    pub(crate) fn parse(f: &Fields) -> Result<AddConversationNote, ApiError> {
        let uid = f.uid()?.to_string();
        let agent_email = f
            .req_str(
                "agentEmail",
                ErrorCode::UnknownAgent,
                ErrorCode::UnknownAgent,
            )?
            .trim()
            .to_string();
        let note = f.req_str("note", ErrorCode::InvalidNotes, ErrorCode::InvalidNotes)?;
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::new(
                ErrorCode::InvalidNotes,
                "invalid note format: at most 1024 characters",
            ));
        }
        Ok(AddConversationNote {
            uid,
            agent_email,
            note: note.to_string(),
        })
    }

    /// Stores the note durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let agent = super::fields::agent_of(ctx, org, Some(&self.agent_email))?.expect("named");
        let m = ctx
            .store
            .write(&org.id, |tx| {
                tx.track_users();
                Staged::default().note(tx, &org.id, &self.uid, &agent, &self.note)
            })
            .await?;
        Ok(Reply::ok("AddConversationNote").with_field("mid", m.mid))
    }
}
