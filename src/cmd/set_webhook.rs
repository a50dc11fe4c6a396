//! `SetWebhook` (extension; the reference's "Configure Webhook"): where every
//! event of the organization is POSTed, signed per Standard Webhooks.
//!
//! # Format
//! `{"cmd":"SetWebhook","url":"https://crm.example.com/convrs","secret":"whsec_…"}` →
//! `{"ok":1,"cmd":"SetWebhook","data":{"url":…,"enabled":true,"created":…,"secret":"whsec_…"}}`.
//! Without `secret`, one is generated (`whsec_` + base64 of 32 random bytes).
//! Extension `events`: opt-in extension events to receive besides the
//! reference's (`["onMessage","onConversationUpdate"]`); a webhook without
//! it receives exactly the reference's events, as today.
//! A first webhook receives the events that happen from now on; setting it
//! again (a new URL, or after a 410 disabled it) keeps its place in the log
//! and re-enables it.
//!
//! # Errors
//! 1017 `url` missing, not `https://` (or `http://` when
//! `allow_private_webhooks`), or a private address; `secret` not `whsec_` +
//! base64 of at least 24 bytes; `events` not a list of opt-in event names.

use super::Fields;
use crate::config::Secret;
use crate::ctx::Ctx;
use crate::delivery::webhooks::{check_secret, new_secret, new_webhook};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Org, SigningSecret, Webhook};
use crate::net::check_url;
use crate::reply::Reply;
use serde_json::{json, Value};

/// Set the organization's webhook.
#[derive(Debug)]
pub struct SetWebhook {
    url: String,
    secret: Option<Secret>,
    events: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidJson, msg)
}

/// The webhook as replies show it; the secret only where given.
pub(super) fn webhook_view(hook: &Webhook, secret: Option<&Secret>) -> Value {
    let mut v = json!({"url": hook.url, "enabled": hook.enabled, "created": hook.created});
    if !hook.events.is_empty() {
        v["events"] = json!(hook.events);
    }
    if let Some(reason) = &hook.disabled_reason {
        v["disabledReason"] = json!(reason);
    }
    if let Some(s) = secret {
        v["secret"] = json!(s.expose());
    }
    v
}

impl SetWebhook {
    pub(crate) fn parse(f: &Fields) -> Result<SetWebhook, ApiError> {
        let url = f.req_str("url", ErrorCode::InvalidJson, ErrorCode::InvalidJson)?;
        let secret = f.opt_str("secret", ErrorCode::InvalidJson)?;
        if let Some(s) = secret {
            check_secret(s).map_err(invalid)?;
        }
        Ok(SetWebhook {
            url: url.trim().to_string(),
            secret: secret.map(Secret::new),
            events: super::fields::opt_in_events(f)?,
        })
    }

    /// Stores the webhook durably and wakes its delivery worker.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        check_url(&self.url, ctx.config.allow_private_webhooks).map_err(invalid)?;
        let secret = self.secret.unwrap_or_else(new_secret);
        let hook = ctx
            .store
            .write(&org.id, |tx| {
                let hook = match tx.store().webhook(&org.id)? {
                    Some(mut old) => {
                        old.url = self.url.clone();
                        // The given (or new) secret becomes the current one;
                        // rotated-out secrets keep their overlap.
                        old.secrets.retain(|s| s.expires_ms.is_some());
                        old.secrets.insert(
                            0,
                            SigningSecret {
                                secret: secret.clone(),
                                expires_ms: None,
                            },
                        );
                        old.enabled = true;
                        old.disabled_reason = None;
                        old.events = self.events.clone();
                        old
                    }
                    None => {
                        let last = tx.store().last_seq(&org.id)?;
                        tx.set_delivery_cursor(last);
                        let mut hook = new_webhook(self.url.clone(), secret.clone());
                        hook.events = self.events.clone();
                        hook
                    }
                };
                tx.put_webhook(&hook);
                Ok::<_, ApiError>(hook)
            })
            .await?;
        ctx.deliveries.wake(&org.id);
        Ok(Reply::ok("SetWebhook").with_data(webhook_view(&hook, Some(&secret))))
    }
}
