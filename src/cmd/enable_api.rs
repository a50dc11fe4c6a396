//! `EnableApi` (extension; admin token only): turns an organization's API
//! access back on after `DisableApi`; its token works again and deliveries resume.
//!
//! # Format
//! `{"token":"<admin>","cmd":"EnableApi","orgID":"org_…"}` → `{"ok":1,"cmd":"EnableApi"}`
//!
//! # Errors
//! 1001 not the admin token; 1017 `orgID` missing or unknown.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::reply::Reply;

/// Re-enable an organization.
#[derive(Debug)]
pub struct EnableApi {
    org_id: String,
}

impl EnableApi {
    pub(crate) fn parse(f: &Fields) -> Result<EnableApi, ApiError> {
        Ok(EnableApi {
            org_id: f
                .req_str("orgID", ErrorCode::InvalidJson, ErrorCode::InvalidJson)?
                .to_string(),
        })
    }

    /// Clears `disabled` durably and wakes the deliveries.
    pub async fn apply(self, ctx: &Ctx) -> Result<Reply, ApiError> {
        ctx.store
            .write(&self.org_id, |tx| {
                let mut rec = tx.store().org(&self.org_id)?.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidJson,
                        format!("unknown orgID {:?}", self.org_id),
                    )
                })?;
                rec.disabled = false;
                tx.put_org(&rec);
                Ok::<_, ApiError>(())
            })
            .await?;
        ctx.deliveries.wake(&self.org_id);
        tracing::info!(org = %self.org_id, "API enabled");
        Ok(Reply::ok("EnableApi"))
    }
}
