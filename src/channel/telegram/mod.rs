//! The Telegram channel, through the Bot API.
//!
//! - [`bot_api`]: the HTTP client (`getMe`, `setWebhook`, `sendMessage`).
//! - [`update`]: the webhook's `Update` objects and what they mean.
//!
//! A bot's settings: `bot_token` (secret, from BotFather), an optional
//! `telegram_base_url` (default `https://api.telegram.org`), and
//! `webhook_secret` (secret; generated when not given). When a token is
//! set, convgate calls `getMe` (a token Telegram refuses stops the
//! command, nothing stored; the bot's `username` is kept) and, when
//! `public_base_url` is set, `setWebhook` with
//! `{public_base_url}/channels/telegram/{botID}`, the `webhook_secret` as
//! `secret_token`, and `allowed_updates` `message`, `edited_message`,
//! `my_chat_member` (`webhook_set` says whether it did).
//!
//! Users are `<botID>-tel-<chat id>`. Telegram has no delivery or read
//! receipts: a message it accepts is ack 1 and stays there. A user who
//! blocks the bot (`my_chat_member` → `kicked`, or a 403 on send) is
//! disabled; a message from them or unblocking enables them again.
//!
//! Flood limits (Bot API FAQ: about one message per second per chat, 30
//! per second per bot): the per-recipient limit (`phone_rate_limit`, 2007)
//! keys a Telegram user by chat; `telegram_rate_limit` per bot is this
//! channel's (2009). A 429's `retry_after` is waited for while the waits
//! stay within `provider_retry_schedule`'s total, else 2009.

pub mod bot_api;
pub mod update;

use super::{
    Channel, Content, Derived, HttpReply, Inbound, InboundRequest, Recipient, Refusal, SendError,
    SettingSpec, Settings,
};
use crate::domain::BotKind;
use crate::error::{ApiError, ErrorCode};
use bot_api::ApiError as BotApiError;
use futures_util::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde_json::json;
use std::num::NonZeroU32;
use std::time::Duration;

/// The settings of a Telegram bot.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec::secret("bot_token"),
    SettingSpec::url("telegram_base_url"),
    SettingSpec::secret("webhook_secret"),
    SettingSpec::derived("username"),
    SettingSpec::derived_flag("webhook_set"),
];

/// The update kinds convgate asks Telegram for (`allowed_updates`).
pub const ALLOWED_UPDATES: [&str; 3] = ["message", "edited_message", "my_chat_member"];

const DEFAULT_BASE: &str = "https://api.telegram.org";

/// The Telegram channel: the HTTP client, the retry schedule, the
/// instance's `public_base_url`, and the per-bot flood limit.
pub struct Telegram {
    client: reqwest::Client,
    retry: Vec<f64>,
    public_base_url: Option<String>,
    per_bot: Option<DefaultKeyedRateLimiter<u64>>,
    /// `telegram_rate_limit`.
    per_bot_rate: u32,
}

/// A `secret_token` for `setWebhook`: 32 characters of `A-Za-z0-9` (Telegram
/// allows 1–256 of `A-Z`, `a-z`, `0-9`, `_`, `-`).
fn new_secret_token() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..32)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

/// The reply for a Bot API refusal of a bot's settings: 1017 with
/// `telegramErrorCode`/`telegramErrorDesc`; 2003 when Telegram did not answer.
fn settings_error(what: &str, e: BotApiError) -> ApiError {
    match e {
        BotApiError::Refused { code, desc, .. } => ApiError::new(
            ErrorCode::InvalidJson,
            format!("{what}: Telegram refused it ({code} {desc})"),
        )
        .with_field("telegramErrorCode", code)
        .with_field("telegramErrorDesc", desc),
        BotApiError::Unreachable(why) => ApiError::new(
            ErrorCode::Timeout,
            format!("{what}: the Telegram Bot API did not answer: {why}"),
        ),
    }
}

impl Telegram {
    /// The channel with `config`'s provider timeout, retry schedule,
    /// `public_base_url` and `telegram_rate_limit`, over the guarded client.
    pub fn new(config: &crate::config::Config) -> Telegram {
        Telegram {
            client: crate::net::guarded_client(config, config.provider_timeout),
            retry: config.provider_retry_schedule.clone(),
            public_base_url: config
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            per_bot_rate: config.telegram_rate_limit,
            per_bot: NonZeroU32::new(config.telegram_rate_limit)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
        }
    }

    fn base(s: &Settings) -> &str {
        s.get("telegram_base_url").unwrap_or(DEFAULT_BASE)
    }

    /// `sendMessage`, with 5xx and timeouts retried on the schedule and a
    /// 429's `retry_after` waited for within the schedule's total.
    async fn send_text(
        &self,
        s: &Settings,
        token: &str,
        chat: i64,
        text: &str,
    ) -> Result<String, SendError> {
        let budget: f64 = self.retry.iter().sum();
        let (mut waited, mut retries) = (0.0, 0);
        let body = json!({"chat_id": chat, "text": text});
        loop {
            match bot_api::call(&self.client, Telegram::base(s), token, "sendMessage", &body).await
            {
                Ok(result) => {
                    let id = result["message_id"].as_i64().unwrap_or_default();
                    return Ok(update::provider_id(chat, id));
                }
                Err(BotApiError::Refused {
                    code: 429,
                    desc,
                    retry_after,
                }) => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1)).as_secs_f64();
                    if waited + wait > budget {
                        return Err(SendError::Rejected {
                            code: 429,
                            desc,
                            refusal: Refusal::Busy,
                        });
                    }
                    waited += wait;
                    tracing::debug!(wait, "Telegram flood control; waiting as asked");
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                }
                Err(e) if e.transient() && retries < self.retry.len() => {
                    tokio::time::sleep(crate::time::jittered(self.retry[retries])).await;
                    retries += 1;
                }
                Err(BotApiError::Refused { code, desc, .. }) if code >= 500 => {
                    return Err(SendError::Unreachable(format!("{code} {desc}")))
                }
                Err(BotApiError::Refused { code, desc, .. }) => {
                    return Err(SendError::Rejected {
                        code,
                        desc,
                        // In a private chat, 403 is "bot was blocked by the
                        // user" (or the user is deactivated).
                        refusal: if code == 403 {
                            Refusal::Unsubscribed
                        } else {
                            Refusal::Message
                        },
                    });
                }
                Err(BotApiError::Unreachable(why)) => return Err(SendError::Unreachable(why)),
            }
        }
    }
}

/// The refusal of a send beyond `telegram_rate_limit`.
pub const FLOODED: &str = "telegram_rate_limit messages per second per bot reached";

impl Channel for Telegram {
    fn per_bot_rate(&self) -> u32 {
        self.per_bot_rate
    }

    fn kind(&self) -> BotKind {
        BotKind::Telegram
    }

    fn provider(&self) -> &'static str {
        "the Telegram Bot API"
    }

    fn ready(&self, s: &Settings) -> Result<(), String> {
        match s.get("bot_token") {
            Some(_) => Ok(()),
            None => Err("has no bot_token (UpdateBot bot_token)".into()),
        }
    }

    /// The chat id from the uid `<botID>-tel-<chat id>`. Errors: 1006 when
    /// the uid names no chat.
    fn recipient(&self, uid: &str, _phone: &str) -> Result<Recipient, ApiError> {
        uid.rsplit_once("-tel-")
            .and_then(|(_, chat)| chat.parse::<i64>().ok())
            .map(|chat| Recipient {
                address: chat.to_string(),
                phone: None,
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidPhone,
                    format!("{uid} names no Telegram chat"),
                )
            })
    }

    fn ack_on_accept(&self) -> i8 {
        1
    }

    fn send<'a>(
        &'a self,
        settings: &'a Settings,
        to: &'a Recipient,
        content: &'a Content,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let token = settings
                .get("bot_token")
                .ok_or_else(|| SendError::Unreachable("the bot has no bot_token".into()))?;
            let Content::Text { body } = content else {
                return Err(SendError::Rejected {
                    code: 0,
                    desc: "Telegram bots have no templates".into(),
                    refusal: Refusal::Message,
                });
            };
            let chat: i64 = to
                .address
                .parse()
                .map_err(|_| SendError::Unreachable(format!("{} is not a chat id", to.address)))?;
            if let Some(l) = &self.per_bot {
                if l.check_key(&settings.bot_id()).is_err() {
                    return Err(SendError::Rejected {
                        code: 429,
                        desc: FLOODED.into(),
                        refusal: Refusal::Busy,
                    });
                }
            }
            self.send_text(settings, token, chat, body).await
        })
    }

    /// 2004 with `telegramErrorCode`/`telegramErrorDesc` (the Bot API's
    /// `error_code` and `description`).
    fn sandbox_id(&self, to: &Recipient, _mid: &str) -> String {
        let chat = to.address.parse().unwrap_or(0);
        update::provider_id(chat, rand::thread_rng().gen_range(1..i64::from(i32::MAX)))
    }

    fn sandbox_refusal(&self) -> SendError {
        SendError::Rejected {
            code: 403,
            desc: "Forbidden: bot was blocked by the user".into(),
            refusal: Refusal::Unsubscribed,
        }
    }

    fn sandbox_acks(&self) -> &'static [i8] {
        // Accepted is already "sent"; the Bot API has no receipts.
        &[]
    }

    fn rejected(&self, code: i64, desc: &str) -> ApiError {
        ApiError::new(ErrorCode::Internal, "Telegram refused the message")
            .with_field("telegramErrorCode", code)
            .with_field("telegramErrorDesc", desc)
    }

    fn error_fields(&self) -> (&'static str, &'static str) {
        ("telegramErrorCode", "telegramErrorDesc")
    }

    /// `X-Telegram-Bot-Api-Secret-Token` must equal the bot's
    /// `webhook_secret` (constant time): 401 otherwise.
    fn verify(&self, s: &Settings, req: &InboundRequest<'_>) -> Result<(), HttpReply> {
        let given = req
            .headers
            .get("x-telegram-bot-api-secret-token")
            .map(|v| v.as_bytes());
        match (s.get("webhook_secret"), given) {
            (Some(expected), Some(given))
                if bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given)) =>
            {
                Ok(())
            }
            _ => {
                tracing::debug!(
                    bot = s.bot_id(),
                    "Telegram update with a wrong or missing secret token"
                );
                Err(HttpReply::text(401, "invalid secret token\n"))
            }
        }
    }

    /// An `Update`; anything that is JSON but not an update convgate uses
    /// is acknowledged and ignored.
    fn parse(&self, body: &[u8]) -> Result<Vec<Inbound>, HttpReply> {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| HttpReply::text(400, "not a JSON update\n"))?;
        match serde_json::from_value::<update::Update>(v) {
            Ok(u) => Ok(u.events()),
            Err(e) => {
                tracing::debug!(error = %e, "Telegram update of a shape convgate does not use; ignored");
                Ok(Vec::new())
            }
        }
    }

    fn configure<'a>(
        &'a self,
        s: &'a Settings,
    ) -> Option<BoxFuture<'a, Result<Derived, ApiError>>> {
        let token = s.get("bot_token")?;
        Some(Box::pin(async move {
            let base = Telegram::base(s);
            let me = bot_api::call(&self.client, base, token, "getMe", &json!({}))
                .await
                .map_err(|e| settings_error("bot_token", e))?;
            let mut derived = vec![(
                "username",
                me["username"].as_str().unwrap_or_default().to_string(),
            )];
            let secret = match s.get("webhook_secret") {
                Some(given) => given.to_string(),
                None => {
                    let fresh = new_secret_token();
                    derived.push(("webhook_secret", fresh.clone()));
                    fresh
                }
            };
            let set = match &self.public_base_url {
                Some(public) => {
                    let url = format!("{public}/channels/telegram/{}", s.bot_id());
                    bot_api::call(
                        &self.client,
                        base,
                        token,
                        "setWebhook",
                        &json!({"url": url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES}),
                    )
                    .await
                    .map_err(|e| settings_error("setWebhook", e))?;
                    true
                }
                None => {
                    tracing::info!(
                        bot = s.bot_id(),
                        "public_base_url is not set: set this bot's webhook by hand with the Bot API's \
                         setWebhook (url: <your public URL>/channels/telegram/{}, secret_token: the \
                         webhook_secret given to UpdateBot, allowed_updates: {:?})",
                        s.bot_id(),
                        ALLOWED_UPDATES
                    );
                    false
                }
            };
            derived.push(("webhook_set", set.to_string()));
            Ok(derived)
        }))
    }
}
