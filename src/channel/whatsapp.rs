//! The WhatsApp Cloud API adapter (Meta Graph API).
//!
//! Sources: Cloud API reference "Messages" (`POST /{phone_number_id}/messages`,
//! response `messages[].id`), "Message templates" (`GET
//! /{waba_id}/message_templates`, cursor paging with `paging.next`),
//! "Webhooks" (`X-Hub-Signature-256`, the `hub.*` handshake, the `messages`
//! field's `messages[]` and `statuses[]`), and "Error codes" (Graph error
//! object `error.code`, `error.message`, `error.error_data.details`).

use crate::config::Secret;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;

/// What a send needs of a bot: its Graph API base, ids and token.
#[derive(Debug, Clone)]
pub struct Creds {
    /// Graph API base URL with version, e.g. `https://graph.facebook.com/v23.0`.
    pub base: String,
    /// Business phone number id.
    pub phone_number_id: String,
    /// WhatsApp Business Account id.
    pub waba_id: String,
    /// Access token (redacted in `Debug`).
    pub token: Secret,
}

/// A failed Graph API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// The Graph API answered with an error object (or a status without one).
    Api {
        /// `error.code` (e.g. 131047), or the HTTP status when the body had none.
        code: i64,
        /// `error.message` without its `(#code) ` prefix.
        desc: String,
        /// The HTTP status.
        http: u16,
    },
    /// No answer: connection failure or timeout, after every retry.
    Unreachable(String),
}

impl GraphError {
    fn transient(&self) -> bool {
        match self {
            GraphError::Api { http, .. } => *http >= 500,
            GraphError::Unreachable(_) => true,
        }
    }
}

/// The Graph API client: pooled, no redirects, no proxy, per-request timeout;
/// transient failures retried on `retry` (seconds before each retry, ±10% jitter).
#[derive(Clone)]
pub struct Graph {
    client: reqwest::Client,
    retry: Vec<f64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

/// `error_data` of a Graph error or a status `errors[]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorData {
    /// Longer explanation.
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<SentId>,
}

#[derive(Deserialize)]
struct SentId {
    id: String,
}

#[derive(Deserialize)]
struct TemplatesPage {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

fn strip_code_prefix(msg: &str) -> String {
    // "(#131047) Re-engagement message" → "Re-engagement message"
    match msg.strip_prefix("(#").and_then(|r| r.split_once(") ")) {
        Some((code, rest)) if code.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Most pages followed when listing templates (100 templates each).
const MAX_TEMPLATE_PAGES: usize = 50;

impl Graph {
    /// A client over `client` (built by the caller with its address policy).
    pub fn new(client: reqwest::Client, retry: Vec<f64>) -> Graph {
        Graph { client, retry }
    }

    async fn once(&self, req: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        let res = req
            .send()
            .await
            .map_err(|e| GraphError::Unreachable(crate::webhook::error_chain(&e)))?;
        let http = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| GraphError::Unreachable(crate::webhook::error_chain(&e)))?;
        if (200..300).contains(&http) {
            return serde_json::from_slice(&bytes).map_err(|e| GraphError::Api {
                code: i64::from(http),
                desc: format!("unreadable Graph API response: {e}"),
                http,
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => GraphError::Api {
                code: b.error.code.unwrap_or(i64::from(http)),
                desc: {
                    let d = strip_code_prefix(&b.error.message);
                    match b.error.error_data.and_then(|d| d.details) {
                        Some(details) if d.is_empty() => details,
                        _ => d,
                    }
                },
                http,
            },
            Err(_) => GraphError::Api {
                code: i64::from(http),
                desc: format!("HTTP {http}"),
                http,
            },
        })
    }

    /// Runs `make()` until it succeeds, fails for good, or retries run out.
    async fn with_retries(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, GraphError> {
        let mut attempt = 0;
        loop {
            match self.once(make()).await {
                Err(e) if e.transient() && attempt < self.retry.len() => {
                    let base = self.retry[attempt];
                    attempt += 1;
                    tracing::debug!(error = ?e, attempt, "transient Graph API failure; retrying");
                    let jitter = rand::thread_rng().gen_range(0.9..=1.1);
                    tokio::time::sleep(Duration::from_secs_f64(base * jitter)).await;
                }
                other => return other,
            }
        }
    }

    /// `POST {base}/{phone_number_id}/messages` with `body`; the new
    /// message's `wamid` on success.
    pub async fn send(&self, creds: &Creds, body: &Value) -> Result<String, GraphError> {
        let url = format!(
            "{}/{}/messages",
            creds.base.trim_end_matches('/'),
            creds.phone_number_id
        );
        let v = self
            .with_retries(|| {
                self.client
                    .post(&url)
                    .bearer_auth(creds.token.expose())
                    .json(body)
            })
            .await?;
        let sent: SendResponse = serde_json::from_value(v).map_err(|e| GraphError::Api {
            code: 200,
            desc: format!("unreadable send response: {e}"),
            http: 200,
        })?;
        sent.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| GraphError::Api {
                code: 200,
                desc: "send response without messages[].id".into(),
                http: 200,
            })
    }

    /// Every template of the bot's business account: `GET
    /// {base}/{waba_id}/message_templates`, following `paging.next` (same
    /// origin only) for at most 50 pages.
    pub async fn templates(&self, creds: &Creds) -> Result<Vec<Value>, GraphError> {
        let base = creds.base.trim_end_matches('/');
        let mut url = format!(
            "{base}/{}/message_templates?limit=100&fields=name,language,status,category,components,id",
            creds.waba_id
        );
        let origin = reqwest::Url::parse(base).ok().map(|u| u.origin());
        let mut out = Vec::new();
        for _ in 0..MAX_TEMPLATE_PAGES {
            let v = self
                .with_retries(|| self.client.get(&url).bearer_auth(creds.token.expose()))
                .await?;
            let page: TemplatesPage = serde_json::from_value(v).map_err(|e| GraphError::Api {
                code: 200,
                desc: format!("unreadable templates page: {e}"),
                http: 200,
            })?;
            out.extend(page.data);
            match page.paging.and_then(|p| p.next) {
                Some(next)
                    if reqwest::Url::parse(&next).ok().map(|u| u.origin()) == origin
                        && origin.is_some() =>
                {
                    url = next
                }
                _ => break,
            }
        }
        Ok(out)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn graph_error_prefix_is_stripped() {
        assert_eq!(
            strip_code_prefix("(#131047) Re-engagement message"),
            "Re-engagement message"
        );
        assert_eq!(strip_code_prefix("Invalid parameter"), "Invalid parameter");
    }
}
