//! `DeleteUserTag` (reference, "DeleteUserTag"): removes a tag from a user.
//!
//! # Format
//! `{"cmd":"DeleteUserTag","uid":…,"tag":"Customer"}` → `{"ok":1,"cmd":"DeleteUserTag"}`.
//! Removing a tag the user does not have is a no-op.
//!
//! # Errors
//! 1025 missing uid, 3050 tag format, 3053 tag does not exist, 1005 unknown user.

use super::set_user_tag::{parse_uid_tag, unknown_tag};
use super::Fields;
use crate::ctx::Ctx;
use crate::domain::TagName;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::unknown_user;

/// Untag a user.
#[derive(Debug)]
pub struct DeleteUserTag {
    uid: String,
    tag: TagName,
}

impl DeleteUserTag {
    pub(crate) fn parse(f: &Fields) -> Result<DeleteUserTag, ApiError> {
        let (uid, tag) = parse_uid_tag(f)?;
        Ok(DeleteUserTag { uid, tag })
    }

    /// Removes the tag durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                if tx.store().tag(&org.id, &self.tag.key())?.is_none() {
                    return Err(unknown_tag(&self.tag));
                }
                let mut rec = tx
                    .store()
                    .user(&org.id, &self.uid)?
                    .ok_or_else(|| unknown_user(&self.uid))?;
                let before = rec.tags.len();
                rec.tags.retain(|t| t.to_lowercase() != self.tag.key());
                if rec.tags.len() != before {
                    tx.put_user(&rec);
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("DeleteUserTag"))
    }
}
