//! `SetUserPhone` (reference, "SetUserPhone"): stores the number in E.164.
//!
//! # Format
//! `{"cmd":"SetUserPhone","uid":…,"phone":"+441511234567"}` → `{"ok":1,"cmd":"SetUserPhone"}`;
//! emits `onUserUpdate` when the phone changed. Every format of the
//! reference's "Phone Number Formats" is accepted. The uid does not change.
//!
//! # Errors
//! 1025 missing uid, 1009 missing phone, 1007 invalid length, 1006 invalid
//! number, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::E164;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::update_user;

/// Set a user's phone number.
#[derive(Debug)]
pub struct SetUserPhone {
    uid: String,
    phone: E164,
}

impl SetUserPhone {
    pub(crate) fn parse(f: &Fields) -> Result<SetUserPhone, ApiError> {
        let uid = f.uid()?.to_string();
        let phone = f
            .opt_str("phone", ErrorCode::InvalidPhone)?
            .unwrap_or_default();
        Ok(SetUserPhone {
            uid,
            phone: E164::parse(phone)?,
        })
    }

    /// Updates the user durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        update_user(ctx, org, &self.uid, |u| {
            u.phone = self.phone.as_str().to_string()
        })
        .await?;
        Ok(Reply::ok("SetUserPhone"))
    }
}
