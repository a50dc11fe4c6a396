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
        let counts = ctx.store.open_counts_by_agent(&org.id)?;
        let data: Vec<_> = ctx
            .store
            .agents(&org.id)?
            .into_iter()
            .map(|a| {
                let n = counts.get(&a.email.to_lowercase()).copied().unwrap_or(0);
                let mut v = serde_json::to_value(&a).expect("agents serialise");
                v["openConversations"] = n.into();
                v
            })
            .collect();
        Ok(Reply::ok("GetAgents").with_data(data))
    }
}
