//! `ResetToken` (extension; the reference's "Reset Token"): issues a new
//! token for the caller's organization. The old token stops working at once
//! and every live socket of the organization is closed.
//!
//! # Format
//! `{"cmd":"ResetToken"}` → `{"ok":1,"cmd":"ResetToken","data":{"token":"<40 hex>"}}`

use crate::auth::{hash_token, new_token};
use crate::bus::Kick;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use serde_json::json;

/// Reset the organization's token.
#[derive(Debug)]
pub struct ResetToken;

impl ResetToken {
    /// Replaces the token durably, then closes the organization's sockets.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let token = new_token();
        if !ctx
            .store
            .replace_token(&org.id, &hash_token(&token))
            .await?
        {
            return Err(ApiError::internal());
        }
        ctx.bus.kick_all(
            &crate::bus::Bus::key_group(&org.id, "default"),
            Kick::TokenReset,
        );
        tracing::info!(org = %org.id, "API token reset");
        Ok(Reply::ok("ResetToken").with_data(json!({ "token": token })))
    }
}
