//! convgate: a self-hosted gateway speaking the Convrs `cmd`/`ok` JSON
//! protocol over WebSocket and HTTP POST.
//!
//! # Codemap
//! - [`server`]: the accept loop (TLS, connection permits, graceful
//!   shutdown) and the router: `GET /ws`, `POST /api`, `GET /healthz`.
//! - [`ws`] and [`http`]: the two transports. They only move bytes: each
//!   hands the envelope to [`cmd::execute`] and sends back the reply.
//! - [`cmd`]: the `Command` enum, one file per command, each with its parse,
//!   `apply` and `# Format`.
//! - [`store`]: the only module that knows sled; atomic, durable writes with
//!   group commit and the per-organization event log.
//! - [`bus`]: fans durable events out to live sockets of their organization.
//! - [`webhook`]: durable, signed, retried delivery of every event to the
//!   organization's webhook.
//! - [`domain`], [`model`]: validated values and stored records.
//! - [`auth`], [`config`], [`error`], [`reply`]: tokens, settings, the
//!   reference's error codes, the reply envelope.
//!
//! # Invariants
//! - Data flows one way: transport → `Envelope::parse` → `Command::parse` →
//!   `Command::apply(ctx)` → store (+ event log) → bus → sockets.
//! - A reply `ok:1` to a mutating command means the change and its event are
//!   flushed to disk.
//! - Events reach a socket only from the bus, only for its organization, only
//!   after they are durable, in `seq` order.

pub mod auth;
pub mod bus;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod model;
pub mod reply;
pub mod server;
pub mod store;
pub mod webhook;
pub mod ws;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, Org};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Everything a command needs: a cheap `Clone` handle (`Arc`s inside).
#[derive(Clone)]
pub struct Ctx {
    /// The store.
    pub store: store::Store,
    /// The event bus and socket registry.
    pub bus: bus::Bus,
    /// The configuration in force.
    pub config: Arc<config::Config>,
    /// The webhook delivery workers.
    pub deliveries: webhook::Deliveries,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl Ctx {
    /// A context over `store`, `bus` and `deliveries` with `config`'s limits.
    pub fn new(
        store: store::Store,
        bus: bus::Bus,
        deliveries: webhook::Deliveries,
        config: Arc<config::Config>,
    ) -> Ctx {
        let limiter = NonZeroU32::new(config.rate_limit)
            .map(|n| Arc::new(RateLimiter::keyed(Quota::per_second(n))));
        Ctx {
            store,
            bus,
            config,
            deliveries,
            limiter,
        }
    }

    /// Takes one command from `caller`'s per-token budget (`rate_limit` per
    /// second). `Err` holds the wait until the next command is allowed.
    pub fn check_rate(&self, caller: &Caller) -> Result<(), Duration> {
        let (Some(limiter), Some(org)) = (&self.limiter, caller.org_id()) else {
            return Ok(());
        };
        limiter
            .check_key(&org.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The bot `id` of `org`. Errors: 1015 unknown bot.
    pub fn bot(&self, org: &Org, id: u64) -> Result<Bot, ApiError> {
        self.store
            .bot(&org.id, id)?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownBot, format!("unknown botID {id}")))
    }
}

/// On first start (no organization yet), creates the organization `default`
/// and returns its token: `bootstrap_token` when configured, else a new
/// random one. Returns `None` when organizations exist already.
pub async fn bootstrap(ctx: &Ctx) -> Result<Option<String>, store::StoreError> {
    if !ctx.store.is_empty()? {
        return Ok(None);
    }
    let token = match &ctx.config.bootstrap_token {
        Some(t) => t.expose().to_string(),
        None => auth::new_token(),
    };
    let org = Org {
        id: "default".into(),
        name: "default".into(),
        token_sha256: auth::hash_token(&token),
        created: domain::now_iso(),
        disabled: false,
    };
    ctx.store.create_org(&org).await?;
    Ok(Some(token))
}
