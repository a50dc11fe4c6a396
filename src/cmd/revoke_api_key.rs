//! `RevokeApiKey` (extension): the key stops working at once and its live
//! sockets close (1008 "token reset"), as `ResetToken` does for the token.
//!
//! # Format
//! `{"cmd":"RevokeApiKey","name":"crm-dev"}` → `{"ok":1,"cmd":"RevokeApiKey"}`.
//!
//! # Errors
//! 1017 a malformed name, or `default` (use `ResetToken`); 1001 no such key,
//! or with a test key.

use super::create_api_key::key_name;
use super::Fields;
use crate::bus::{Bus, Kick};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// Revoke an API key.
#[derive(Debug)]
pub struct RevokeApiKey {
    name: String,
}

impl RevokeApiKey {
    pub(crate) fn parse(f: &Fields) -> Result<RevokeApiKey, ApiError> {
        let name = key_name(f)?;
        if name == "default" {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                "the organization's own token is replaced with ResetToken",
            ));
        }
        Ok(RevokeApiKey { name })
    }

    /// Removes the key durably, then closes its sockets.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        ctx.store
            .write(&org.id, |tx| {
                let key = tx
                    .store()
                    .api_keys(&org.id)?
                    .into_iter()
                    .find(|k| k.name == self.name)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidToken,
                            format!("no key named {:?}", self.name),
                        )
                    })?;
                tx.delete_api_key(&key);
                Ok::<_, ApiError>(())
            })
            .await?;
        ctx.bus
            .kick_all(&Bus::key_group(&org.id, &self.name), Kick::TokenReset);
        Ok(Reply::ok("RevokeApiKey"))
    }
}
