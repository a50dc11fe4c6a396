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
//! - [`channel`]: provider adapters (the WhatsApp Cloud API), the only code
//!   that talks to providers; [`inbound`] is the provider-facing transport
//!   (`/channels/whatsapp/{botID}`); [`messages`] is what sends and
//!   provider webhooks mean (users, messages, acks); [`callback`] POSTs ack
//!   changes to a send's `webhookURL` from a durable outbox.
//! - [`secrets`]: credentials sealed at rest with `secrets_key`.
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
pub mod callback;
pub mod channel;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod inbound;
pub mod messages;
pub mod model;
pub mod reply;
pub mod secrets;
pub mod server;
pub mod store;
pub mod webhook;
pub mod ws;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, Org};
use crate::reply::RateInfo;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashSet;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A keyed `governor` limiter that reports its remaining budget.
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One configured limit: `per_second` with an equal burst, keyed by `K`.
struct Limit<K: Hash + Eq + Clone> {
    limiter: Keyed<K>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(per_second: u32) -> Option<Limit<K>> {
        NonZeroU32::new(per_second).map(|n| Limit {
            limiter: RateLimiter::keyed(Quota::per_second(n))
                .with_middleware::<StateInformationMiddleware>(),
        })
    }

    /// Takes one unit for `key`: the budget left, or the wait and the budget.
    fn check(&self, key: &K) -> Result<RateInfo, (Duration, RateInfo)> {
        let now_s = chrono::Utc::now().timestamp();
        let info = |quota: Quota, remaining: u32| {
            let limit = quota.burst_size().get();
            let refill = quota.replenish_interval() * (limit - remaining);
            RateInfo {
                limit,
                remaining,
                reset: now_s + refill.as_secs() as i64 + i64::from(refill.subsec_nanos() > 0),
            }
        };
        match self.limiter.check_key(key) {
            Ok(snap) => Ok(info(snap.quota(), snap.remaining_burst_capacity())),
            Err(not_until) => Err((
                not_until.wait_time_from(DefaultClock::default().now()),
                info(not_until.quota(), 0),
            )),
        }
    }
}

/// The rate limits of the reference's "Sending Messages" and of the API.
struct Limits {
    /// Commands per token (`rate_limit`).
    commands: Option<Limit<String>>,
    /// Messages per token (`send_rate_limit`, reference: 10/s).
    sends: Option<Limit<String>>,
    /// Messages per phone number (`phone_rate_limit`, reference: 1/s).
    phones: Option<Limit<(String, String)>>,
}

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
    /// Seals credentials at rest (`secrets_key`).
    pub sealer: secrets::Sealer,
    /// The WhatsApp Cloud API client.
    pub graph: channel::whatsapp::Graph,
    /// The delivery-callback worker.
    pub callbacks: callback::Callbacks,
    limits: Arc<Limits>,
    /// Hex SHA-256 of `config.admin_token`, computed once.
    pub(crate) admin_sha256: Option<Arc<str>>,
    /// `(org, idempotency key)` of sends in progress.
    pub(crate) idempotency_in_flight: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Ctx {
    /// A context over `store`, `bus`, `deliveries` and `callbacks` with
    /// `config`'s limits. `config.secrets_key` must be valid (checked by
    /// [`config::Config::validate`]).
    pub fn new(
        store: store::Store,
        bus: bus::Bus,
        deliveries: webhook::Deliveries,
        callbacks: callback::Callbacks,
        sealer: secrets::Sealer,
        config: Arc<config::Config>,
    ) -> Ctx {
        let limits = Limits {
            commands: Limit::new(config.rate_limit),
            sends: Limit::new(config.send_rate_limit),
            phones: Limit::new(config.phone_rate_limit),
        };
        let graph = channel::whatsapp::Graph::new(
            webhook::guarded_client(&config, config.graph_timeout),
            config.graph_retry_schedule.clone(),
        );
        Ctx {
            store,
            bus,
            deliveries,
            sealer,
            graph,
            callbacks,
            limits: Arc::new(limits),
            admin_sha256: config
                .admin_token
                .as_ref()
                .map(|t| auth::hash_token(t.expose()).into()),
            config,
            idempotency_in_flight: Arc::default(),
        }
    }

    /// Takes one command from `caller`'s per-token budget (`rate_limit` per
    /// second): the budget left, or the wait until the next command is
    /// allowed. `Ok(None)` when unlimited.
    pub fn check_rate(&self, caller: &Caller) -> Result<Option<RateInfo>, (Duration, RateInfo)> {
        match (&self.limits.commands, caller.org_id()) {
            (Some(l), Some(org)) => l.check(&org.to_string()).map(Some),
            _ => Ok(None),
        }
    }

    /// Takes one message from `caller`'s send budget (`send_rate_limit`,
    /// reference: 10 per second per token); see [`Ctx::check_rate`].
    pub fn check_send_rate(
        &self,
        caller: &Caller,
    ) -> Result<Option<RateInfo>, (Duration, RateInfo)> {
        match (&self.limits.sends, caller.org_id()) {
            (Some(l), Some(org)) => l.check(&org.to_string()).map(Some),
            _ => Ok(None),
        }
    }

    /// Takes one message to `phone` (E.164) of `org` (`phone_rate_limit`,
    /// reference: 1 per second). Errors: 2007 with the wait.
    pub fn check_phone_rate(&self, org: &Org, phone: &str) -> Result<(), ApiError> {
        let Some(l) = &self.limits.phones else {
            return Ok(());
        };
        l.check(&(org.id.clone(), phone.to_string()))
            .map(|_| ())
            .map_err(|(wait, _)| {
                ApiError::new(
                    ErrorCode::PhoneRateLimited,
                    "rate limit reached for this phone number",
                )
                .with_retry_after(wait)
            })
    }

    /// Drops limiter state of keys that are full again (bounded memory).
    pub fn shrink_limiters(&self) {
        if let Some(l) = &self.limits.commands {
            l.limiter.retain_recent();
        }
        if let Some(l) = &self.limits.sends {
            l.limiter.retain_recent();
        }
        if let Some(l) = &self.limits.phones {
            l.limiter.retain_recent();
        }
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
