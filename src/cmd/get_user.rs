//! `GetUser` (reference, "GetUser"): one user by uid.
//!
//! # Format
//! `{"cmd":"GetUser","uid":"73-tel-615940546"}` → `{"ok":1,"cmd":"GetUser","data":{user}}`
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::unknown_user;

/// Fetch one user.
#[derive(Debug)]
pub struct GetUser {
    uid: String,
}

impl GetUser {
    pub(crate) fn parse(f: &Fields) -> Result<GetUser, ApiError> {
        Ok(GetUser {
            uid: f.uid()?.to_string(),
        })
    }

    /// Replies with the user object in `data`, passed on as stored.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let user = ctx
            .store
            .user_json(&org.id, &self.uid)?
            .ok_or_else(|| unknown_user(&self.uid))?;
        Ok(Reply::ok("GetUser").with_json_data(user))
    }
}
