//! `GetAgents` (extension): the organization's agents.
//!
//! # Format
//! `{"cmd":"GetAgents"}` → `{"ok":1,"cmd":"GetAgents","data":[{"aid":1,"email":"…","name":"…","created":"…"}]}`

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// List agents.
#[derive(Debug)]
pub struct GetAgents;

impl GetAgents {
    /// Replies with every agent, by email.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        Ok(Reply::ok("GetAgents").with_data(ctx.store.agents(&org.id)?))
    }
}
