//! The records convgate keeps: organizations, bots, users, tags and events.
//!
//! These are the store's vocabulary (it never speaks sled's) and, for
//! [`User`], exactly the reference's "User Object Fields" on the wire.

use crate::domain::BotKind;
use crate::secrets::Secret;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tenant: everything else is scoped by its `id`. One API token per
/// organization, kept only as its SHA-256 hash (`token_sha256`, hex).
#[derive(Clone, Serialize, Deserialize)]
pub struct Org {
    /// Stable identifier (`default` for the bootstrap organization).
    pub id: String,
    /// Display name given to `CreateOrganization`.
    pub name: String,
    /// Hex SHA-256 of the current API token.
    pub token_sha256: String,
    /// ISO 8601 UTC creation time.
    pub created: String,
    /// `DisableApi`: the token, sockets and deliveries of the organization
    /// are stopped until the admin's `EnableApi`.
    #[serde(default)]
    pub disabled: bool,
    /// The API key a caller used: `default` (the organization's token) or
    /// a named key (`CreateApiKey`). Set when a token resolves, not stored.
    #[serde(skip, default = "default_key")]
    pub key: String,
    /// A test key's view: `id` is then the organization's sandbox
    /// ([`sandbox_id`]). Set when a token resolves, not stored.
    #[serde(skip, default)]
    pub sandbox: bool,
    /// When the key was last used (Unix ms; shared by every cached view of
    /// it). Not stored: since the gateway started.
    #[serde(skip, default)]
    pub last_used: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

fn default_key() -> String {
    "default".into()
}

/// Suffix of a sandbox's organization id.
pub const SANDBOX_SUFFIX: &str = "~test";

/// The sandbox twin of organization `org`: its own users, tags, messages,
/// conversations, events, webhook and log, under this id.
pub fn sandbox_id(org: &str) -> String {
    format!("{org}{SANDBOX_SUFFIX}")
}

/// The live organization of `org` (itself, or the one whose sandbox it
/// is): where bot definitions and agents are kept, shared by both.
pub fn live_id(org: &str) -> &str {
    org.strip_suffix(SANDBOX_SUFFIX).unwrap_or(org)
}

/// A named API key of an organization (extension `CreateApiKey`), kept
/// with its token's SHA-256 only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's name, unique in the organization (`default` is the
    /// organization's own token).
    pub name: String,
    /// `live`, or `test` (the sandbox).
    pub mode: String,
    /// ISO 8601 UTC creation time.
    pub created: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A bot (extension `CreateBot`): the channel users belong to, with its
/// channel's settings ([`crate::channel::SETTINGS`]). Replies show
/// [`crate::bots::view`], never the sealed values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bot {
    /// The reference's numeric `botID`, unique on the instance (inbound
    /// provider URLs carry only the botID).
    #[serde(rename = "botID")]
    pub id: u64,
    /// The messaging platform.
    pub kind: BotKind,
    /// Display name.
    pub name: String,
    /// ISO 8601 UTC creation time.
    pub created: String,
    /// Plain settings of its channel (e.g. WhatsApp `phone_number_id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Secret settings of its channel (e.g. WhatsApp `access_token`), sealed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Sealed>,
}

/// A new message id: 24 hex characters, like the reference's `mid`s
/// (4 bytes of Unix seconds, then 8 random bytes).
pub fn new_mid() -> String {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&(chrono::Utc::now().timestamp() as u32).to_be_bytes());
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b[4..]);
    hex::encode(b)
}

/// A value sealed by [`crate::secrets::Sealer`] (`enc:v1:…` or `plain:…`);
/// `Debug` never prints it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Sealed(pub String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[sealed]")
    }
}

/// Who wrote a message (reference, GetConversationsFlat `sender`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// The user (customer).
    Client,
    /// An agent of the organization (`agentEmail` given).
    Agent,
    /// The API without an agent.
    System,
}

/// A delivery-status callback requested with a send (`webhookURL`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallbackSpec {
    /// Where ack changes are POSTed.
    pub url: String,
    /// `webhookHeaders` as `[name, value]` pairs, JSON then sealed.
    pub headers: Sealed,
    /// `webhookPayload`, echoed in every callback.
    pub payload: Option<serde_json::Value>,
}

/// One message of a conversation, inbound or outbound (reference,
/// GetConversation rows and GetMessageDetails).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// convgate's message id: 24 hex characters.
    pub mid: String,
    /// The user the message is with.
    pub uid: String,
    /// The bot it went through.
    pub bot_id: u64,
    /// client (inbound), agent or system (outbound).
    pub sender: Sender,
    /// text, image, video, audio, document, sticker, location, …
    pub typ: String,
    /// Text, caption, or a rendered template body.
    pub msg: String,
    /// Provider media id of a media message.
    #[serde(default)]
    pub media_id: Option<String>,
    /// ISO 8601 UTC time with milliseconds.
    pub dt: String,
    /// Acknowledgement code (reference, "Message Acknowledgement Codes").
    pub ack: i8,
    /// The provider's message id (WhatsApp `wamid.…`), once known
    /// (`wamid` in records of the WhatsApp-only layout).
    #[serde(default, alias = "wamid")]
    pub provider_id: Option<String>,
    /// Template name and language of a template send.
    #[serde(default)]
    pub template: Option<(String, String)>,
    /// Provider error code when `ack` is -1 or -2 (replies name it after
    /// the channel, e.g. `whatsappErrorCode`).
    #[serde(default, alias = "whatsapp_error_code")]
    pub error_code: Option<i64>,
    /// Provider error description when `ack` is -1 or -2.
    #[serde(default, alias = "whatsapp_error_desc")]
    pub error_desc: Option<String>,
    /// Delivery-status callback of the send.
    #[serde(default)]
    pub callback: Option<CallbackSpec>,
    /// Agent the send was assigned to.
    #[serde(default)]
    pub agent_email: Option<String>,
    /// The conversation it belongs to (extension `cid`); `None` for
    /// messages stored before conversations existed.
    #[serde(default)]
    pub cid: Option<String>,
}

/// An open conversation: one user's span of messages from open to close
/// (reference, "GetOpenConversations"; `protocol/conversations.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conversation {
    /// Conversation id: 24 hex characters, unique.
    pub cid: String,
    /// The user.
    pub uid: String,
    /// The bot it runs through.
    pub bot_id: u64,
    /// Unix ms when it opened.
    pub started_ms: i64,
    /// Email of the assigned agent, if any.
    pub agent: Option<String>,
    /// Agent messages so far.
    pub aco: u64,
    /// User messages so far.
    pub uco: u64,
    /// Unix ms of its last message (the idle timeout counts from here).
    pub last_ms: i64,
}

/// A closed conversation as kept for `GetConversationsFlat`: its rows as
/// they were at close, serialised once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosedConversation {
    /// The conversation as it was when it closed.
    pub conversation: Conversation,
    /// Unix ms when it closed.
    pub closed_ms: i64,
    /// Email of the agent who closed it, if one did.
    pub closed_by: Option<String>,
    /// Its rows, `GetConversation`'s shape plus `cid`, as a JSON array.
    pub rows: String,
}

/// An agent of the organization (extension `CreateAgent`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agent {
    /// Numeric agent id (`aid` of conversation rows).
    pub aid: u64,
    /// Email, the agent's key (matched case-insensitively).
    pub email: String,
    /// Display name.
    pub name: String,
    /// ISO 8601 UTC creation time.
    pub created: String,
}

/// An agent's console password (extension `SetAgentPassword`): its
/// Argon2id hash in PHC string form, and the generation that sessions
/// signed in with it carry. Setting a password bumps the generation, which
/// ends every session of the agent. `Debug` never prints the hash.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentPassword {
    /// `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    pub phc: String,
    /// Sessions are valid only while they carry this generation.
    pub generation: u64,
}

impl std::fmt::Debug for AgentPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPassword")
            .field("phc", &"[redacted]")
            .field("generation", &self.generation)
            .finish()
    }
}

/// A signed-in console session, stored under the SHA-256 of its id (the
/// cookie's value is never stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The agent's (live) organization.
    pub org: String,
    /// The agent's email as created.
    pub email: String,
    /// [`AgentPassword::generation`] at sign-in.
    pub generation: u64,
    /// Unix ms of the sign-in.
    pub created_ms: i64,
    /// Unix ms after which the session is refused (`console_session_ttl`).
    pub expires_ms: i64,
}

/// A send's reply kept under its idempotency key for 24 hours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotentReply {
    /// Hex SHA-256 of the request's fields (token and key excluded).
    pub request_sha256: String,
    /// The reply JSON as first sent.
    pub reply: String,
    /// Unix ms of the first request.
    pub created_ms: i64,
}

/// The templates of a bot as last synced from its provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TemplateCache {
    /// Unix ms of the last successful sync.
    pub synced_ms: i64,
    /// Template objects as the provider lists them (WhatsApp: `name`,
    /// `language`, `status`, `category`, `components`, `id`).
    pub templates: Vec<serde_json::Value>,
}

/// A delivery-status callback waiting to be POSTed (durable outbox).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackJob {
    /// Organization of the message.
    pub org: String,
    /// The message whose ack changed.
    pub mid: String,
    /// Destination (`webhookURL`).
    pub url: String,
    /// Sealed `[name, value]` pairs (`webhookHeaders`).
    pub headers: Sealed,
    /// The JSON body (reference, "Webhook Callbacks").
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix ms when it was queued.
    pub queued_ms: i64,
    /// Last failure, for logs and the dead-letter record.
    pub last_error: Option<String>,
}

/// A user object, field for field the reference's "User Object Fields".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    /// `<botID>-<channel>-<id>`, e.g. `73-tel-615940546`.
    pub uid: String,
    /// Full name.
    pub name: String,
    /// First word of `name`.
    pub first_name: String,
    /// Rest of `name`.
    pub last_name: String,
    /// Email address, may be empty.
    pub email: String,
    /// E.164 phone number, may be empty.
    pub phone: String,
    /// Platform display name: `WA3`, `CMS`, `Telegram`, `Web`.
    pub bot: String,
    /// Numeric bot id.
    #[serde(rename = "botID")]
    pub bot_id: u64,
    /// Language code, e.g. `en`.
    pub lang: String,
    /// ISO 8601 UTC creation time with milliseconds.
    pub created: String,
    /// Free-text notes (≤ 1024 characters).
    pub notes: String,
    /// Chat URL; empty until the agent console exists.
    pub url: String,
    /// Extension: the user opted out or blocked the bot (`onUserDisable`);
    /// automatic sends answer 2006. Absent (not `false`) when enabled, so a
    /// plain client sees the reference's object.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// A user as stored: the user object plus the tags set on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// The public user object.
    pub user: User,
    /// Tag names as they were created (`CreateUserTag`), in the order set.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A tag definition (`CreateUserTag`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tag {
    /// The name as created; matched case-insensitively.
    pub name: String,
    /// `#RRGGBB` or `#RGB`, may be empty.
    pub color: String,
    /// At most 100 characters, may be empty.
    pub description: String,
}

/// An event as logged and fanned out: its organization, its `seq`, and the
/// JSON object sent to sockets (and, later, webhooks), serialised once.
#[derive(Debug, Clone)]
pub struct Event {
    /// Organization the event belongs to; it is never sent elsewhere.
    pub org: String,
    /// Per-organization sequence number: strictly increasing, gap-free.
    pub seq: u64,
    /// The event object, e.g. `{"cmd":"onUserCreate","ok":1,"data":{…},"seq":1,"eventId":"…"}`.
    pub json: Bytes,
}

/// A webhook signing secret (`whsec_` + base64 of the key), and until when it
/// still signs after a rotation (Unix milliseconds; `None`: current secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningSecret {
    /// `whsec_…`; redacted in `Debug`.
    pub secret: Secret,
    /// Unix ms after which a rotated-out secret stops signing.
    pub expires_ms: Option<i64>,
}

/// The organization's webhook ("Configure Webhook" of the reference).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    /// Delivery URL (`https://`, or `http://` where private webhooks are allowed).
    pub url: String,
    /// Active secrets, current first; each delivery is signed with all of them.
    pub secrets: Vec<SigningSecret>,
    /// False after a 410 Gone (or until set again).
    pub enabled: bool,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// ISO 8601 UTC time it was set.
    pub created: String,
    /// Opt-in extension events it receives besides the reference's
    /// (`SetWebhook`'s `events`; [`crate::events::OPT_IN`]).
    #[serde(default)]
    pub events: Vec<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet acknowledged with a 2xx; an attempt is scheduled.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Every attempt of the schedule failed: a dead letter.
    Failed,
}

/// The delivery of one event to the organization's webhook (extension
/// `GetDeliveries` shows these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// The event's `eventId` (the `webhook-id` header).
    #[serde(rename = "eventId")]
    pub event_id: String,
    /// The event's `seq`.
    pub seq: u64,
    /// pending, delivered or failed.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// HTTP status of the last attempt, when one was received.
    #[serde(rename = "lastStatus")]
    pub last_status: Option<u16>,
    /// Transport error or refusal of the last attempt.
    #[serde(rename = "lastError")]
    pub last_error: Option<String>,
    /// ISO 8601 UTC time of the next attempt (pending only).
    #[serde(rename = "nextAttempt")]
    pub next_attempt: Option<String>,
    /// Unix ms when the delivery was queued.
    #[serde(rename = "queuedMs")]
    pub queued_ms: i64,
}

/// Who caused an event (extension `actor` of every event): `type` is `api`
/// (an API token or key, by its id — `default` for the organization's
/// token, never the token), `agent` (an email), `channel` (a provider's
/// webhook, by `botID`), `route` (a route name), `system` (the
/// maintenance tasks, webhook bookkeeping) or `admin` (the instance admin
/// token). A CRM drops events whose actor is itself to avoid echo loops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// api, agent, channel, route, system or admin.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The key's id, the agent's email, the botID, the route's name; `null`
    /// for system and admin.
    pub id: Option<String>,
}

impl Actor {
    /// The maintenance tasks and other internal work.
    pub fn system() -> Actor {
        Actor {
            kind: "system",
            id: None,
        }
    }

    /// An API token or key, by its id.
    pub fn api(key_id: &str) -> Actor {
        Actor {
            kind: "api",
            id: Some(key_id.to_string()),
        }
    }

    /// The instance admin token.
    pub fn admin() -> Actor {
        Actor {
            kind: "admin",
            id: None,
        }
    }

    /// A provider's webhook into bot `bot_id`.
    pub fn channel(bot_id: u64) -> Actor {
        Actor {
            kind: "channel",
            id: Some(bot_id.to_string()),
        }
    }

    /// A route's run, by the route's name.
    pub fn route(name: &str) -> Actor {
        Actor {
            kind: "route",
            id: Some(name.to_string()),
        }
    }

    /// An agent, by email.
    pub fn agent(email: &str) -> Actor {
        Actor {
            kind: "agent",
            id: Some(email.to_string()),
        }
    }
}

tokio::task_local! {
    /// The actor of the work running in this task: every event a write of
    /// this task emits carries it ([`crate::store::WriteTx::emit`]); unset:
    /// [`Actor::system`]. Set where work enters (a command, a provider
    /// webhook), so that no handler has to pass it along.
    pub static ACTOR: Actor;
}
