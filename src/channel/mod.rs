//! Channels: the only code that talks to messaging providers.
//!
//! Every provider implements one interface, [`Channel`], and is registered
//! once in [`Registry::builtin`]. The rest of convgate speaks only the
//! neutral vocabulary below: a bot's [`Settings`], [`Content`] to send, a
//! [`SendError`] classified as transient or permanent, and the
//! [`Inbound`] events a provider's webhook means. What those mean for users,
//! messages and acks is [`crate::messages`]; the provider-facing HTTP route
//! (`/channels/{kind}/{botID}`) is [`crate::transport::inbound`].
//!
//! - [`whatsapp`]: the WhatsApp Cloud API (Meta Graph API).
//! - [`sms`]: SMS through Twilio Programmable Messaging.
//! - [`telegram`]: the Telegram Bot API.
//!
//! # Adding a channel
//! A folder `channel/<kind>/` with a type implementing [`Channel`] (send,
//! verify, parse) and its settings, then two lines here: the settings in
//! [`SETTINGS`] and the channel in [`Registry::builtin`].
//! Bot settings, sealing, the inbound route, idempotency, acks, callbacks
//! and events come with the interface.
//!
//! # Why a trait object
//! Channels differ in everything but their shape, are few, and are chosen
//! per bot at run time; a `dyn Channel` per kind keeps each provider's code
//! in its own folder and keeps every caller free of `match kind` (an enum
//! over adapters would put each provider's name into every dispatching
//! function). The cost, one boxed future per provider call, is nothing next
//! to the provider's HTTP round trip.

pub mod sms;
pub mod telegram;
pub mod whatsapp;

use crate::domain::{BotKind, E164};
use crate::error::ApiError;
use crate::secrets::Secret;
use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One setting of a channel's bots: a `CreateBot`/`UpdateBot` field and a
/// `[[bots]]` key. Secret settings are sealed at rest and shown only as
/// `<name>_set`; URL settings must pass the outbound address policy;
/// derived settings are the channel's own ([`Channel::configure`]): shown,
/// never accepted from a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingSpec {
    /// Field name, e.g. `access_token`.
    pub name: &'static str,
    /// Sealed at rest, never returned.
    pub secret: bool,
    /// An absolute URL checked by [`crate::net::check_url`].
    pub url: bool,
    /// Set by the channel, not by commands.
    pub derived: bool,
    /// Shown as a JSON boolean (`"true"`/`"false"` stored).
    pub flag: bool,
}

impl SettingSpec {
    const fn new(name: &'static str, secret: bool, url: bool, derived: bool, flag: bool) -> Self {
        SettingSpec {
            name,
            secret,
            url,
            derived,
            flag,
        }
    }

    /// A plain text setting.
    pub const fn text(name: &'static str) -> Self {
        SettingSpec::new(name, false, false, false, false)
    }

    /// A URL setting (checked against the outbound address policy).
    pub const fn url(name: &'static str) -> Self {
        SettingSpec::new(name, false, true, false, false)
    }

    /// A secret setting (sealed, shown as `<name>_set`).
    pub const fn secret(name: &'static str) -> Self {
        SettingSpec::new(name, true, false, false, false)
    }

    /// A text setting the channel derives.
    pub const fn derived(name: &'static str) -> Self {
        SettingSpec::new(name, false, false, true, false)
    }

    /// A yes/no setting the channel derives.
    pub const fn derived_flag(name: &'static str) -> Self {
        SettingSpec::new(name, false, false, true, true)
    }
}

/// A bot's settings, opened for one use (secrets unsealed), with the bot's
/// id (provider URLs name it); `Debug` shows only the setting names.
#[derive(Clone, Default)]
pub struct Settings {
    bot_id: u64,
    values: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bot_id", &self.bot_id)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Settings {
    /// The settings of bot `bot_id` from `(name, value)` pairs.
    pub fn new(bot_id: u64, values: impl IntoIterator<Item = (String, Secret)>) -> Settings {
        Settings {
            bot_id,
            values: values.into_iter().collect(),
        }
    }

    /// The bot's id.
    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }

    /// Sets or replaces each of `values`.
    pub fn extend(&mut self, values: &BTreeMap<String, Secret>) {
        for (k, v) in values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(Secret::expose)
    }
}

/// Who a send goes to on the channel: the provider's address of the user
/// (WhatsApp: the number's digits) and, for phone-based channels, the
/// number (the per-phone rate limit applies to it).
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The provider's address of the user.
    pub address: String,
    /// The user's number, for phone-based channels.
    pub phone: Option<E164>,
}

/// What to send, in neutral terms.
#[derive(Debug, Clone)]
pub enum Content {
    /// Free text.
    Text {
        /// The text.
        body: String,
    },
    /// An approved template (WhatsApp "message templates").
    Template {
        /// Template name.
        name: String,
        /// Language code as the provider lists it.
        language: String,
        /// Parameters of the body component, in order.
        body: Vec<Value>,
        /// Parameters of the header component, if any.
        header: Option<Vec<Value>>,
    },
}

/// What a provider's refusal says about the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This message was refused (ack -1; the channel's error code).
    Message,
    /// The recipient cannot be reached on this channel at all (WhatsApp:
    /// not on WhatsApp): ack -2.
    RecipientGone,
    /// The recipient opted out or blocked the bot (SMS 21610, Telegram
    /// "blocked by the user"): the user is disabled (`onUserDisable`), ack
    /// -1, and the reply is 2006.
    Unsubscribed,
    /// The provider's flood limit: not sent, ack -1, the reply is 2009 and
    /// the send may be retried later (an idempotency key is released).
    Busy,
}

/// Why a send failed, classified for retries, acks and replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No answer from the provider (connection failure, timeout, or a
    /// transient refusal such as 5xx or 429 after the channel's retries on
    /// `provider_retry_schedule`): 2003.
    Unreachable(String),
    /// The provider refused the message: its error code and description.
    Rejected {
        /// The provider's error code (e.g. Graph 131047, Twilio 21211).
        code: i64,
        /// The provider's description.
        desc: String,
        /// What it says about the recipient.
        refusal: Refusal,
    },
}

/// What a provider says of a user's profile.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Full name, empty when unknown.
    pub name: String,
    /// First name, when the provider gives it apart (else split from `name`).
    pub first_name: Option<String>,
    /// Last name, when the provider gives it apart.
    pub last_name: Option<String>,
    /// Language code (e.g. `en`), when known.
    pub lang: Option<String>,
    /// The provider reports the profile as it is now (Telegram): a change
    /// updates the user (`onUserUpdate`). Otherwise (WhatsApp) the name only
    /// fills a user that has none.
    pub current: bool,
}

/// A message from a user, as a provider's webhook reports it.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The user's address on the channel (uid suffix: `<botID>-<ch>-<from>`).
    pub from: String,
    /// The user's number in E.164, for phone-based channels.
    pub phone: Option<String>,
    /// The sender's profile.
    pub profile: Profile,
    /// The provider's message id (dedupe: a redelivery has no second effect).
    pub provider_id: String,
    /// Unix ms when the user sent it, when the provider says.
    pub at_ms: Option<i64>,
    /// `typ` of the conversation row (text, image, …).
    pub typ: String,
    /// Text or caption.
    pub text: String,
    /// Provider media id of a media message.
    pub media_id: Option<String>,
    /// Provider id of the message this one quotes, if any.
    pub reply_to: Option<String>,
}

/// A delivery status of a message convgate sent.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// The provider's message id.
    pub provider_id: String,
    /// convgate's `mid`, when the provider echoes the reference the send
    /// carried (so a crash that lost the provider id loses nothing).
    pub reference: Option<String>,
    /// The ack it means (reference, "Message Acknowledgement Codes").
    pub ack: i8,
    /// The provider's error code and description of a failure.
    pub error: Option<(i64, String)>,
    /// Unix ms of the status, when the provider says.
    pub at_ms: Option<i64>,
}

/// What a provider's webhook means, in neutral terms.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A user wrote.
    Message(InboundMessage),
    /// A sent message moved (sent, delivered, read, failed).
    Status(StatusUpdate),
    /// A user opted out of messages or blocked the bot: disabled
    /// (`onUserDisable`).
    OptOut(UserRef),
    /// A user opted in again or unblocked the bot: enabled (`onUserEnable`).
    OptIn(UserRef),
}

/// The user an opt-out or opt-in is about.
#[derive(Debug, Clone)]
pub struct UserRef {
    /// The user's address on the channel (uid suffix).
    pub from: String,
    /// The user's number in E.164, for phone-based channels.
    pub phone: Option<String>,
    /// The user's profile.
    pub profile: Profile,
}

/// A request on a bot's provider-facing URL, as the channel verifies it.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// Path and query as received (`/channels/sms/3941?x=1`); signatures
    /// over a URL use `public_base_url` + this, never the `Host` header.
    pub uri: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
}

/// Settings a channel derives when a bot's settings change: `(name, value)`.
pub type Derived = Vec<(&'static str, String)>;

/// A plain HTTP answer to a provider (handshakes, refusals, acknowledgements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl HttpReply {
    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> HttpReply {
        HttpReply {
            status,
            content_type: "text/plain",
            body: body.into(),
        }
    }
}

/// One messaging provider. Implementations are plain structs holding an
/// HTTP client and their instance defaults; everything per bot arrives as
/// [`Settings`].
pub trait Channel: Send + Sync + 'static {
    /// The bot kind this channel serves.
    fn kind(&self) -> BotKind;

    /// The provider's name for messages, e.g. `the WhatsApp Cloud API`.
    fn provider(&self) -> &'static str;

    /// Checks that `settings` are enough to send. Errors: why not (1016).
    fn ready(&self, settings: &Settings) -> Result<(), String>;

    /// Where a send to the user `uid` with number `phone` goes. Errors: the
    /// reference's code when the user cannot be addressed (1006).
    fn recipient(&self, uid: &str, phone: &str) -> Result<Recipient, ApiError>;

    /// The longest text this channel sends in one message, in characters
    /// (1013 above it), when it is below the reference's 2000.
    fn max_text_chars(&self) -> Option<usize> {
        None
    }

    /// The ack a message has once the provider accepted it: 0 where
    /// statuses follow (WhatsApp, SMS), 1 "sent" where none ever come
    /// (Telegram has no delivery or read receipts).
    fn ack_on_accept(&self) -> i8 {
        0
    }

    /// Runs when a bot's settings change (`CreateBot`/`UpdateBot` with
    /// settings, `[[bots]]`), before anything is stored, with the bot's
    /// settings as they will be: checks them with the provider and returns
    /// the settings the channel derives (`(name, value)`, of its derived or
    /// secret settings). Errors refuse the change (nothing is stored).
    fn configure<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> Option<BoxFuture<'a, Result<Derived, ApiError>>> {
        let _ = settings;
        None
    }

    /// Sends `content` to `to`; `reference` is convgate's `mid`, passed to
    /// the provider where it echoes one back in statuses. Returns the
    /// provider's message id. Transient failures are retried inside.
    fn send<'a>(
        &'a self,
        settings: &'a Settings,
        to: &'a Recipient,
        content: &'a Content,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<String, SendError>>;

    /// Sandbox (test keys, issue 20): the provider message id a simulated
    /// send to `to` gets, in the provider's own format. No provider is
    /// called.
    fn sandbox_id(&self, to: &Recipient, mid: &str) -> String;

    /// Messages per second per bot the provider allows before it refuses
    /// them (Telegram's flood limit, `telegram_rate_limit`); 0: no such
    /// limit. With a shared store the budget is the cluster's, checked
    /// before [`Channel::send`] (which also checks this node's).
    fn per_bot_rate(&self) -> u32 {
        0
    }

    /// Sandbox: the provider's real refusal a recipient in the failure
    /// range ([`sandbox_fails`]) gets (WhatsApp 131026, Twilio 21211,
    /// Telegram 403 "bot was blocked by the user").
    fn sandbox_refusal(&self) -> SendError;

    /// Sandbox: the acks a simulated send then moves through, in order, one
    /// per entry of `sandbox_ack_delays` (reference, "Message
    /// Acknowledgement Codes"). Default sent, delivered, read.
    fn sandbox_acks(&self) -> &'static [i8] {
        &[1, 2, 3]
    }

    /// The error reply for a refused send (WhatsApp: 3002 with
    /// `whatsappErrorCode`/`whatsappErrorDesc`).
    fn rejected(&self, code: i64, desc: &str) -> ApiError;

    /// The reply fields naming a provider error on this channel's messages
    /// and callbacks, e.g. `("whatsappErrorCode", "whatsappErrorDesc")`.
    fn error_fields(&self) -> (&'static str, &'static str);

    /// Answers a `GET` on the bot's inbound URL (a subscription handshake);
    /// channels without one answer 405.
    fn handshake(&self, settings: &Settings, query: &HashMap<String, String>) -> HttpReply {
        let _ = (settings, query);
        HttpReply::text(405, "method not allowed\n")
    }

    /// Checks that a `POST` on the bot's inbound URL comes from the provider
    /// (signature or secret header), before the body is parsed. `Err`: the
    /// answer to give (401/403).
    fn verify(&self, settings: &Settings, req: &InboundRequest<'_>) -> Result<(), HttpReply>;

    /// What a verified body means. `Err`: the answer to give (400); an
    /// empty list for bodies the channel does not use (answered 2xx, so the
    /// provider does not retry them).
    fn parse(&self, body: &[u8]) -> Result<Vec<Inbound>, HttpReply>;

    /// The answer once a webhook is durably applied.
    fn accepted(&self) -> HttpReply {
        HttpReply::text(200, "ok\n")
    }

    /// The bot's approved templates as the provider lists them, for
    /// channels that have templates (`None` otherwise: 1016).
    fn templates<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> Option<BoxFuture<'a, Result<Vec<Value>, SendError>>> {
        let _ = settings;
        None
    }

    /// Whether the channel keeps per-user state ([`Channel::note_send`],
    /// [`Channel::note_inbound`]); when not, the state is neither read nor
    /// written around each message.
    fn keeps_state(&self) -> bool {
        false
    }

    /// Per-user channel state (WhatsApp: the customer-service window and
    /// the last template sent), kept by the store as JSON: notes an
    /// outbound message `mid` with `content`.
    fn note_send(&self, state: &mut Value, mid: &str, content: &Content) {
        let _ = (state, mid, content);
    }

    /// Notes an inbound message at `at_ms` in the user's state; returns the
    /// `mid` it answers when it quotes none (WhatsApp: the last template,
    /// whose ack becomes 10 "replied").
    fn note_inbound(&self, state: &mut Value, at_ms: i64) -> Option<String> {
        let _ = (state, at_ms);
        None
    }
}

/// Sandbox: a recipient whose address (number or chat id) ends in this
/// fails as the provider would refuse it ([`Channel::sandbox_refusal`]).
pub const SANDBOX_FAILURE_SUFFIX: &str = "0000";

/// Sandbox: whether a simulated send to `to` is refused.
pub fn sandbox_fails(to: &Recipient) -> bool {
    to.address.ends_with(SANDBOX_FAILURE_SUFFIX)
}

/// 16 random bytes as 32 lowercase hex characters, for simulated ids.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// The settings of each kind's bots. Static, so that commands can read
/// them while parsing, before any channel is at hand.
pub const SETTINGS: &[(BotKind, &[SettingSpec])] = &[
    (BotKind::Whatsapp, whatsapp::SETTINGS),
    (BotKind::Sms, sms::SETTINGS),
    (BotKind::Telegram, telegram::SETTINGS),
];

/// The settings of `kind`'s bots (none for a kind without a channel).
pub fn settings_of(kind: BotKind) -> &'static [SettingSpec] {
    SETTINGS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, s)| s)
}

/// The channels of this instance, by kind (cheap `Clone`).
#[derive(Clone, Default)]
pub struct Registry {
    channels: HashMap<BotKind, Arc<dyn Channel>>,
}

impl Registry {
    /// Every built-in channel, configured from `config`.
    pub fn builtin(config: &crate::config::Config) -> Registry {
        let mut r = Registry::default();
        r.register(Arc::new(whatsapp::WhatsApp::new(config)));
        r.register(Arc::new(sms::Sms::new(config)));
        r.register(Arc::new(telegram::Telegram::new(config)));
        r
    }

    /// Adds (or replaces) the channel of its kind.
    pub fn register(&mut self, channel: Arc<dyn Channel>) {
        self.channels.insert(channel.kind(), channel);
    }

    /// The channel serving `kind`, if any.
    pub fn get(&self, kind: BotKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `schedule` (seconds
/// before each retry, ±10% jitter) runs out; `transient` says which
/// failures are worth another try, and may ask for a longer wait (a
/// provider's `Retry-After`, at most the schedule's total).
pub async fn with_retries<T, E: std::fmt::Debug, F>(
    schedule: &[f64],
    mut attempt: impl FnMut() -> F,
    transient: impl Fn(&E) -> Option<Option<std::time::Duration>>,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Err(e) if n < schedule.len() => match transient(&e) {
                Some(asked) => {
                    let wait = asked.unwrap_or_else(|| crate::time::jittered(schedule[n]));
                    n += 1;
                    tracing::debug!(error = ?e, attempt = n, ?wait, "transient provider failure; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}
