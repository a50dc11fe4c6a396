//! API tokens: generation, hashing and authentication of a caller.
//!
//! A token is 40 lowercase hex characters (160 bits from the OS CSPRNG), as
//! in the reference's examples. Only its SHA-256 is stored; the admin token
//! is compared by hash in constant time ([`crate::ctx::Ctx::authenticate`]).

use crate::model::Org;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Who sent a command.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An organization, by its API token (shared with the token cache).
    Org(std::sync::Arc<Org>),
    /// The instance administrator (`admin_token`).
    Admin,
    /// An agent signed in to the console: its organization (live) and
    /// email. Runs only the commands an agent works with
    /// ([`crate::cmd::Command::open_to_agents`]), as that agent.
    Agent(std::sync::Arc<Org>, std::sync::Arc<str>),
}

impl Caller {
    /// The actor of the events this caller causes: `api` with the key's id
    /// (`default`: the organization's token), or `admin`.
    pub fn actor(&self) -> crate::model::Actor {
        match self {
            Caller::Org(o) => crate::model::Actor::api(&o.key),
            Caller::Admin => crate::model::Actor::admin(),
            Caller::Agent(_, email) => crate::model::Actor::agent(email),
        }
    }

    /// Whether the caller uses a test key (the sandbox).
    pub fn sandbox(&self) -> bool {
        matches!(self, Caller::Org(o) if o.sandbox)
    }

    /// The organization id, or `None` for the admin.
    pub fn org_id(&self) -> Option<&str> {
        match self {
            Caller::Org(o) | Caller::Agent(o, _) => Some(&o.id),
            Caller::Admin => None,
        }
    }
}

/// A new random token: 40 lowercase hex characters from the OS CSPRNG.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Lowercase hex SHA-256 of `token`: what the store keeps.
pub fn hash_token(token: &str) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut out)
        .expect("64 hex digits for 32 bytes");
    String::from_utf8_lossy(&out).into_owned()
}
