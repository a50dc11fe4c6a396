//! The records convgate keeps: organizations, bots, users, tags and events.
//!
//! These are the store's vocabulary (it never speaks sled's) and, for
//! [`User`], exactly the reference's "User Object Fields" on the wire.

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
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org")
            .field("id", &self.id)
            .field("name", &self.name)
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
