//! The agent console: the web page behind every user's `url`, where
//! agents sign in, see the open conversations, answer users on their own
//! channel and edit their details.
//!
//! This module holds what is not a socket: passwords (Argon2id, the
//! `argon2` crate), sign-in with its limits, sessions, and the page's
//! static files, embedded at build time from `src/console/assets/`. The
//! HTTP endpoints are in [`crate::transport::console`]; the page itself
//! speaks the gateway's WebSocket protocol as an agent
//! ([`crate::auth::Caller::Agent`]).
//!
//! Invariants: passwords and session ids are never stored — only an
//! Argon2id hash and a SHA-256; a session is valid only while it is
//! unexpired, its agent exists and the agent's password has not changed
//! since ([`AgentPassword::generation`]); sign-in never says whether an
//! email exists.

use crate::auth::{hash_token, Caller};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{live_id, AgentPassword, ConsoleSession};
use crate::secrets::Secret;
use crate::store::StoreError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::Arc;
use std::time::Duration;

/// Fewest characters of a console password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters of a console password.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Most console sockets (browser tabs) of one session; the oldest is
/// closed (1008) beyond it.
pub const TABS_PER_SESSION: usize = 8;
/// The session cookie's name.
pub const COOKIE: &str = "convgate_session";

/// Checks a new password's length. Errors: 4101.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(ApiError::new(
            ErrorCode::InvalidPassword,
            format!("invalid password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The Argon2id hash of `password` (PHC string; the crate's default
/// parameters: 19 MiB, 2 passes, 1 lane — OWASP's minimum). Runs on a
/// blocking thread: it takes tens of milliseconds by design.
pub async fn hash_password(password: &str) -> Result<String, ApiError> {
    let password = Secret::new(password);
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "hashing a password failed");
        ApiError::internal()
    })
}

/// Whether `password` matches the PHC string `phc`, on a blocking thread.
async fn verify(phc: String, password: Secret) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.expose().as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash no password matches, verified when an email has no password,
/// so that a refusal takes as long whether or not the email exists.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(crate::auth::new_token().as_bytes(), &salt)
            .expect("hashing a random token")
            .to_string()
    })
}

/// The registry group prefix of every console socket of agent `email`.
pub fn agent_prefix(org: &str, email: &str) -> String {
    format!("{}/agent:{}/", live_id(org), email.to_lowercase())
}

/// The registry group of the console sockets of one session.
pub fn group(s: &ConsoleSession, sid_sha256: &str) -> String {
    format!("{}{}", agent_prefix(&s.org, &s.email), &sid_sha256[..16])
}

/// Closes every console socket of agent `email` (its password changed,
/// or it was deleted).
pub fn end_sessions(ctx: &Ctx, org: &str, email: &str) {
    ctx.bus
        .kick_prefix(&agent_prefix(org, email), crate::bus::Kick::SignedOut);
}

/// Why a sign-in was refused.
#[derive(Debug)]
pub enum SignInError {
    /// Wrong email or password (never says which).
    Refused,
    /// Too many attempts for the email or from the address: wait this long.
    Limited(Duration),
    /// The store failed.
    Store(StoreError),
}

/// A signed-in session: the cookie's value (shown once, never stored)
/// and the session as stored.
#[derive(Debug)]
pub struct SignedIn {
    /// The session id for the cookie: 43 base64url characters (256 bits).
    pub sid: Secret,
    /// The stored session.
    pub session: ConsoleSession,
}

/// Signs agent `email` in with `password` from `ip`: tries each
/// organization with an agent of that email (at most
/// eight) and opens a session in
/// the first whose password matches, durably. Errors: see [`SignInError`].
pub async fn sign_in(
    ctx: &Ctx,
    email: &str,
    password: &str,
    ip: std::net::IpAddr,
) -> Result<SignedIn, SignInError> {
    let email = email.trim().to_lowercase();
    ctx.limits
        .sign_in(&email, ip)
        .map_err(SignInError::Limited)?;
    let password = Secret::new(password);
    let mut tried = false;
    for org in ctx
        .store
        .orgs_of_agent(&email)
        .map_err(SignInError::Store)?
    {
        let (Some(agent), Some(pw)) = (
            ctx.store.agent(&org, &email).map_err(SignInError::Store)?,
            ctx.store
                .agent_password(&org, &email)
                .map_err(SignInError::Store)?,
        ) else {
            continue;
        };
        tried = true;
        if !verify(pw.phc.clone(), password.clone()).await {
            continue;
        }
        if ctx
            .store
            .org(&org)
            .map_err(SignInError::Store)?
            .is_none_or(|o| o.disabled)
        {
            continue;
        }
        let now = crate::time::now_ms();
        let session = ConsoleSession {
            org: org.clone(),
            email: agent.email,
            generation: pw.generation,
            created_ms: now,
            expires_ms: now + (ctx.config.console_session_ttl * 1000.0) as i64,
        };
        let sid = new_sid();
        let hash = hash_token(sid.expose());
        ctx.store
            .write(&org, |tx| {
                tx.put_console_session(&hash, &session);
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(SignInError::Store)?;
        return Ok(SignedIn { sid, session });
    }
    if !tried {
        verify(decoy().to_string(), password).await;
    }
    Err(SignInError::Refused)
}

fn new_sid() -> Secret {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// A valid session, resolved: who it is and the caller it acts as.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The session as stored.
    pub session: ConsoleSession,
    /// The SHA-256 the session is stored under.
    pub sid_sha256: String,
    /// The agent's display name.
    pub name: String,
    /// The caller the console's commands run as.
    pub caller: Caller,
}

/// The session of cookie value `sid`, when it is valid: unexpired, its
/// agent still there with the password it signed in with, its
/// organization enabled.
pub fn session(ctx: &Ctx, sid: &str) -> Result<Option<Agent>, StoreError> {
    let hash = hash_token(sid);
    let Some(s) = ctx.store.console_session(&hash)? else {
        return Ok(None);
    };
    if s.expires_ms <= crate::time::now_ms() {
        return Ok(None);
    }
    let current = ctx.store.agent_password(&s.org, &s.email)?;
    if current.is_none_or(|p: AgentPassword| p.generation != s.generation) {
        return Ok(None);
    }
    let Some(agent) = ctx.store.agent(&s.org, &s.email)? else {
        return Ok(None);
    };
    let Some(org) = ctx.store.org(&s.org)?.filter(|o| !o.disabled) else {
        return Ok(None);
    };
    let caller = Caller::Agent(Arc::new(org), Arc::from(agent.email.as_str()));
    Ok(Some(Agent {
        session: s,
        sid_sha256: hash,
        name: agent.name,
        caller,
    }))
}

/// Ends session `a` (sign-out): removed durably, its sockets closed.
pub async fn sign_out(ctx: &Ctx, a: &Agent) -> Result<(), StoreError> {
    ctx.store
        .write(&a.session.org, |tx| {
            tx.delete_console_session(&a.sid_sha256);
            Ok::<_, StoreError>(())
        })
        .await?;
    ctx.bus.kick_all(
        &group(&a.session, &a.sid_sha256),
        crate::bus::Kick::SignedOut,
    );
    Ok(())
}

/// Removes expired sessions and closes their sockets (the maintenance
/// task calls it).
pub fn expire(ctx: &Ctx) -> Result<usize, StoreError> {
    let gone = ctx.store.expire_console_sessions(crate::time::now_ms())?;
    for (hash, s) in &gone {
        ctx.bus
            .kick_all(&group(s, hash), crate::bus::Kick::SignedOut);
    }
    Ok(gone.len())
}

/// An embedded file of the page: `(Content-Type, bytes)`.
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("assets/index.html"),
        ),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js"),
        ),
        "app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        _ => return None,
    })
}
