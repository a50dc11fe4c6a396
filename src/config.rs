//! Configuration: one documented struct, read from an optional TOML file,
//! then `CONVGATE_<KEY>` environment variables, then command-line flags (each
//! later source overrides the earlier). README.md lists every key.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` never prints the value.

pub use crate::secrets::Secret;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every setting of the gateway, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory of the sled store. Default `./convgate-data`.
    pub data_dir: PathBuf,
    /// Where state lives when it is not the embedded store under
    /// `data_dir`: a PostgreSQL URL (`postgres://user:pass@host:5432/db`)
    /// that any number of nodes may share; the binary creates and migrates
    /// its schema. Unset (the default): the embedded sled store. Redacted
    /// in logs (it may carry a password).
    pub store: Option<Secret>,
    /// Connections each node keeps to `store` for reads (two more serve
    /// writes and leases). Default 4.
    pub store_pool: usize,
    /// The NATS server (`nats://host:4222`) through which nodes sharing a
    /// `store` tell each other of events, socket kicks and registrations,
    /// and wake the node that runs the workers. Unset (the default): an
    /// in-process bus (one node).
    pub bus: Option<String>,
    /// Subject prefix on `bus`: every subject is `{bus_prefix}.…`, so that
    /// several clusters can share one NATS server. Default `convgate`.
    pub bus_prefix: String,
    /// Seconds a node holds the workers' lease (webhook deliveries,
    /// callbacks, housekeeping, route timers) without renewing it; when it
    /// dies, another node takes over after at most this long. Renewed every
    /// third of it. Only with a shared `store`. Default 10.
    pub lease_timeout: f64,
    /// PEM certificate chain; with `tls_key`, serve WSS/HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Allow plain ws/http on a non-loopback address (a TLS-terminating proxy
    /// is in front). Default false.
    pub allow_plaintext: bool,
    /// The https base URL at which providers reach this gateway, e.g.
    /// `https://gw.example.com`: the base of every provider-facing URL
    /// convgate hands out (status callbacks) and of the URL provider
    /// signatures are computed over (never the request's `Host`). Unset:
    /// signed-URL webhooks (SMS) cannot be verified and are refused.
    pub public_base_url: Option<String>,
    /// Instance admin token for `CreateOrganization`; unset: refused.
    pub admin_token: Option<Secret>,
    /// On first start only: use this 40-hex-character value as the `default`
    /// organization's token instead of a random one.
    pub bootstrap_token: Option<Secret>,
    /// Seconds without any frame from a socket before it is closed. Default 180.
    pub heartbeat_timeout: f64,
    /// Live sockets per token; a newer one closes the oldest (1018). Default 1.
    pub max_sockets_per_token: usize,
    /// Largest WebSocket message accepted, bytes; larger closes with 1009. Default 65536.
    pub max_message_bytes: usize,
    /// Largest POST body accepted, bytes; larger gets 413. Default 65536.
    pub max_body_bytes: usize,
    /// Concurrent TCP connections served (HTTP and WebSocket). 0 (the
    /// default): as many as the process's open-file limit allows with room
    /// for the store and outbound HTTP, at most 20,000. A value that does
    /// not fit the limit stops the start.
    pub max_connections: usize,
    /// Concurrent connections from one IP address; 0 (default) = unlimited
    /// (for deployments without a proxy in front).
    pub max_connections_per_ip: usize,
    /// Seconds a connection may take to send a request's line and headers,
    /// from its first byte — or, for a new connection, from its accept.
    /// Default 10.
    pub header_read_timeout: f64,
    /// Seconds a request's body may take to arrive. Default 30.
    pub body_read_timeout: f64,
    /// Seconds an idle keep-alive connection is kept. Default 60.
    pub keepalive_timeout: f64,
    /// Seconds a TLS handshake may take. Default 10.
    pub tls_handshake_timeout: f64,
    /// Seconds a WebSocket may take to send `connect` (close 4000). Default 10.
    pub connect_timeout: f64,
    /// Failed authentications (1000/1001) per second per client address,
    /// with a burst of five times that; over it: 429 / close 1008. 0
    /// disables. Default 20.
    pub auth_failure_limit: u32,
    /// Largest custom data of one user after a `SetUserData` merge, bytes
    /// (1017 above it, nothing written). Default 65536.
    pub max_user_data_bytes: usize,
    /// Most tags set on one user. Default 100.
    pub max_tags_per_user: usize,
    /// Most tag definitions per organization. Default 1000.
    pub max_tags_per_org: usize,
    /// Most bots per organization. Default 100.
    pub max_bots_per_org: usize,
    /// Most agents per organization. Default 1000.
    pub max_agents_per_org: usize,
    /// Most routes per organization. Default 1000.
    pub max_routes_per_org: usize,
    /// Most delivery callbacks an organization may have queued (not yet
    /// delivered or given up); a send with `webhookURL` over it is 1017.
    /// Default 100,000.
    pub max_pending_callbacks_per_org: usize,
    /// Seconds an agent's console session lasts after sign-in. Default
    /// 43200 (12 h).
    pub console_session_ttl: f64,
    /// Console sign-in attempts per minute per email and per client
    /// address (each with an equal burst); over it: 429. 0 disables.
    /// Default 10.
    pub console_sign_in_limit: u32,
    /// `text` (default; ANSI colours only on a terminal) or `json` (one
    /// JSON object per line, for log collectors).
    pub log_format: String,
    /// Events queued for one socket before it is closed as too slow (4001). Default 1024.
    pub socket_queue: usize,
    /// Seconds a write to one socket may take before it is closed. Default 10.
    pub write_timeout: f64,
    /// Commands per second per token, with an equal burst; 0 disables. Default 1000.
    pub rate_limit: u32,
    /// Log filter (tracing `EnvFilter` syntax). Default `info`.
    pub log: String,
    /// Allow `http://` webhooks and private, loopback and link-local
    /// addresses (checked on the resolved addresses). Default false.
    pub allow_private_webhooks: bool,
    /// Seconds one webhook attempt may take; no 2xx by then is a failure. Default 15.
    pub webhook_timeout: f64,
    /// Delay in seconds before each attempt of a delivery: the first is
    /// usually 0 (at once); its length is the number of attempts. Jittered
    /// by ±10%. Default `[0, 5, 300, 1800, 7200, 18000, 36000, 36000]`.
    pub webhook_retry_schedule: Vec<f64>,
    /// Deliveries in flight to one webhook at once. Default 8.
    pub webhook_concurrency: usize,
    /// Seconds a rotated-out webhook secret keeps signing. Default 86400.
    pub webhook_secret_overlap: f64,
    /// Key sealing provider credentials and callback headers at rest:
    /// base64 of 32 random bytes (`openssl rand -base64 32`). Unset: stored
    /// plainly (never logged, never returned).
    pub secrets_key: Option<Secret>,
    /// WhatsApp: Graph API base URL with its pinned version, for bots that
    /// set none. Default `https://graph.facebook.com/v23.0`.
    pub graph_base_url: String,
    /// Seconds one request to a provider (Graph API, …) may take. Default
    /// 10. Also read as `graph_timeout`.
    #[serde(alias = "graph_timeout")]
    pub provider_timeout: f64,
    /// Delays in seconds before each retry of a provider call that failed
    /// on a transient error (5xx, timeout, connection); its length is the
    /// number of retries. Default `[0.5, 2]`. Also read as
    /// `graph_retry_schedule`.
    #[serde(alias = "graph_retry_schedule")]
    pub provider_retry_schedule: Vec<f64>,
    /// Messages per second to one phone number (reference: 1); 0 disables.
    pub phone_rate_limit: u32,
    /// Messages per second per token (reference: 10); 0 disables.
    pub send_rate_limit: u32,
    /// Telegram: messages per second per bot (the Bot API's flood limit);
    /// over it: 2009. 0 disables. Default 30.
    pub telegram_rate_limit: u32,
    /// Seconds events are kept in each organization's log for resume and
    /// `GetEvents` (never trimmed past what a webhook still has to
    /// deliver). Default 604800 (7 days).
    pub event_retention: f64,
    /// Most events kept per organization. Default 1,000,000.
    pub event_retention_count: u64,
    /// Seconds without a message after which an open conversation closes
    /// (`onUserConversation`); 0 = never. Default 86400.
    pub conversation_idle_timeout: f64,
    /// Seconds between template cache syncs of each bot whose channel has
    /// templates (WhatsApp). Default 3600.
    pub template_refresh: f64,
    /// Sandbox (test keys): seconds after a simulated send at which it
    /// becomes sent, delivered and read (each channel uses the first acks
    /// it has: SMS sent and delivered; Telegram none past sent). Default
    /// `[1, 2, 5]`.
    pub sandbox_ack_delays: Vec<f64>,
    /// Bots to create or update at start (config file only), e.g.
    /// `[[bots]]` with `botID`, `kind`, `name` and the settings of its
    /// channel (WhatsApp: `phone_number_id`, `waba_id`, `access_token`,
    /// `app_secret`, `verify_token`, `graph_base_url`); `org` defaults to
    /// `default`.
    pub bots: Vec<BotConfig>,
    /// Routes to create or replace at start (config file only), e.g.
    /// `[[routes]]` with `name`, `botID` and `steps` (as `SetRoute`'s,
    /// `protocol/routes.md`); `org` default `default`. A route that does
    /// not validate stops the start.
    pub routes: Vec<RouteConfig>,
}

/// A route of the config file (`[[routes]]`).
#[derive(Debug, Clone, Deserialize)]
pub struct RouteConfig {
    /// Organization id. Default `default`.
    #[serde(default = "default_org")]
    pub org: String,
    /// The route's name.
    pub name: String,
    /// The bot its sends go through.
    #[serde(rename = "botID")]
    pub bot_id: u64,
    /// The steps, as `SetRoute` takes them.
    pub steps: Vec<serde_json::Value>,
}

/// A bot of the config file (`[[bots]]`).
#[derive(Debug, Clone, Deserialize)]
pub struct BotConfig {
    /// Organization id. Default `default`.
    #[serde(default = "default_org")]
    pub org: String,
    /// The bot's numeric id.
    #[serde(rename = "botID")]
    pub bot_id: u64,
    /// whatsapp, sms, telegram or web.
    pub kind: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The settings of its channel (`crate::channel::SETTINGS`), e.g. a
    /// WhatsApp bot's `access_token`; every value is redacted in `Debug`.
    /// Unknown names are refused at start.
    #[serde(flatten)]
    pub settings: std::collections::BTreeMap<String, Secret>,
}

fn default_org() -> String {
    "default".into()
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            data_dir: PathBuf::from("./convgate-data"),
            store: None,
            store_pool: 4,
            bus: None,
            bus_prefix: "convgate".into(),
            lease_timeout: 10.0,
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
            public_base_url: None,
            admin_token: None,
            bootstrap_token: None,
            heartbeat_timeout: 180.0,
            max_sockets_per_token: 1,
            max_message_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 0,
            max_connections_per_ip: 0,
            header_read_timeout: 10.0,
            body_read_timeout: 30.0,
            keepalive_timeout: 60.0,
            tls_handshake_timeout: 10.0,
            connect_timeout: 10.0,
            auth_failure_limit: 20,
            max_user_data_bytes: 64 * 1024,
            max_tags_per_user: 100,
            max_tags_per_org: 1000,
            max_bots_per_org: 100,
            max_agents_per_org: 1000,
            max_routes_per_org: 1000,
            max_pending_callbacks_per_org: 100_000,
            console_session_ttl: 43_200.0,
            console_sign_in_limit: 10,
            log_format: "text".into(),
            socket_queue: 1024,
            write_timeout: 10.0,
            rate_limit: 1000,
            log: "info".into(),
            allow_private_webhooks: false,
            webhook_timeout: 15.0,
            webhook_retry_schedule: vec![
                0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0,
            ],
            webhook_concurrency: 8,
            webhook_secret_overlap: 86400.0,
            secrets_key: None,
            graph_base_url: "https://graph.facebook.com/v23.0".into(),
            provider_timeout: 10.0,
            provider_retry_schedule: vec![0.5, 2.0],
            phone_rate_limit: 1,
            send_rate_limit: 10,
            telegram_rate_limit: 30,
            template_refresh: 3600.0,
            sandbox_ack_delays: vec![1.0, 2.0, 5.0],
            conversation_idle_timeout: 86400.0,
            event_retention: 604_800.0,
            event_retention_count: 1_000_000,
            bots: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// Flags of `convgate serve`; each also reads `CONVGATE_<KEY>`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Optional TOML file with any of the keys below.
    #[arg(long, env = "CONVGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CONVGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./convgate-data].
    #[arg(long, env = "CONVGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL to keep state in, shared by several nodes [default:
    /// the embedded store under --data-dir].
    #[arg(long, env = "CONVGATE_STORE", hide_env_values = true)]
    pub store: Option<Secret>,
    /// Connections to --store for reads [default: 4].
    #[arg(long, env = "CONVGATE_STORE_POOL")]
    pub store_pool: Option<usize>,
    /// NATS URL linking the nodes that share --store [default: one node].
    #[arg(long, env = "CONVGATE_BUS")]
    pub bus: Option<String>,
    /// Subject prefix on --bus [default: convgate].
    #[arg(long, env = "CONVGATE_BUS_PREFIX")]
    pub bus_prefix: Option<String>,
    /// Seconds before a dead node's workers' lease is taken over [default: 10].
    #[arg(long, env = "CONVGATE_LEASE_TIMEOUT")]
    pub lease_timeout: Option<f64>,
    /// PEM certificate chain (serve WSS/HTTPS).
    #[arg(long, env = "CONVGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "CONVGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain text on a non-loopback address.
    #[arg(long, env = "CONVGATE_ALLOW_PLAINTEXT")]
    pub allow_plaintext: Option<bool>,
    /// Base URL providers reach this gateway at (e.g. https://gw.example.com).
    #[arg(long, env = "CONVGATE_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Instance admin token (CreateOrganization).
    #[arg(long, env = "CONVGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// First-start token of the `default` organization (40 hex characters).
    #[arg(long, env = "CONVGATE_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<Secret>,
    /// Seconds of socket silence before it is closed [default: 180].
    #[arg(long, env = "CONVGATE_HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Option<f64>,
    /// Live sockets per token [default: 1].
    #[arg(long, env = "CONVGATE_MAX_SOCKETS_PER_TOKEN")]
    pub max_sockets_per_token: Option<usize>,
    /// Largest WebSocket message, bytes [default: 65536].
    #[arg(long, env = "CONVGATE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest POST body, bytes [default: 65536].
    #[arg(long, env = "CONVGATE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Concurrent connections, 0 = what the file limit allows [default: 0].
    #[arg(long, env = "CONVGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Concurrent connections per IP address, 0 = unlimited [default: 0].
    #[arg(long, env = "CONVGATE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds for a request's line and headers [default: 10].
    #[arg(long, env = "CONVGATE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<f64>,
    /// Seconds for a request's body [default: 30].
    #[arg(long, env = "CONVGATE_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection is kept [default: 60].
    #[arg(long, env = "CONVGATE_KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Option<f64>,
    /// Seconds for a TLS handshake [default: 10].
    #[arg(long, env = "CONVGATE_TLS_HANDSHAKE_TIMEOUT")]
    pub tls_handshake_timeout: Option<f64>,
    /// Seconds for a WebSocket's connect [default: 10].
    #[arg(long, env = "CONVGATE_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<f64>,
    /// Failed authentications per second per address, 0 = unlimited [default: 20].
    #[arg(long, env = "CONVGATE_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<u32>,
    /// Largest custom data per user, bytes [default: 65536].
    #[arg(long, env = "CONVGATE_MAX_USER_DATA_BYTES")]
    pub max_user_data_bytes: Option<usize>,
    /// Most tags per user [default: 100].
    #[arg(long, env = "CONVGATE_MAX_TAGS_PER_USER")]
    pub max_tags_per_user: Option<usize>,
    /// Most tag definitions per organization [default: 1000].
    #[arg(long, env = "CONVGATE_MAX_TAGS_PER_ORG")]
    pub max_tags_per_org: Option<usize>,
    /// Most bots per organization [default: 100].
    #[arg(long, env = "CONVGATE_MAX_BOTS_PER_ORG")]
    pub max_bots_per_org: Option<usize>,
    /// Most agents per organization [default: 1000].
    #[arg(long, env = "CONVGATE_MAX_AGENTS_PER_ORG")]
    pub max_agents_per_org: Option<usize>,
    /// Most routes per organization [default: 1000].
    #[arg(long, env = "CONVGATE_MAX_ROUTES_PER_ORG")]
    pub max_routes_per_org: Option<usize>,
    /// Most queued delivery callbacks per organization [default: 100000].
    #[arg(long, env = "CONVGATE_MAX_PENDING_CALLBACKS_PER_ORG")]
    pub max_pending_callbacks_per_org: Option<usize>,
    /// Seconds a console session lasts [default: 43200].
    #[arg(long, env = "CONVGATE_CONSOLE_SESSION_TTL")]
    pub console_session_ttl: Option<f64>,
    /// Console sign-ins per minute per email and per address, 0 = unlimited [default: 10].
    #[arg(long, env = "CONVGATE_CONSOLE_SIGN_IN_LIMIT")]
    pub console_sign_in_limit: Option<u32>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "CONVGATE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Events queued per socket before closing it [default: 1024].
    #[arg(long, env = "CONVGATE_SOCKET_QUEUE")]
    pub socket_queue: Option<usize>,
    /// Seconds one socket write may take [default: 10].
    #[arg(long, env = "CONVGATE_WRITE_TIMEOUT")]
    pub write_timeout: Option<f64>,
    /// Commands per second per token, 0 = unlimited [default: 1000].
    #[arg(long, env = "CONVGATE_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Log filter [default: info].
    #[arg(long, env = "CONVGATE_LOG")]
    pub log: Option<String>,
    /// Allow http:// and private-address webhooks.
    #[arg(long, env = "CONVGATE_ALLOW_PRIVATE_WEBHOOKS")]
    pub allow_private_webhooks: Option<bool>,
    /// Seconds per webhook attempt [default: 15].
    #[arg(long, env = "CONVGATE_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<f64>,
    /// Comma-separated delays in seconds before each attempt
    /// [default: 0,5,300,1800,7200,18000,36000,36000].
    #[arg(long, env = "CONVGATE_WEBHOOK_RETRY_SCHEDULE", value_delimiter = ',')]
    pub webhook_retry_schedule: Option<Vec<f64>>,
    /// Comma-separated seconds after a sandbox send at which it becomes
    /// sent, delivered, read [default: 1,2,5].
    #[arg(long, env = "CONVGATE_SANDBOX_ACK_DELAYS", value_delimiter = ',')]
    pub sandbox_ack_delays: Option<Vec<f64>>,
    /// Deliveries in flight per webhook [default: 8].
    #[arg(long, env = "CONVGATE_WEBHOOK_CONCURRENCY")]
    pub webhook_concurrency: Option<usize>,
    /// Seconds a rotated-out secret keeps signing [default: 86400].
    #[arg(long, env = "CONVGATE_WEBHOOK_SECRET_OVERLAP")]
    pub webhook_secret_overlap: Option<f64>,
    /// Base64 of 32 bytes sealing credentials at rest.
    #[arg(long, env = "CONVGATE_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<Secret>,
    /// Graph API base URL [default: https://graph.facebook.com/v23.0].
    #[arg(long, env = "CONVGATE_GRAPH_BASE_URL")]
    pub graph_base_url: Option<String>,
    /// Seconds per provider request [default: 10] (alias --graph-timeout,
    /// CONVGATE_GRAPH_TIMEOUT).
    #[arg(long, env = "CONVGATE_PROVIDER_TIMEOUT", alias = "graph-timeout")]
    pub provider_timeout: Option<f64>,
    /// Comma-separated delays before each retry of a transient provider
    /// failure [default: 0.5,2] (alias --graph-retry-schedule,
    /// CONVGATE_GRAPH_RETRY_SCHEDULE).
    #[arg(
        long,
        env = "CONVGATE_PROVIDER_RETRY_SCHEDULE",
        alias = "graph-retry-schedule",
        value_delimiter = ','
    )]
    pub provider_retry_schedule: Option<Vec<f64>>,

    /// Messages per second to one phone number, 0 = unlimited [default: 1].
    #[arg(long, env = "CONVGATE_PHONE_RATE_LIMIT")]
    pub phone_rate_limit: Option<u32>,
    /// Messages per second per token, 0 = unlimited [default: 10].
    #[arg(long, env = "CONVGATE_SEND_RATE_LIMIT")]
    pub send_rate_limit: Option<u32>,
    /// Telegram messages per second per bot, 0 = unlimited [default: 30].
    #[arg(long, env = "CONVGATE_TELEGRAM_RATE_LIMIT")]
    pub telegram_rate_limit: Option<u32>,
    /// Seconds events are kept for resume and GetEvents [default: 604800].
    #[arg(long, env = "CONVGATE_EVENT_RETENTION")]
    pub event_retention: Option<f64>,
    /// Most events kept per organization [default: 1000000].
    #[arg(long, env = "CONVGATE_EVENT_RETENTION_COUNT")]
    pub event_retention_count: Option<u64>,
    /// Seconds without a message before a conversation closes, 0 = never [default: 86400].
    #[arg(long, env = "CONVGATE_CONVERSATION_IDLE_TIMEOUT")]
    pub conversation_idle_timeout: Option<f64>,
    /// Seconds between template syncs [default: 3600].
    #[arg(long, env = "CONVGATE_TEMPLATE_REFRESH")]
    pub template_refresh: Option<f64>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The config file is not valid TOML for [`Config`].
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// File, then environment and flags (clap already merged those two).
    pub fn load(args: ServeArgs) -> Result<Config, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
            }
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),* ; $($opt:ident),*) => {
                $(if let Some(v) = args.$field { cfg.$field = v; })*
                $(if let Some(v) = args.$opt { cfg.$opt = Some(v); })*
            };
        }
        overlay!(listen, data_dir, store_pool, bus_prefix, lease_timeout, allow_plaintext, heartbeat_timeout, max_sockets_per_token,
            max_message_bytes, max_body_bytes, max_connections, socket_queue, write_timeout,
            max_connections_per_ip, header_read_timeout, body_read_timeout, keepalive_timeout,
            tls_handshake_timeout, connect_timeout, auth_failure_limit, max_user_data_bytes,
            max_tags_per_user, max_tags_per_org, max_bots_per_org, max_agents_per_org, max_routes_per_org,
            max_pending_callbacks_per_org, console_session_ttl, console_sign_in_limit,
            log_format,
            rate_limit, log, allow_private_webhooks, webhook_timeout, webhook_retry_schedule,
            sandbox_ack_delays,
            webhook_concurrency, webhook_secret_overlap, graph_base_url, phone_rate_limit,
            send_rate_limit, telegram_rate_limit, template_refresh, conversation_idle_timeout,
            event_retention, event_retention_count;
            store, bus, tls_cert, tls_key, admin_token, bootstrap_token, secrets_key, public_base_url);
        // The old environment names, when the new ones are not given.
        let old = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let invalid = |name: &str| ConfigError::Invalid(format!("{name} must be seconds"));
        match (args.provider_timeout, old("CONVGATE_GRAPH_TIMEOUT")) {
            (Some(v), _) => cfg.provider_timeout = v,
            (None, Some(v)) => {
                cfg.provider_timeout = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid("CONVGATE_GRAPH_TIMEOUT"))?
            }
            (None, None) => {}
        }
        match (
            args.provider_retry_schedule,
            old("CONVGATE_GRAPH_RETRY_SCHEDULE"),
        ) {
            (Some(v), _) => cfg.provider_retry_schedule = v,
            (None, Some(v)) => {
                cfg.provider_retry_schedule = v
                    .split(',')
                    .map(|d| d.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| invalid("CONVGATE_GRAPH_RETRY_SCHEDULE"))?
            }
            (None, None) => {}
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together");
        }
        let positive = |s: f64| s.is_finite() && s > 0.0;
        if !positive(self.heartbeat_timeout) || !positive(self.write_timeout) {
            return bad("heartbeat_timeout and write_timeout must be positive seconds");
        }
        if !positive(self.webhook_timeout)
            || !self.webhook_secret_overlap.is_finite()
            || self.webhook_secret_overlap < 0.0
        {
            return bad("webhook_timeout must be positive, webhook_secret_overlap not negative");
        }
        if self.sandbox_ack_delays.len() > 3
            || self
                .sandbox_ack_delays
                .iter()
                .any(|d| !d.is_finite() || *d < 0.0)
        {
            return bad("sandbox_ack_delays takes up to 3 delays, each >= 0 seconds");
        }
        if self.webhook_retry_schedule.is_empty()
            || self
                .webhook_retry_schedule
                .iter()
                .any(|d| !d.is_finite() || *d < 0.0)
        {
            return bad("webhook_retry_schedule needs at least one delay, each >= 0 seconds");
        }
        if !positive(self.provider_timeout)
            || !positive(self.template_refresh)
            || self
                .provider_retry_schedule
                .iter()
                .any(|d| !d.is_finite() || *d < 0.0)
        {
            return bad("provider_timeout and template_refresh must be positive, provider_retry_schedule delays >= 0");
        }
        if !positive(self.console_session_ttl) {
            return bad("console_session_ttl must be positive seconds");
        }
        if !positive(self.event_retention) || self.event_retention_count == 0 {
            return bad("event_retention and event_retention_count must be positive");
        }
        if !self.conversation_idle_timeout.is_finite() || self.conversation_idle_timeout < 0.0 {
            return bad("conversation_idle_timeout must be seconds >= 0 (0 = never)");
        }
        if let Some(u) = &self.public_base_url {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "https" | "http") && p.host().is_some() => {}
                _ => return bad(
                    "public_base_url must be an absolute http(s) URL, e.g. https://gw.example.com",
                ),
            }
        }
        if reqwest::Url::parse(&self.graph_base_url).is_err() {
            return bad("graph_base_url must be an absolute URL");
        }
        if let Err(e) = crate::secrets::Sealer::new(self.secrets_key.as_ref()) {
            return Err(ConfigError::Invalid(e.to_string()));
        }
        if self.webhook_concurrency == 0 {
            return bad("webhook_concurrency must be positive");
        }
        if self.max_message_bytes < 64 || self.max_body_bytes < 64 {
            return bad("max_message_bytes and max_body_bytes must be at least 64");
        }
        if let Some(url) = &self.store {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return bad("store must be a postgres:// URL (unset: the embedded store)");
            }
        }
        if self.store_pool == 0 {
            return bad("store_pool must be positive");
        }
        if let Some(bus) = &self.bus {
            if !bus.starts_with("nats://") {
                return bad("bus must be a nats:// URL (unset: one node)");
            }
            if self.store.is_none() {
                return bad("bus links nodes that share a store: set store too");
            }
        }
        let subject_token = |t: &str| {
            !t.is_empty()
                && !t.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        };
        if !self.bus_prefix.split('.').all(subject_token) {
            return bad("bus_prefix must be NATS subject tokens joined by dots");
        }
        if !(self.lease_timeout.is_finite() && self.lease_timeout >= 0.3) {
            return bad("lease_timeout must be at least 0.3 seconds");
        }
        if self.max_sockets_per_token == 0 || self.socket_queue == 0 {
            return bad("max_sockets_per_token and socket_queue must be positive");
        }
        if ![
            self.header_read_timeout,
            self.body_read_timeout,
            self.keepalive_timeout,
            self.tls_handshake_timeout,
            self.connect_timeout,
        ]
        .into_iter()
        .all(positive)
        {
            return bad("header_read_timeout, body_read_timeout, keepalive_timeout, tls_handshake_timeout and connect_timeout must be positive seconds");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format must be text or json");
        }
        if let Some(t) = &self.bootstrap_token {
            if !is_token_shaped(t.expose()) {
                return bad("CONVGATE_BOOTSTRAP_TOKEN must be 40 lowercase hex characters");
            }
        }
        if self.tls_cert.is_none() && !self.allow_plaintext && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing plain text on non-loopback {}: give --tls-cert/--tls-key, or --allow-plaintext \
                 when a TLS-terminating proxy is in front",
                self.listen
            )));
        }
        Ok(())
    }

    /// [`Config::heartbeat_timeout`] as a duration.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_timeout)
    }

    /// A duration of `secs` seconds (settings are validated positive).
    pub fn secs(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    /// [`Config::write_timeout`] as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout)
    }
}

/// Whether `t` has the shape of an API token: 40 lowercase hex characters.
pub fn is_token_shaped(t: &str) -> bool {
    t.len() == 40 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let cfg = Config {
            admin_token: Some(Secret::new("hunter2-admin")),
            ..Config::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn plaintext_on_public_address_is_refused() {
        let cfg = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = Config {
            allow_plaintext: true,
            ..cfg
        };
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn bootstrap_token_must_be_40_hex() {
        let cfg = Config {
            bootstrap_token: Some(Secret::new("abc")),
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn file_keys_parse() {
        let cfg: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\nheartbeat_timeout = 0.5\n").unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.heartbeat_timeout(), Duration::from_millis(500));
        assert!(toml::from_str::<Config>("nope = 1").is_err());
    }

    #[test]
    fn old_provider_names_still_read_and_bot_settings_stay_redacted() {
        let cfg: Config = toml::from_str(
            "graph_timeout = 3.0\ngraph_retry_schedule = [1.0]\n[[bots]]\nbotID = 1\nkind = \"whatsapp\"\naccess_token = \"EAAG-secret\"\n",
        )
        .unwrap();
        assert_eq!(cfg.provider_timeout, 3.0);
        assert_eq!(cfg.provider_retry_schedule, vec![1.0]);
        assert_eq!(cfg.bots[0].settings["access_token"].expose(), "EAAG-secret");
        assert!(!format!("{cfg:?}").contains("EAAG-secret"));
    }

    #[test]
    fn routes_parse_from_the_file_with_their_steps() {
        let cfg: Config = toml::from_str(
            r#"
[[routes]]
name = "welcome"
botID = 3941
steps = [
  { send_text = { text = "Hi {{user.first_name}}!" } },
  { wait_for_reply = { timeout = 3600, save_as = "email", on_timeout = "bye" } },
  { label = "bye", send_text = { text = "Bye" } },
]
"#,
        )
        .unwrap();
        let r = &cfg.routes[0];
        assert_eq!(
            (r.org.as_str(), r.name.as_str(), r.bot_id),
            ("default", "welcome", 3941)
        );
        assert_eq!(r.steps[1]["wait_for_reply"]["timeout"], 3600);
        assert_eq!(r.steps[2]["label"], "bye");
        crate::routes::parse_steps(&r.steps).unwrap();
    }
}
