//! `SetUserNotes` (reference, "SetUserNotes").
//!
//! # Format
//! `{"cmd":"SetUserNotes","uid":…,"notes":"VIP customer."}` → `{"ok":1,"cmd":"SetUserNotes"}`;
//! emits `onUserUpdate` when the notes changed. An empty string clears them.
//!
//! # Errors
//! 1025 missing uid, 1023 notes missing, not a string or over 1024
//! characters, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::parse_notes;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::update_user;

/// Set a user's notes.
#[derive(Debug)]
pub struct SetUserNotes {
    uid: String,
    notes: String,
}

impl SetUserNotes {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserNotes, ApiError> {
        let uid = f.uid()?.to_string();
        let notes = f
            .opt_str("notes", ErrorCode::InvalidNotes)?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidNotes, "missing notes"))?;
        Ok(SetUserNotes {
            uid,
            notes: parse_notes(notes)?,
        })
    }

    /// Updates the user durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        update_user(ctx, org, &self.uid, |u| u.notes = self.notes).await?;
        Ok(Reply::ok("SetUserNotes"))
    }
}
