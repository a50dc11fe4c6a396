//! `CreateApiKey` (extension): a named, revocable key of the organization,
//! `live` (works exactly like the token) or `test` (the organization's
//! sandbox: its own users, messages, events, webhook and log; no provider
//! is ever called).
//!
//! # Format
//! `{"cmd":"CreateApiKey","name":"crm-dev","mode":"test"}` →
//! `{"ok":1,"cmd":"CreateApiKey","data":{"name":"crm-dev","mode":"test","created":"…","key":"<40 hex>"}}`.
//! The key is answered once; only its SHA-256 is kept.
//!
//! # Errors
//! 1017 a name that is not 1–64 of `A-Z a-z 0-9 _ . -`, `default`, or
//! taken; a mode other than live|test. 1001 with a test key.

use super::Fields;
use crate::auth::{hash_token, new_token};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{ApiKey, Org};
use crate::reply::Reply;
use serde_json::json;

/// Create an API key.
#[derive(Debug)]
pub struct CreateApiKey {
    name: String,
    mode: String,
}

/// A key name: 1–64 characters of `A-Z a-z 0-9 _ . -`. Error: 1017.
pub(crate) fn key_name(f: &Fields) -> Result<String, ApiError> {
    let name = f.req_str("name", ErrorCode::InvalidJson, ErrorCode::InvalidJson)?;
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "name must be 1-64 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    Ok(name.to_string())
}

impl CreateApiKey {
    pub(crate) fn parse(f: &Fields) -> Result<CreateApiKey, ApiError> {
        let name = key_name(f)?;
        if name == "default" {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "default is the organization's own token (ResetToken)",
            ));
        }
        let mode = f.opt_str("mode", ErrorCode::InvalidJson)?.unwrap_or("live");
        if !matches!(mode, "live" | "test") {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "mode must be live or test",
            ));
        }
        Ok(CreateApiKey {
            name,
            mode: mode.to_string(),
        })
    }

    /// Stores the key's hash durably and answers the key once.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let token = new_token();
        let key = ApiKey {
            name: self.name,
            mode: self.mode,
            created: crate::time::now_iso(),
            sha256: hash_token(&token),
        };
        ctx.store
            .write(&org.id, |tx| {
                if tx
                    .store()
                    .api_keys(&org.id)?
                    .iter()
                    .any(|k| k.name == key.name)
                {
                    return Err(ApiError::new(
                        ErrorCode::InvalidJson,
                        format!("a key named {:?} exists (RevokeApiKey it first)", key.name),
                    ));
                }
                tx.put_api_key(&key);
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("CreateApiKey").with_data(json!({
            "name": key.name, "mode": key.mode, "created": key.created, "key": token,
        })))
    }
}
