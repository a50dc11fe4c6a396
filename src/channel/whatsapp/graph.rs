//! The Graph API client of the WhatsApp Cloud API.
//!
//! Sources: Cloud API reference "Messages" (`POST /{phone_number_id}/messages`,
//! response `messages[].id`), "Message templates" (`GET
//! /{waba_id}/message_templates`, cursor paging with `paging.next`), and
//! "Error codes" (Graph error object `error.code`, `error.message`,
//! `error.error_data.details`).

use super::webhook::ErrorData;
use crate::secrets::Secret;
use serde::Deserialize;
use serde_json::Value;

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
            .map_err(|e| GraphError::Unreachable(crate::net::error_chain(&e.without_url())))?;
        let http = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| GraphError::Unreachable(crate::net::error_chain(&e.without_url())))?;
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
        crate::channel::with_retries(
            &self.retry,
            || self.once(make()),
            |e: &GraphError| e.transient().then_some(None),
        )
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_error_prefix_is_stripped() {
        assert_eq!(
            strip_code_prefix("(#131047) Re-engagement message"),
            "Re-engagement message"
        );
        assert_eq!(strip_code_prefix("Invalid parameter"), "Invalid parameter");
    }
}
