//! convgate: a self-hosted gateway speaking the Convrs `cmd`/`ok` JSON
//! protocol over WebSocket and HTTP POST.
//!
//! # Codemap
//! Data flows down this list; no module imports one above it
//! (`../shared/tools/module-cycles src` prints `no circles`).
//!
//! - [`server`]: start-up wiring: store, context, workers, listener.
//! - [`cluster`]: several nodes as one: the workers' lease, the NATS link
//!   between the nodes' buses (events, kicks, socket registrations, wakes).
//! - [`transport`]: everything that touches a socket: [`transport::ws`]
//!   (`GET /ws`), [`transport::http`] (`POST /api`), [`transport::inbound`]
//!   (`/channels/{kind}/{botID}`, providers' webhooks),
//!   [`transport::health`] (`/healthz`, `/metrics`), the accept loop.
//! - [`cmd`]: the `Command` enum, one file per command, each with its parse,
//!   `apply` and `# Format`; [`cmd::execute_now`] is the one entry point.
//! - [`bootstrap`], [`maintenance`]: first start and `[[bots]]`; the
//!   periodic housekeeping.
//! - [`messages`]: what sends and provider webhooks mean for users,
//!   messages, acks and callbacks, for every channel; the template cache.
//! - [`conversations`]: conversations between users and agents: opening,
//!   assignment, notes, closing, the rows they show.
//! - [`console`]: the agent console — passwords, sign-in, sessions and
//!   the embedded page behind every user's `url`.
//! - [`bots`], [`users`], [`idempotency`], [`events`]: bots and their
//!   channel settings, user updates, idempotent sends, event bodies.
//! - [`ctx`]: the context every command gets (store, bus, channels,
//!   deliveries, limits, config) and authentication.
//! - [`channel`]: the `Channel` interface and one folder per provider
//!   ([`channel::whatsapp`]): the only code that talks to providers.
//! - [`delivery`]: the outbound delivery engine and its two queues,
//!   organization webhooks and delivery callbacks.
//! - [`bus`]: fans durable events out to live sockets of their organization.
//! - [`store`]: the only module that knows sled or PostgreSQL; atomic,
//!   durable writes with group commit and the per-organization event log.
//! - [`limits`], [`net`], [`time`]: rate limits, the SSRF-guarded HTTP
//!   client, timestamps and retry delays.
//! - [`model`], [`domain`], [`reply`], [`error`], [`auth`], [`config`],
//!   [`secrets`]: stored records, validated values, the reply envelope, the
//!   reference's error codes, tokens, settings, sealed secrets.
//!
//! # Invariants
//! - Data flows one way: transport → `Envelope::parse` → `Command::parse` →
//!   `Command::apply(ctx)` → store (+ event log) → bus → sockets, webhook
//!   outbox, callbacks.
//! - A reply `ok:1` to a mutating command means the change and its event are
//!   flushed to disk.
//! - Events reach a socket only from the bus, only for its organization, only
//!   after they are durable, in `seq` order.
//! - Only `channel/` talks to providers; a new provider is one folder under
//!   `channel/` plus its registration in `channel/mod.rs`.

pub mod auth;
pub mod bootstrap;
pub mod bots;
pub mod bus;
pub mod channel;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod console;
pub mod conversations;
pub mod ctx;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod limits;
pub mod maintenance;
pub mod messages;
pub mod model;
pub mod net;
pub mod reply;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod store;
pub mod time;
pub mod transport;
pub mod users;
