//! The records convgate keeps: organizations, bots, users, tags and events.
//!
//! These are the store's vocabulary (it never speaks sled's) and, for
//! [`User`], exactly the reference's "User Object Fields" on the wire.

use crate::config::Secret;
use crate::domain::BotKind;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

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

/// A bot (extension `CreateBot`): the channel users belong to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bot {
    /// The reference's numeric `botID`, unique within the organization.
    #[serde(rename = "botID")]
    pub id: u64,
    /// The messaging platform.
    pub kind: BotKind,
    /// Display name.
    pub name: String,
    /// ISO 8601 UTC creation time.
    pub created: String,
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
