//! `CreateAgent` (extension): adds an agent to the organization, so that
//! sends can name it in `agentEmail` (reference error 2002 otherwise).
//!
//! # Format
//! `{"cmd":"CreateAgent","email":"john@company.com","name":"John Smith"}` →
//! `{"ok":1,"cmd":"CreateAgent","data":{"aid":1,"email":"john@company.com","name":"John Smith","created":"…"}}`.
//! An existing email (any case) is renamed; its `aid` stays.
//!
//! # Errors
//! 1024 missing or invalid email, 1022 missing or invalid name.

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
        })
    }

    /// Stores the agent durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
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
                Ok::<_, ApiError>(agent)
            })
            .await?;
        Ok(Reply::ok("CreateAgent").with_data(agent))
    }
}
