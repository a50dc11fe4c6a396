//! `SetUserEmail` (reference, "SetUserEmail").
//!
//! # Format
//! `{"cmd":"SetUserEmail","uid":…,"email":"john@example.com"}` → `{"ok":1,"cmd":"SetUserEmail"}`;
//! emits `onUserUpdate` when the email changed.
//!
//! # Errors
//! 1025 missing uid, 1024 email missing or invalid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::Email;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::update_user;

/// Set a user's email.
#[derive(Debug)]
pub struct SetUserEmail {
    uid: String,
    email: Email,
}

impl SetUserEmail {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserEmail, ApiError> {
        let uid = f.uid()?.to_string();
        let email = f
            .opt_str("email", ErrorCode::InvalidEmail)?
            .unwrap_or_default();
        Ok(SetUserEmail {
            uid,
            email: Email::parse(email)?,
        })
    }

    /// Updates the user durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        update_user(ctx, org, &self.uid, |u| {
            u.email = self.email.as_str().to_string()
        })
        .await?;
        Ok(Reply::ok("SetUserEmail"))
    }
}
