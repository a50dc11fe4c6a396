//! `CreateAgent` (extension): adds an agent to the organization, so that
//! sends can name it in `agentEmail` (reference error 2002 otherwise).
//!
//! # Format
//! `{"cmd":"CreateAgent","email":"john@company.com","name":"John Smith"}` →
//! `{"ok":1,"cmd":"CreateAgent","data":{"aid":1,"email":"john@company.com","name":"John Smith","created":"…"}}`.
//! An existing email (any case) is renamed; its `aid` stays. An optional
//! `password` (12 to 1024 characters) lets the agent sign in to the
//! console, as `SetAgentPassword` would.
//!
//! # Errors
//! 1024 missing or invalid email, 1022 missing or invalid name, 4101
//! invalid password.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::{Email, UserName};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Agent, Org};
use crate::reply::Reply;
use crate::time::now_iso;

/// Add or rename an agent.
#[derive(Debug)]
pub struct CreateAgent {
    email: Email,
    name: UserName,
    password: Option<crate::secrets::Secret>,
}

impl CreateAgent {
    pub(crate) fn parse(f: &Fields) -> Result<CreateAgent, ApiError> {
        Ok(CreateAgent {
            email: Email::parse(f.req_str(
                "email",
                ErrorCode::InvalidEmail,
                ErrorCode::InvalidEmail,
            )?)?,
            name: UserName::parse(f.req_str(
                "name",
                ErrorCode::InvalidName,
                ErrorCode::InvalidName,
            )?)?,
            password: super::set_agent_password::password(f)?,
        })
    }

    /// Stores the agent durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let phc = match &self.password {
            Some(p) => Some(crate::console::hash_password(p.expose()).await?),
            None => None,
        };
        let agent = ctx
            .store
            .write(&org.id, |tx| {
                let agent = match tx.store().agent(&org.id, self.email.as_str())? {
                    Some(a) => Agent {
                        name: self.name.as_str().to_string(),
                        ..a
                    },
                    None if tx.store().agents(&org.id)?.len() >= ctx.config.max_agents_per_org => {
                        return Err(ApiError::over_cap(
                            "agents per organization",
                            ctx.config.max_agents_per_org,
                            "max_agents_per_org",
                        ))
                    }
                    None => Agent {
                        aid: tx.next_aid()?,
                        email: self.email.as_str().to_string(),
                        name: self.name.as_str().to_string(),
                        created: now_iso(),
                    },
                };
                tx.put_agent(&agent);
                if let Some(phc) = phc {
                    super::set_agent_password::stage_password(tx, &agent, phc)?;
                }
                Ok::<_, ApiError>(agent)
            })
            .await?;
        if self.password.is_some() {
            crate::console::end_sessions(ctx, &org.id, &agent.email);
        }
        Ok(Reply::ok("CreateAgent").with_data(agent))
    }
}
