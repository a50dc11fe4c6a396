//! The Telegram Bot API client: `getMe`, `setWebhook` and `sendMessage` at
//! `{telegram_base_url}/bot{token}/{method}`, JSON in and out. Every answer
//! is `{"ok":true,"result":…}` or `{"ok":false,"error_code":…,
//! "description":…,"parameters":{"retry_after":…}}` (Bot API, "Making
//! requests"). The token is part of the URL, so errors are reported
//! without it (`reqwest::Error::without_url`).

use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Telegram answered `ok: false`.
    Refused {
        /// `error_code` (HTTP-like: 400, 401, 403, 429, …).
        code: i64,
        /// `description`, e.g. "Forbidden: bot was blocked by the user".
        desc: String,
        /// `parameters.retry_after` of a 429.
        retry_after: Option<Duration>,
    },
    /// No answer: connection failure, timeout, or an unreadable 5xx.
    Unreachable(String),
}

impl ApiError {
    /// Worth another try on the schedule: 5xx and no answer (a 429 waits
    /// for its own `retry_after`).
    pub fn transient(&self) -> bool {
        match self {
            ApiError::Refused { code, .. } => *code >= 500,
            ApiError::Unreachable(_) => true,
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

/// Calls `method` with `body`; the `result` on success.
pub async fn call(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let url = format!("{}/bot{token}/{method}", base.trim_end_matches('/'));
    let unreachable =
        |e: reqwest::Error| ApiError::Unreachable(crate::net::error_chain(&e.without_url()));
    let res = client
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(unreachable)?;
    let http = res.status().as_u16();
    let bytes = res.bytes().await.map_err(unreachable)?;
    match serde_json::from_slice::<Answer>(&bytes) {
        Ok(a) if a.ok => Ok(a.result),
        Ok(a) => Err(ApiError::Refused {
            code: a.error_code.unwrap_or(i64::from(http)),
            desc: a.description,
            retry_after: a
                .parameters
                .and_then(|p| p.retry_after)
                .map(Duration::from_secs),
        }),
        Err(_) if http >= 500 => Err(ApiError::Unreachable(format!("HTTP {http}"))),
        Err(e) => Err(ApiError::Refused {
            code: i64::from(http),
            desc: format!("unreadable Bot API answer: {e}"),
            retry_after: None,
        }),
    }
}
