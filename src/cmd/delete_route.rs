//! `DeleteRoute` (extension, routes): removes a route. Runs of it in
//! progress end at their next step (`onRouteEnd` failed, 1012).
//!
//! # Format
//! `{"cmd":"DeleteRoute","name":"welcome"}` → `{"ok":1,"cmd":"DeleteRoute"}`.
//!
//! # Errors
//! 1011 missing name, 1014 over 256 characters, 1012 no such route.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::routes::check_name;

/// Delete a route.
#[derive(Debug)]
pub struct DeleteRoute {
    name: String,
}

impl DeleteRoute {
    pub(crate) fn parse(f: &Fields) -> Result<DeleteRoute, ApiError> {
        Ok(DeleteRoute {
            name: check_name(f.opt_str("name", ErrorCode::MissingRoute)?)?,
        })
    }

    /// Removes the route durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                if tx.store().route(&org.id, &self.name)?.is_none() {
                    return Err(super::send_message::unknown_route(&self.name));
                }
                tx.delete_route(&self.name);
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("DeleteRoute"))
    }
}
