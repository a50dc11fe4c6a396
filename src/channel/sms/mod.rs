//! The SMS channel, through Twilio Programmable Messaging.
//!
//! - [`twilio`]: the REST client (create a Message).
//! - [`webhook`]: `X-Twilio-Signature`, incoming messages, status callbacks,
//!   opt-out and opt-in keywords.
//!
//! A bot's settings are its Twilio account's `account_sid` and `auth_token`
//! (secret), the sender — `from` (an E.164 number) or
//! `messaging_service_sid` — and an optional `twilio_base_url` (default
//! `https://api.twilio.com`). Users are `<botID>-cms-<E.164 digits>`.
//!
//! Twilio signs its webhooks over the URL it called, so convgate checks the
//! signature over `public_base_url` + path + query (never the `Host`
//! header: behind a TLS-terminating proxy the two differ); without
//! `public_base_url` no SMS webhook can be verified and each is refused
//! (403, logged). Each send asks for status callbacks at the bot's inbound
//! URL, `{public_base_url}/channels/sms/{botID}`.

pub mod twilio;
pub mod webhook;

use super::{
    with_retries, Channel, Content, HttpReply, Inbound, InboundRequest, Recipient, Refusal,
    SendError, SettingSpec, Settings,
};
use crate::domain::{BotKind, E164};
use crate::error::{ApiError, ErrorCode};
use futures_util::future::BoxFuture;
use twilio::{Creds, TwilioError};

/// The settings of an SMS bot.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec::text("account_sid"),
    SettingSpec::secret("auth_token"),
    SettingSpec::text("from"),
    SettingSpec::text("messaging_service_sid"),
    SettingSpec::url("twilio_base_url"),
];

/// Twilio's limit for the body of one message, in characters (Twilio,
/// "Message resource": `Body` up to 1,600 characters).
pub const MAX_BODY_CHARS: usize = 1600;

/// Twilio error codes of a recipient who opted out (21610 "Attempt to send
/// to unsubscribed recipient"): the user is disabled, the reply is 2006.
fn unsubscribed(code: i64) -> bool {
    code == 21610
}

/// The SMS channel: the HTTP client, the retry schedule and the instance's
/// `public_base_url`.
pub struct Sms {
    client: reqwest::Client,
    retry: Vec<f64>,
    public_base_url: Option<String>,
    senders: Senders,
}

/// The numbers of recent senders, as `From` gave them: a sender who writes
/// again is not parsed again (libphonenumber's validation runs its
/// metadata's regular expressions: a tenth of an inbound SMS's CPU).
/// Bounded: emptied when it reaches [`Senders::MAX`] entries.
#[derive(Default)]
struct Senders(
    std::sync::Mutex<std::collections::HashMap<String, E164, foldhash::fast::RandomState>>,
);

impl Senders {
    const MAX: usize = 65_536;

    /// `from` in E.164, or `None` when it is not a valid phone number
    /// (kept only when valid).
    fn parse(&self, from: &str) -> Option<E164> {
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(phone) = lock().get(from) {
            return Some(phone.clone());
        }
        let phone = E164::parse(from).ok()?;
        let mut map = lock();
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(from.to_string(), phone.clone());
        Some(phone)
    }
}

impl Sms {
    /// The channel with `config`'s provider timeout, retry schedule and
    /// `public_base_url`, over the guarded client (a bot's
    /// `twilio_base_url` is an address its organization chose).
    pub fn new(config: &crate::config::Config) -> Sms {
        Sms {
            client: crate::net::guarded_client(config, config.provider_timeout),
            retry: config.provider_retry_schedule.clone(),
            public_base_url: config
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            senders: Senders::default(),
        }
    }

    fn creds(s: &Settings) -> Result<Creds, String> {
        let (Some(account_sid), Some(auth_token)) = (s.get("account_sid"), s.get("auth_token"))
        else {
            return Err("has no Twilio credentials (UpdateBot account_sid, auth_token)".into());
        };
        let sender = match (s.get("messaging_service_sid"), s.get("from")) {
            (Some(m), _) => ("MessagingServiceSid", m.to_string()),
            (None, Some(f)) => ("From", f.to_string()),
            (None, None) => {
                return Err("has no sender (UpdateBot from or messaging_service_sid)".into())
            }
        };
        Ok(Creds {
            base: s
                .get("twilio_base_url")
                .unwrap_or("https://api.twilio.com")
                .to_string(),
            account_sid: account_sid.to_string(),
            auth_token: crate::secrets::Secret::new(auth_token),
            sender,
        })
    }

    /// The bot's inbound URL, where Twilio posts messages and statuses.
    fn inbound_url(&self, bot_id: u64) -> Option<String> {
        self.public_base_url
            .as_ref()
            .map(|b| format!("{b}/channels/sms/{bot_id}"))
    }
}

impl Channel for Sms {
    fn kind(&self) -> BotKind {
        BotKind::Sms
    }

    fn provider(&self) -> &'static str {
        "Twilio"
    }

    fn ready(&self, s: &Settings) -> Result<(), String> {
        Sms::creds(s).map(|_| ())
    }

    fn recipient(&self, _uid: &str, phone: &str) -> Result<Recipient, ApiError> {
        let phone = E164::parse(phone).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidPhone,
                "the user has no valid phone number",
            )
        })?;
        Ok(Recipient {
            address: phone.as_str().to_string(),
            phone: Some(phone),
        })
    }

    fn max_text_chars(&self) -> Option<usize> {
        Some(MAX_BODY_CHARS)
    }

    fn send<'a>(
        &'a self,
        settings: &'a Settings,
        to: &'a Recipient,
        content: &'a Content,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(async move {
            let creds = Sms::creds(settings).map_err(SendError::Unreachable)?;
            let body = match content {
                Content::Text { body } => body.as_str(),
                Content::Template { .. } => {
                    return Err(SendError::Rejected {
                        code: 0,
                        desc: "SMS has no templates".into(),
                        refusal: Refusal::Message,
                    })
                }
            };
            let callback = self.inbound_url(settings.bot_id());
            let mut form = vec![
                ("To", to.address.as_str()),
                (creds.sender.0, creds.sender.1.as_str()),
                ("Body", body),
            ];
            if let Some(url) = &callback {
                form.push(("StatusCallback", url.as_str()));
            }
            let result = with_retries(
                &self.retry,
                || twilio::create_message(&self.client, &creds, &form),
                TwilioError::transient,
            )
            .await;
            result.map_err(|e| match e {
                // Still busy or failing after every retry: no answer (2003).
                TwilioError::Api { http, desc, .. } if e.transient().is_some() => {
                    SendError::Unreachable(format!("HTTP {http}: {desc}"))
                }
                TwilioError::Api { code, desc, .. } => SendError::Rejected {
                    code,
                    desc,
                    refusal: if unsubscribed(code) {
                        Refusal::Unsubscribed
                    } else {
                        Refusal::Message
                    },
                },
                TwilioError::Unreachable(why) => SendError::Unreachable(why),
            })
        })
    }

    /// 2005 "SMS sending error" with `smsErrorCode`/`smsErrorDesc`.
    fn sandbox_id(&self, _to: &Recipient, _mid: &str) -> String {
        // A Twilio MessageSid: `SM` + 32 hex characters.
        format!("SM{}", super::random_hex())
    }

    fn sandbox_refusal(&self) -> SendError {
        SendError::Rejected {
            code: 21211,
            desc: "Invalid 'To' Phone Number".into(),
            refusal: Refusal::Message,
        }
    }

    fn sandbox_acks(&self) -> &'static [i8] {
        &[1, 2]
    }

    fn rejected(&self, code: i64, desc: &str) -> ApiError {
        ApiError::new(ErrorCode::SmsError, "SMS sending error")
            .with_field("smsErrorCode", code)
            .with_field("smsErrorDesc", desc)
    }

    fn error_fields(&self) -> (&'static str, &'static str) {
        ("smsErrorCode", "smsErrorDesc")
    }

    /// `X-Twilio-Signature` over `public_base_url` + path + query and the
    /// form parameters, keyed with the auth token: 403 when missing or
    /// wrong, or when it cannot be checked (no `public_base_url`, no auth
    /// token).
    fn verify(&self, s: &Settings, req: &InboundRequest<'_>) -> Result<(), HttpReply> {
        let refuse = || Err(HttpReply::text(403, "invalid signature\n"));
        let Some(base) = &self.public_base_url else {
            tracing::warn!(
                bot = s.bot_id(),
                "an SMS webhook cannot be verified without public_base_url; refused"
            );
            return refuse();
        };
        let Some(token) = s.get("auth_token") else {
            tracing::warn!(
                bot = s.bot_id(),
                "SMS webhook for a bot without an auth token; refused"
            );
            return refuse();
        };
        let url = format!("{base}{}", req.uri);
        let sig = req
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        if webhook::signature_valid(token, &url, &webhook::params(req.body), sig) {
            Ok(())
        } else {
            tracing::debug!(
                bot = s.bot_id(),
                "SMS webhook with a wrong or missing signature"
            );
            refuse()
        }
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<Inbound>, HttpReply> {
        Ok(webhook::events(&webhook::params(body), |from| {
            self.senders.parse(from)
        }))
    }

    /// An empty TwiML response: nothing to answer the sender with.
    fn accepted(&self) -> HttpReply {
        HttpReply {
            status: 200,
            content_type: "text/xml",
            body: "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_parsed_once_and_only_numbers_are_kept() {
        let senders = Senders::default();
        let first = senders.parse("+1 415-555-2671").expect("a US number");
        assert_eq!(first.as_str(), "+14155552671");
        assert_eq!(senders.parse("+1 415-555-2671"), Some(first));
        assert_eq!(senders.parse("not a number"), None);
        assert_eq!(senders.parse("+999"), None);
        assert_eq!(
            senders.0.lock().unwrap().len(),
            1,
            "only valid numbers are kept"
        );
    }
}
