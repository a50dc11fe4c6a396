//! `GetWebhook` (extension): the organization's webhook, without secrets.
//!
//! # Format
//! `{"cmd":"GetWebhook"}` → `{"ok":1,"cmd":"GetWebhook","data":{"url":…,"enabled":true,"created":…}}`,
//! or `"data":null` when none is set. `disabledReason` appears after a 410.

use super::set_webhook::webhook_view;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use serde_json::Value;

/// Read the webhook.
#[derive(Debug)]
pub struct GetWebhook;

impl GetWebhook {
    /// Replies with the webhook, or `null`.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let view = ctx
            .store
            .webhook(&org.id)?
            .map_or(Value::Null, |h| webhook_view(&h, None));
        Ok(Reply::ok("GetWebhook").with_data(view))
    }
}
