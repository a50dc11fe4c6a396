//! `CreateOrganization` (extension; admin token only): a new tenant and its
//! API token, shown once.
//!
//! # Format
//! `{"token":"<admin>","cmd":"CreateOrganization","name":"Acme"}` →
//! `{"ok":1,"cmd":"CreateOrganization","data":{"orgID":"…","name":"Acme","token":"<40 hex>"}}`
//!
//! # Errors
//! 1001 not the admin token (or no admin token configured), 1022 name
//! missing or not 1–100 characters.

use super::Fields;
use crate::auth::{hash_token, new_token};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::time::now_iso;
use serde_json::json;

/// Create an organization.
#[derive(Debug)]
pub struct CreateOrganization {
    name: String,
}

impl CreateOrganization {
    pub(crate) fn parse(f: &Fields) -> Result<CreateOrganization, ApiError> {
        let name = f
            .opt_str("name", ErrorCode::InvalidName)?
            .map(str::trim)
            .unwrap_or_default();
        let n = name.chars().count();
        if !(1..=100).contains(&n) || name.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidName,
                "organization name: 1-100 characters",
            ));
        }
        Ok(CreateOrganization {
            name: name.to_string(),
        })
    }

    /// Creates the organization durably and returns its token.
    pub async fn apply(self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let token = new_token();
        let org = Org {
            id: format!("org_{}", &new_token()[..16]),
            name: self.name,
            token_sha256: hash_token(&token),
            created: now_iso(),
            disabled: false,
            key: "default".into(),
            sandbox: false,
            last_used: Default::default(),
        };
        ctx.store.create_org(&org).await?;
        tracing::info!(org = %org.id, "organization created");
        Ok(Reply::ok("CreateOrganization")
            .with_data(json!({ "orgID": org.id, "name": org.name, "token": token })))
    }
}
