//! The WhatsApp Cloud API's webhooks: the `X-Hub-Signature-256` check and
//! the `messages` field's payload (Meta, "Webhooks": `messages[]` with
//! `contacts[]`, `statuses[]` with `errors[]`), read leniently (every field
//! defaulted) and turned into neutral [`Inbound`] events.

use crate::channel::{
    Inbound, InboundMessage as NeutralMessage, Profile as NeutralProfile, StatusUpdate,
};
use crate::domain::E164;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// `error_data` of a Graph error or a status `errors[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorData {
    /// Longer explanation.
    #[serde(default)]
    pub details: Option<String>,
}

/// Checks `X-Hub-Signature-256` (`sha256=` + hex HMAC-SHA256 of the raw
/// body keyed with the app secret), in constant time.
pub fn signature_valid(app_secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The body of a `messages` webhook (`object` = `whatsapp_business_account`).
#[derive(Debug, Deserialize)]
pub struct Notification {
    /// `whatsapp_business_account`.
    #[serde(default)]
    pub object: String,
    /// One entry per business account.
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// `entry[]`.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// `changes[]`.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// `entry[].changes[]`.
#[derive(Debug, Deserialize)]
pub struct Change {
    /// `messages` for messages and statuses.
    #[serde(default)]
    pub field: String,
    /// The change.
    #[serde(default)]
    pub value: ChangeValue,
}

/// `changes[].value`.
#[derive(Debug, Default, Deserialize)]
pub struct ChangeValue {
    /// `metadata.phone_number_id` names the business number.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Senders' profiles.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// Inbound messages.
    #[serde(default)]
    pub messages: Vec<InboundMessage>,
    /// Status updates of messages the business sent.
    #[serde(default)]
    pub statuses: Vec<Status>,
}

/// `value.metadata`.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// The business phone number id the webhook is about.
    #[serde(default)]
    pub phone_number_id: String,
}

/// `value.contacts[]`.
#[derive(Debug, Deserialize)]
pub struct Contact {
    /// The sender's WhatsApp id (digits of the phone number).
    pub wa_id: String,
    /// `profile.name`.
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// `contacts[].profile`.
#[derive(Debug, Deserialize)]
pub struct Profile {
    /// The sender's profile name.
    #[serde(default)]
    pub name: String,
}

/// `value.messages[]`.
#[derive(Debug, Deserialize)]
pub struct InboundMessage {
    /// Sender's WhatsApp id.
    pub from: String,
    /// `wamid.…`.
    pub id: String,
    /// Unix seconds, as a string.
    #[serde(default)]
    pub timestamp: String,
    /// text, image, video, audio, document, sticker, location, button, interactive, reaction, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `text.body`.
    #[serde(default)]
    pub text: Option<Text>,
    /// The message this one replies to (`context.id` is its wamid).
    #[serde(default)]
    pub context: Option<Context>,
    /// `button.text` of a quick-reply button.
    #[serde(default)]
    pub button: Option<Text>,
    /// Media objects by type.
    #[serde(default)]
    pub image: Option<Media>,
    /// Video.
    #[serde(default)]
    pub video: Option<Media>,
    /// Audio or voice note.
    #[serde(default)]
    pub audio: Option<Media>,
    /// Document.
    #[serde(default)]
    pub document: Option<Media>,
    /// Sticker.
    #[serde(default)]
    pub sticker: Option<Media>,
    /// The whole message, for types without a dedicated field.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// `text` (and `button`): `body` or `text`.
#[derive(Debug, Deserialize)]
pub struct Text {
    /// `text.body`.
    #[serde(default)]
    pub body: Option<String>,
    /// `button.text`.
    #[serde(default)]
    pub text: Option<String>,
}

/// `context`.
#[derive(Debug, Deserialize)]
pub struct Context {
    /// wamid of the message replied to.
    #[serde(default)]
    pub id: Option<String>,
}

/// A media object: `id`, `caption`, `mime_type`, `sha256`.
#[derive(Debug, Deserialize)]
pub struct Media {
    /// Media id (download through `GET /{media_id}`).
    #[serde(default)]
    pub id: Option<String>,
    /// Caption, when given.
    #[serde(default)]
    pub caption: Option<String>,
}

impl InboundMessage {
    /// `(typ, msg, media id)` for the conversation row.
    pub fn content(&self) -> (String, String, Option<String>) {
        let media = match self.kind.as_str() {
            "image" => self.image.as_ref(),
            "video" => self.video.as_ref(),
            "audio" => self.audio.as_ref(),
            "document" => self.document.as_ref(),
            "sticker" => self.sticker.as_ref(),
            _ => None,
        };
        if let Some(m) = media {
            return (
                self.kind.clone(),
                m.caption.clone().unwrap_or_default(),
                m.id.clone(),
            );
        }
        let text = match self.kind.as_str() {
            "text" => self.text.as_ref().and_then(|t| t.body.clone()),
            "button" => self.button.as_ref().and_then(|t| t.text.clone()),
            _ => None,
        };
        match text {
            Some(t) => (
                if self.kind == "button" {
                    "text".into()
                } else {
                    self.kind.clone()
                },
                t,
                None,
            ),
            None => (
                self.kind.clone(),
                self.rest
                    .get(&self.kind)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                None,
            ),
        }
    }
}

/// `value.statuses[]`.
#[derive(Debug, Deserialize)]
pub struct Status {
    /// wamid of the message the status is about.
    pub id: String,
    /// sent, delivered, read, failed (or played, deleted, …).
    pub status: String,
    /// Unix seconds, as a string.
    #[serde(default)]
    pub timestamp: String,
    /// The user's WhatsApp id.
    #[serde(default)]
    pub recipient_id: String,
    /// Echo of the send's `biz_opaque_callback_data` (convgate puts its `mid` there).
    #[serde(default)]
    pub biz_opaque_callback_data: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub errors: Vec<StatusError>,
}

/// `statuses[].errors[]`.
#[derive(Debug, Deserialize)]
pub struct StatusError {
    /// Error code, e.g. 131050.
    pub code: i64,
    /// Short title.
    #[serde(default)]
    pub title: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
    /// Details.
    #[serde(default)]
    pub error_data: Option<ErrorData>,
}

impl StatusError {
    /// The best human description available.
    pub fn desc(&self) -> String {
        self.title
            .clone()
            .or_else(|| self.message.clone())
            .or_else(|| self.error_data.as_ref().and_then(|d| d.details.clone()))
            .unwrap_or_default()
    }
}

/// The ack code of a status (reference, "Message Acknowledgement Codes"),
/// or `None` for statuses without one (played, deleted, …).
pub fn ack_of_status(status: &str) -> Option<i8> {
    match status {
        "sent" => Some(1),
        "delivered" => Some(2),
        "read" => Some(3),
        "failed" => Some(-1),
        _ => None,
    }
}

/// Graph error codes meaning the number cannot receive WhatsApp messages:
/// ack -2 "User does not exist on WhatsApp" (131026 Message undeliverable).
pub fn not_on_whatsapp(code: i64) -> bool {
    code == 131026
}

impl Notification {
    /// The neutral events of this notification, in order: for each change of
    /// the `messages` field, its messages (named from `contacts[]`), then
    /// its statuses with an ack.
    pub fn events(&self) -> Vec<Inbound> {
        let mut out = Vec::new();
        for change in self.entry.iter().flat_map(|e| &e.changes) {
            if !change.field.is_empty() && change.field != "messages" {
                continue;
            }
            let v = &change.value;
            for m in &v.messages {
                let name = v
                    .contacts
                    .iter()
                    .find(|c| c.wa_id == m.from)
                    .and_then(|c| c.profile.as_ref())
                    .map(|p| p.name.trim().to_string())
                    .unwrap_or_default();
                let phone = E164::parse(&m.from)
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|_| format!("+{}", m.from));
                let (typ, text, media_id) = m.content();
                out.push(Inbound::Message(NeutralMessage {
                    from: m.from.clone(),
                    phone: Some(phone),
                    profile: NeutralProfile {
                        name,
                        ..NeutralProfile::default()
                    },
                    provider_id: m.id.clone(),
                    at_ms: unix_ms(&m.timestamp),
                    typ,
                    text,
                    media_id,
                    reply_to: m.context.as_ref().and_then(|c| c.id.clone()),
                }));
            }
            for s in &v.statuses {
                let Some(ack) = ack_of_status(&s.status) else {
                    continue;
                };
                let error = s.errors.first().map(|e| (e.code, e.desc()));
                let ack = match &error {
                    Some((code, _)) if ack < 0 && not_on_whatsapp(*code) => -2,
                    _ => ack,
                };
                out.push(Inbound::Status(StatusUpdate {
                    provider_id: s.id.clone(),
                    reference: s.biz_opaque_callback_data.clone(),
                    ack,
                    error,
                    at_ms: unix_ms(&s.timestamp),
                }));
            }
        }
        out
    }
}

/// Unix ms of a Graph timestamp (Unix seconds as a string).
/// Unix seconds as given by Meta (`timestamp`, a string) in ms; `None`
/// for text or a value out of range.
fn unix_ms(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().and_then(|s| s.checked_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_out_of_range_are_unknown_not_a_panic() {
        assert_eq!(unix_ms("1603059201"), Some(1_603_059_201_000));
        // Found by the whatsapp fuzz target.
        assert_eq!(unix_ms("2650555123222901293"), None);
        assert_eq!(unix_ms("soon"), None);
    }

    #[test]
    fn signature_matches_meta_format() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid("app-secret", body, Some(&good)));
        assert!(!signature_valid("other", body, Some(&good)));
        assert!(!signature_valid("app-secret", b"{}", Some(&good)));
        assert!(!signature_valid("app-secret", body, None));
        assert!(!signature_valid("app-secret", body, Some("sha1=00")));
    }
}
