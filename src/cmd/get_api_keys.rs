//! `GetApiKeys` (extension): the organization's keys — the token as
//! `default`, and every named key — never a key itself.
//!
//! # Format
//! `{"cmd":"GetApiKeys"}` →
//! `{"ok":1,"cmd":"GetApiKeys","data":[{"name":"default","mode":"live","created":"…","lastUsed":"…"},{"name":"crm-dev","mode":"test","created":"…","lastUsed":null}]}`.
//! `lastUsed`: ISO 8601 UTC, exact while the gateway runs and kept across
//! restarts to the minute (`null`: never used).
//!
//! # Errors
//! 1001 with a test key.

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// List API keys.
#[derive(Debug)]
pub struct GetApiKeys;

impl GetApiKeys {
    /// Replies with every key of the organization.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let used = |name: &str| -> Value {
            match ctx.store.key_use(&org.id, name).load(Ordering::Relaxed) {
                0 => Value::Null,
                ms => crate::time::iso_of_ms(ms).into(),
            }
        };
        let live = ctx.store.org(&org.id)?;
        let mut data = vec![json!({
            "name": "default", "mode": "live",
            "created": live.map(|o| o.created).unwrap_or_default(),
            "lastUsed": used("default"),
        })];
        for k in ctx.store.api_keys(&org.id)? {
            data.push(json!({"name": k.name, "mode": k.mode, "created": k.created, "lastUsed": used(&k.name)}));
        }
        Ok(Reply::ok("GetApiKeys").with_data(data))
    }
}
