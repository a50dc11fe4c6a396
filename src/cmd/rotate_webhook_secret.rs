//! `RotateWebhookSecret` (extension): a new signing secret. The previous one
//! keeps signing alongside it for `webhook_secret_overlap` seconds, so every
//! delivery in that window carries two signatures (Standard Webhooks
//! multi-signature header) and receivers can switch without a gap.
//!
//! # Format
//! `{"cmd":"RotateWebhookSecret"}` →
//! `{"ok":1,"cmd":"RotateWebhookSecret","data":{"url":…,"enabled":…,"created":…,"secret":"whsec_…","previousSecretExpires":"…"}}`
//!
//! # Errors
//! 1017 no webhook is set.

use super::set_webhook::webhook_view;
use crate::ctx::Ctx;
use crate::delivery::webhooks::new_secret;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Org, SigningSecret};
use crate::reply::Reply;
use crate::time::now_ms;
use serde_json::json;

/// Rotate the webhook secret.
#[derive(Debug)]
pub struct RotateWebhookSecret;

impl RotateWebhookSecret {
    /// Stores the new secret durably.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let secret = new_secret();
        let now = now_ms();
        let expires = now + (ctx.config.webhook_secret_overlap * 1000.0) as i64;
        let hook =
            ctx.store
                .write(&org.id, |tx| {
                    let mut hook = tx.store().webhook(&org.id)?.ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidJson, "no webhook is set")
                    })?;
                    hook.secrets
                        .retain(|s| s.expires_ms.is_none_or(|t| t > now));
                    for s in &mut hook.secrets {
                        s.expires_ms = Some(s.expires_ms.map_or(expires, |t| t.min(expires)));
                    }
                    hook.secrets.insert(
                        0,
                        SigningSecret {
                            secret: secret.clone(),
                            expires_ms: None,
                        },
                    );
                    tx.put_webhook(&hook);
                    Ok::<_, ApiError>(hook)
                })
                .await?;
        ctx.deliveries.wake(&org.id);
        let mut view = webhook_view(&hook, Some(&secret));
        view["previousSecretExpires"] = json!(crate::time::iso_millis(
            chrono::DateTime::from_timestamp_millis(expires).unwrap_or_default()
        ));
        Ok(Reply::ok("RotateWebhookSecret").with_data(view))
    }
}
