//! `GetUserData` (extension): the custom data `SetUserData` stored.
//!
//! # Format
//! `{"cmd":"GetUserData","uid":…}` → `{"ok":1,"cmd":"GetUserData","uid":…,"data":{…}}`
//! (`data` is `{}` when nothing was set).
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::load_user;
use serde_json::json;

/// Read custom user data.
#[derive(Debug)]
pub struct GetUserData {
    uid: String,
}

impl GetUserData {
    pub(crate) fn parse(f: &Fields) -> Result<GetUserData, ApiError> {
        Ok(GetUserData {
            uid: f.uid()?.to_string(),
        })
    }

    /// Replies with the stored object.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        load_user(ctx, org, &self.uid)?;
        let data = ctx
            .store
            .user_data(&org.id, &self.uid)?
            .unwrap_or(json!({}));
        Ok(Reply::ok("GetUserData").with_uid(self.uid).with_data(data))
    }
}
