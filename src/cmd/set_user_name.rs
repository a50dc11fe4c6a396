//! `SetUserName` (reference, "SetUserName"): sets `name` and splits it into
//! `first_name` (first word) and `last_name` (the rest).
//!
//! # Format
//! `{"cmd":"SetUserName","uid":…,"name":"John Doe"}` → `{"ok":1,"cmd":"SetUserName"}`;
//! emits `onUserUpdate` when the name changed.
//!
//! # Errors
//! 1025 missing uid, 1022 name missing or not 3–50 characters, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::UserName;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::update_user;

/// Rename a user.
#[derive(Debug)]
pub struct SetUserName {
    uid: String,
    name: UserName,
}

impl SetUserName {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserName, ApiError> {
        let uid = f.uid()?.to_string();
        let name = f
            .opt_str("name", ErrorCode::InvalidName)?
            .unwrap_or_default();
        Ok(SetUserName {
            uid,
            name: UserName::parse(name)?,
        })
    }

    /// Updates the user durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let (first, last) = self.name.split();
        update_user(ctx, org, &self.uid, |u| {
            u.name = self.name.as_str().to_string();
            u.first_name = first;
            u.last_name = last;
        })
        .await?;
        Ok(Reply::ok("SetUserName"))
    }
}
