//! `DisableApi` (extension; the reference's "Disable API"): stops the
//! organization's token, closes its sockets (1008 "API disabled") and pauses
//! its webhook deliveries. Only the admin's `EnableApi` turns it back on.
//!
//! # Format
//! `{"cmd":"DisableApi"}` → `{"ok":1,"cmd":"DisableApi"}`

use crate::bus::Kick;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// Disable the organization's API access.
#[derive(Debug)]
pub struct DisableApi;

impl DisableApi {
    /// Marks the organization disabled durably, then closes its sockets.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                let mut rec = tx.store().org(&org.id)?.ok_or_else(ApiError::internal)?;
                rec.disabled = true;
                tx.put_org(&rec);
                Ok::<_, ApiError>(())
            })
            .await?;
        ctx.bus.kick_org(&org.id, Kick::Disabled);
        tracing::info!(org = %org.id, "API disabled");
        Ok(Reply::ok("DisableApi"))
    }
}
