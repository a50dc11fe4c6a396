//! `DeleteWebhook` (extension): stops deliveries to the webhook.
//!
//! # Format
//! `{"cmd":"DeleteWebhook"}` → `{"ok":1,"cmd":"DeleteWebhook","data":1}` (0 when none was set).
//! Deliveries still pending are kept and resume if a webhook is set again.

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// Remove the webhook.
#[derive(Debug)]
pub struct DeleteWebhook;

impl DeleteWebhook {
    /// Removes the webhook durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let existed = ctx
            .store
            .write(&org.id, |tx| {
                let existed = tx.store().webhook(&org.id)?.is_some();
                tx.delete_webhook();
                Ok::<_, ApiError>(existed)
            })
            .await?;
        ctx.deliveries.wake(&org.id);
        Ok(Reply::ok("DeleteWebhook").with_data(u8::from(existed)))
    }
}
