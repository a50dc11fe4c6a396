//! `GetRoutes` (extension, routes): every route of the organization.
//!
//! # Format
//! `{"cmd":"GetRoutes"}` → `{"ok":1,"cmd":"GetRoutes","data":[{"name":…,"botID":…,"steps":[…],"updated":…}]}`,
//! by name.

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// List routes.
#[derive(Debug)]
pub struct GetRoutes;

impl GetRoutes {
    /// Replies with every route.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        Ok(Reply::ok("GetRoutes").with_data(ctx.store.routes(&org.id)?))
    }
}
