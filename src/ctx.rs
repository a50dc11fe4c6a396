//! The context every command, transport and worker shares: a cheap `Clone`
//! handle (`Arc`s inside) over the store, the bus, the delivery queues, the
//! channel registry, the rate limits and the configuration.

use crate::auth::{hash_token, Caller};
use crate::bus::Bus;
use crate::channel::{Channel, Registry, Settings};
use crate::config::Config;
use crate::delivery::callbacks::Callbacks;
use crate::delivery::webhooks::Deliveries;
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::Idempotency;
use crate::limits::{Limited, Limits};
use crate::model::{Bot, Org};
use crate::reply::RateInfo;
use crate::secrets::{Sealer, Secret};
use crate::store::Store;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How often a key's last use is written to the store, in ms.
const KEY_USE_PERSIST_MS: i64 = 60_000;

/// Everything a command needs.
#[derive(Clone)]
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// The event bus and socket registry.
    pub bus: Bus,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The webhook delivery workers.
    pub deliveries: Deliveries,
    /// The delivery-callback worker.
    pub callbacks: Callbacks,
    /// Seals credentials at rest (`secrets_key`).
    pub sealer: Sealer,
    /// The channels (providers), by bot kind.
    pub channels: Registry,
    /// Idempotency keys in progress.
    pub idempotency: Idempotency,
    /// The rate limits.
    pub limits: Arc<Limits>,
    /// Cancelled when the server shuts down (long polls end early).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Background work that shutdown waits for (route runs, simulated
    /// acks), so that a stopped gateway holds no store handle.
    pub tasks: tokio_util::task::TaskTracker,
    /// Hex SHA-256 of `config.admin_token`, computed once.
    admin_sha256: Option<Arc<str>>,
}

impl Ctx {
    /// Runs background work on `tasks`, the tracker shutdown waits on.
    pub fn with_tasks(mut self, tasks: tokio_util::task::TaskTracker) -> Ctx {
        self.tasks = tasks;
        self
    }

    /// A context over `store`, `bus`, `deliveries` and `callbacks` with
    /// `config`'s limits and the built-in channels.
    pub fn new(
        store: Store,
        bus: Bus,
        deliveries: Deliveries,
        callbacks: Callbacks,
        sealer: Sealer,
        config: Arc<Config>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Ctx {
        Ctx {
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
            store,
            bus,
            deliveries,
            callbacks,
            sealer,
            channels: Registry::builtin(&config),
            idempotency: Idempotency::default(),
            limits: Arc::new(
                Limits::new(
                    config.rate_limit,
                    config.send_rate_limit,
                    config.phone_rate_limit,
                )
                .with_auth_failures(config.auth_failure_limit)
                .with_sign_ins(config.console_sign_in_limit),
            ),
            admin_sha256: config
                .admin_token
                .as_ref()
                .map(|t| hash_token(t.expose()).into()),
            config,
        }
    }

    /// Resolves `token` to its caller. Errors: 1000 when absent or empty,
    /// 1001 when it matches neither an organization nor the admin token, or
    /// names a disabled organization.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let token = match token.map(str::trim) {
            None | Some("") => {
                return Err(ApiError::new(ErrorCode::MissingToken, "missing API token"))
            }
            Some(t) => t,
        };
        // A token that resolved before is found without hashing it.
        let org = match self.store.cached_org(token) {
            Some(org) => Some(org),
            None => {
                let hash = hash_token(token);
                if let Some(admin_hash) = &self.admin_sha256 {
                    if bool::from(admin_hash.as_bytes().ct_eq(hash.as_bytes())) {
                        return Ok(Caller::Admin);
                    }
                }
                self.store.org_by_raw_token(token, &hash)?
            }
        };
        match org {
            Some(org) if org.disabled => Err(ApiError::new(
                ErrorCode::InvalidToken,
                "API access is disabled for this organization",
            )),
            Some(org) => {
                let now = crate::time::now_ms();
                let before = org
                    .last_used
                    .swap(now, std::sync::atomic::Ordering::Relaxed);
                // Kept across restarts, written at most once a minute per key.
                if now - before >= KEY_USE_PERSIST_MS {
                    let live = crate::model::live_id(&org.id);
                    if let Err(e) = self.store.note_key_use(live, &org.key, now) {
                        tracing::warn!(error = %e, "recording a key's last use failed");
                    }
                }
                Ok(Caller::Org(org))
            }
            None => Err(ApiError::new(ErrorCode::InvalidToken, "invalid API token")),
        }
    }

    /// Takes one command from `caller`'s per-token budget (`rate_limit` per
    /// second). `Ok(None)` when unlimited or for the admin.
    pub fn check_rate(&self, caller: &Caller) -> Result<Option<RateInfo>, Limited> {
        match caller.org_id() {
            Some(org) => self.limits.command(org),
            None => Ok(None),
        }
    }

    /// Takes one message from `caller`'s send budget (`send_rate_limit`,
    /// reference: 10 per second per token); see [`Ctx::check_rate`].
    /// With a shared store, the budget is the cluster's (in PostgreSQL).
    pub fn check_send_rate(&self, caller: &Caller) -> Result<Option<RateInfo>, Limited> {
        let Some(org) = caller.org_id() else {
            return Ok(None);
        };
        let per_second = self.config.send_rate_limit;
        match self.shared_rate(&format!("send/{org}"), per_second) {
            Some(outcome) => crate::limits::shared_outcome(per_second, outcome).map(Some),
            None => self.limits.send(org),
        }
    }

    /// Takes one message to `phone` (E.164) of `org` (`phone_rate_limit`,
    /// reference: 1 per second; the cluster's with a shared store).
    /// Errors: 2007 with the wait.
    pub fn check_phone_rate(&self, org: &Org, phone: &str) -> Result<(), ApiError> {
        let key = format!("phone/{}/{phone}", org.id);
        match self.shared_rate(&key, self.config.phone_rate_limit) {
            Some(Err(wait)) => Err(ApiError::new(
                ErrorCode::PhoneRateLimited,
                "rate limit reached for this phone number",
            )
            .with_retry_after(wait)),
            Some(Ok(_)) => Ok(()),
            None => self.limits.phone(&org.id, phone),
        }
    }

    /// One unit of the cluster-wide limit `key` of `per_second`, when the
    /// store is shared and the limit on; `None` otherwise (and when the
    /// store fails: the node's own limiter then decides).
    pub fn shared_rate(
        &self,
        key: &str,
        per_second: u32,
    ) -> Option<Result<std::time::Duration, std::time::Duration>> {
        if !self.store.shared() {
            return None;
        }
        let (interval, tolerance) = crate::limits::gcra(per_second)?;
        match self.store.take_rate(key, interval, tolerance) {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                tracing::error!(error = %e, "shared rate limit unavailable; this node's limiter decides");
                None
            }
        }
    }

    /// The bot `id` of `org`. Errors: 1015 unknown bot.
    pub fn bot(&self, org: &Org, id: u64) -> Result<Bot, ApiError> {
        self.store
            .bot(&org.id, id)?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownBot, format!("unknown botID {id}")))
    }

    /// The settings of `bot`, secrets opened. Errors: 2004 when a sealed
    /// value does not open with `secrets_key` (logged).
    pub fn settings(&self, bot: &Bot) -> Result<Settings, ApiError> {
        let mut values: Vec<(String, Secret)> = bot
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect();
        for (name, sealed) in &bot.secrets {
            let v = self.sealer.open(&sealed.0).map_err(|e| {
                tracing::error!(bot = bot.id, setting = %name, error = %e, "cannot open a bot's secret");
                ApiError::internal()
            })?;
            values.push((name.clone(), v));
        }
        Ok(Settings::new(bot.id, values))
    }

    /// The channel of `bot` and its opened settings, ready to send.
    /// Errors: 1016 when no channel serves the bot's kind or its settings
    /// are not enough to send.
    pub fn channel_of(&self, bot: &Bot) -> Result<(Arc<dyn Channel>, Settings), ApiError> {
        self.channel_for(false, bot)
    }

    /// [`Ctx::channel_of`] for a caller: in the sandbox (`sandbox`, a test
    /// key) the bot's settings need not be enough to send, since no provider
    /// is called. Errors: 1016.
    pub fn channel_for(
        &self,
        sandbox: bool,
        bot: &Bot,
    ) -> Result<(Arc<dyn Channel>, Settings), ApiError> {
        let wrong = |m: String| ApiError::new(ErrorCode::WrongBotKind, m);
        let channel = self.channels.get(bot.kind).cloned().ok_or_else(|| {
            wrong(format!(
                "bot {} is {}: no channel can send through it yet",
                bot.id,
                bot.kind.as_str()
            ))
        })?;
        let settings = self.settings(bot)?;
        if sandbox {
            return Ok((channel, settings));
        }
        channel
            .ready(&settings)
            .map_err(|why| wrong(format!("{} bot {} {why}", bot.kind.as_str(), bot.id)))?;
        Ok((channel, settings))
    }
}
