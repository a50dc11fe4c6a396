//! `SetAgentPassword` (extension, agent console): sets the password an
//! agent signs in to the console with. Only its Argon2id hash is stored;
//! every console session of the agent ends (its sockets close with 1008).
//!
//! # Format
//! `{"cmd":"SetAgentPassword","email":"ann@example.com","password":"correct horse battery"}` →
//! `{"ok":1,"cmd":"SetAgentPassword","data":{"email":"ann@example.com"}}`.
//! The password is never echoed or logged.
//!
//! # Errors
//! 1024 missing email, 2002 no such agent, 4101 a password of fewer than
//! 12 or more than 1024 characters.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Agent, AgentPassword, Org};
use crate::reply::Reply;
use crate::secrets::Secret;
use crate::store::StoreError;
use serde_json::json;

/// Set an agent's console password.
#[derive(Debug)]
pub struct SetAgentPassword {
    email: String,
    password: Secret,
}

/// The `password` field, checked (4101 when present but invalid).
pub(crate) fn password(f: &Fields) -> Result<Option<Secret>, ApiError> {
    let p = f.opt_str("password", ErrorCode::InvalidPassword)?;
    if let Some(p) = p {
        crate::console::check_password(p)?;
    }
    Ok(p.map(Secret::new))
}

impl SetAgentPassword {
    pub(crate) fn parse(f: &Fields) -> Result<SetAgentPassword, ApiError> {
        let email = f
            .req_str("email", ErrorCode::InvalidEmail, ErrorCode::InvalidEmail)?
            .trim()
            .to_string();
        let password = password(f)?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidPassword, "missing password"))?;
        Ok(SetAgentPassword { email, password })
    }

    /// Hashes the password, stores the hash durably and ends the agent's
    /// sessions.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let agent = super::fields::agent_of(ctx, org, Some(&self.email))?.expect("named");
        store_password(ctx, org, &agent, &self.password).await?;
        Ok(Reply::ok("SetAgentPassword").with_data(json!({"email": agent.email})))
    }
}

/// Stores `password`'s hash for `agent` with a new generation (ending
/// every session signed in with an earlier one), durably, then closes the
/// agent's console sockets.
pub(crate) async fn store_password(
    ctx: &Ctx,
    org: &Org,
    agent: &Agent,
    password: &Secret,
) -> Result<(), ApiError> {
    let phc = crate::console::hash_password(password.expose()).await?;
    ctx.store
        .write(&org.id, |tx| {
            // Written again: it indexes the email for sign-in.
            tx.put_agent(agent);
            stage_password(tx, agent, phc)
        })
        .await?;
    crate::console::end_sessions(ctx, &org.id, &agent.email);
    Ok(())
}

/// Stages `phc` as `agent`'s password, one generation after the current.
pub(crate) fn stage_password(
    tx: &mut crate::store::WriteTx<'_>,
    agent: &Agent,
    phc: String,
) -> Result<(), StoreError> {
    let org = tx.org().to_string();
    let generation = tx
        .store()
        .agent_password(&org, &agent.email)?
        .map_or(1, |p| p.generation + 1);
    tx.put_agent_password(&agent.email, &AgentPassword { phc, generation });
    Ok(())
}
