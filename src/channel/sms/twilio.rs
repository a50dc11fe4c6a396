//! The Twilio Programmable Messaging REST client: `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json` (form `To`, `From` or
//! `MessagingServiceSid`, `Body`, `StatusCallback`; HTTP Basic auth with the
//! Account SID and auth token), answered with the Message resource (`sid`,
//! `status`) or an error object (`code`, `message`, `more_info`, `status`).
//!
//! Sources: Twilio docs "Message resource: Create a Message", "Errors and
//! Warnings" (21211 invalid `To`, 21610 unsubscribed recipient, 20429 too
//! many requests).

use crate::secrets::Secret;
use serde::Deserialize;

/// What a send needs of a bot.
#[derive(Debug, Clone)]
pub struct Creds {
    /// API base, e.g. `https://api.twilio.com`.
    pub base: String,
    /// `AC…`, the account.
    pub account_sid: String,
    /// The account's auth token (redacted in `Debug`).
    pub auth_token: Secret,
    /// The sender: `("From", "+1…")` or `("MessagingServiceSid", "MG…")`.
    pub sender: (&'static str, String),
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioError {
    /// Twilio answered with an error: its `code` (or the HTTP status when
    /// the body had none), `message`, and the HTTP status.
    Api {
        /// Twilio error code, e.g. 21610.
        code: i64,
        /// `message`.
        desc: String,
        /// HTTP status.
        http: u16,
        /// `Retry-After` of a 429.
        retry_after: Option<std::time::Duration>,
    },
    /// No answer: connection failure or timeout.
    Unreachable(String),
}

impl TwilioError {
    /// Worth another try: 429 (20429), 5xx, no answer. Returns the wait a
    /// 429 asked for, if any.
    pub fn transient(&self) -> Option<Option<std::time::Duration>> {
        match self {
            TwilioError::Api {
                http, retry_after, ..
            } if *http == 429 || *http >= 500 => Some(*retry_after),
            TwilioError::Api { .. } => None,
            TwilioError::Unreachable(_) => Some(None),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
}

/// One attempt of `POST …/Messages.json` with `form`; the Message SID.
pub async fn create_message(
    client: &reqwest::Client,
    creds: &Creds,
    form: &[(&str, &str)],
) -> Result<String, TwilioError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        creds.base.trim_end_matches('/'),
        creds.account_sid
    );
    let res = client
        .post(&url)
        .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
        .form(form)
        .send()
        .await
        .map_err(|e| TwilioError::Unreachable(crate::net::error_chain(&e.without_url())))?;
    let http = res.status().as_u16();
    let retry_after = crate::net::retry_after_of(&res);
    let bytes = res
        .bytes()
        .await
        .map_err(|e| TwilioError::Unreachable(crate::net::error_chain(&e.without_url())))?;
    if (200..300).contains(&http) {
        return serde_json::from_slice::<MessageResource>(&bytes)
            .map(|m| m.sid)
            .map_err(|e| TwilioError::Api {
                code: i64::from(http),
                desc: format!("unreadable Twilio response: {e}"),
                http,
                retry_after: None,
            });
    }
    let (code, desc) = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => (b.code.unwrap_or(i64::from(http)), b.message),
        Err(_) => (i64::from(http), format!("HTTP {http}")),
    };
    Err(TwilioError::Api {
        code,
        desc,
        http,
        retry_after,
    })
}
