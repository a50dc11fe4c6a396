//! `GetUserTags` (reference, "GetUserTags").
//!
//! # Format
//! `{"cmd":"GetUserTags","uid":…}` → `{"ok":1,"cmd":"GetUserTags","data":["customer","vip"]}`
//! (tag names as created, in the order they were set).
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::load_user;

/// List a user's tags.
#[derive(Debug)]
pub struct GetUserTags {
    uid: String,
}

impl GetUserTags {
    pub(crate) fn parse(f: &Fields) -> Result<GetUserTags, ApiError> {
        Ok(GetUserTags {
            uid: f.uid()?.to_string(),
        })
    }

    /// Replies with the tag names in `data`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let rec = load_user(ctx, org, &self.uid)?;
        Ok(Reply::ok("GetUserTags").with_data(rec.tags))
    }
}
