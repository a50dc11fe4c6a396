//! `GetUser` (reference, "GetUser"): one user by uid.
//!
//! # Format
//! `{"cmd":"GetUser","uid":"73-tel-615940546"}` → `{"ok":1,"cmd":"GetUser","data":{user}}`
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::{load_user, Fields};
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::Ctx;

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

    /// Replies with the user object in `data`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let rec = load_user(ctx, org, &self.uid)?;
        Ok(Reply::ok("GetUser").with_data(rec.user))
    }
}
