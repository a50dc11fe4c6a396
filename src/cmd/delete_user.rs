//! `DeleteUser` (extension): removes a user, its tags and its custom data.
//!
//! # Format
//! `{"cmd":"DeleteUser","uid":…}` → `{"ok":1,"cmd":"DeleteUser","uid":…}`;
//! emits `onUserDelete`.
//!
//! # Errors
//! 1025 missing uid, 1005 unknown user.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::events::on_user_delete;
use crate::model::Org;
use crate::reply::Reply;
use crate::users::unknown_user;

/// Delete a user.
#[derive(Debug)]
pub struct DeleteUser {
    uid: String,
}

impl DeleteUser {
    pub(crate) fn parse(f: &Fields) -> Result<DeleteUser, ApiError> {
        Ok(DeleteUser {
            uid: f.uid()?.to_string(),
        })
    }

    /// Deletes durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                if tx.store().user(&org.id, &self.uid)?.is_none() {
                    return Err(unknown_user(&self.uid));
                }
                tx.delete_user(&self.uid);
                tx.emit(on_user_delete(&self.uid))?;
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("DeleteUser").with_uid(self.uid))
    }
}
