//! Fields shared by several commands, parsed once into their types: the
//! options every send by phone takes ([`SendOptions`]: `agentEmail`,
//! `webhookURL`, `webhookPayload`, `webhookHeaders`, `idempotencyKey`), a
//! send's idempotency key, `webhookHeaders`, and the `agentEmail` a send
//! names.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::Key;
use crate::model::{CallbackSpec, Org};
use serde_json::Value;

/// The options of a send to a phone number (reference, SendWhatsAppTemplate
/// and SendSMSMessage): the agent to assign the chat to, the delivery
/// callback (`webhookURL` with `webhookPayload` and `webhookHeaders`), and
/// the extension `idempotencyKey`.
#[derive(Debug)]
pub(crate) struct SendOptions {
    agent_email: Option<String>,
    webhook_url: Option<String>,
    webhook_payload: Option<Value>,
    webhook_headers: Vec<(String, String)>,
    /// The send's idempotency key.
    pub idem: Option<Key>,
}

impl SendOptions {
    /// Reads the options. Errors: 1017 a malformed `webhookPayload`,
    /// `webhookURL`, `webhookHeaders` or idempotency key; 2002 a non-string
    /// `agentEmail`.
    pub(crate) fn parse(f: &Fields) -> Result<SendOptions, ApiError> {
        let webhook_payload = match f.value("webhookPayload") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "webhookPayload must be an object",
                ))
            }
        };
        Ok(SendOptions {
            agent_email: f
                .opt_str("agentEmail", ErrorCode::UnknownAgent)?
                .map(str::to_string),
            webhook_url: f
                .opt_str("webhookURL", ErrorCode::InvalidJson)?
                .map(str::to_string),
            webhook_payload,
            webhook_headers: webhook_headers(f)?,
            idem: idempotency(f)?,
        })
    }

    /// The agent's email (checked: 2002) and the callback (the URL checked
    /// against the outbound address policy: 1017; headers sealed).
    pub(crate) fn resolve(
        self,
        ctx: &Ctx,
        org: &Org,
    ) -> Result<(Option<String>, Option<CallbackSpec>), ApiError> {
        let agent = agent_of(ctx, org, self.agent_email.as_deref())?.map(|a| a.email);
        if let Some(url) = &self.webhook_url {
            crate::net::check_url(url, ctx.config.allow_private_webhooks)
                .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("webhookURL: {e}")))?;
        }
        let callback = self.webhook_url.map(|url| CallbackSpec {
            url,
            headers: crate::messages::seal_headers(ctx, &self.webhook_headers),
            payload: self.webhook_payload,
        });
        Ok((agent, callback))
    }
}

/// The idempotency key of a send (`idempotencyKey` field, or the POST
/// `Idempotency-Key` header the transport copies into it) and the hash of
/// the request it names: SHA-256 of the fields other than `token` and the
/// key, keys sorted. Errors: 1017 a key that is not 1–255 visible ASCII
/// characters.
pub(crate) fn idempotency(f: &Fields) -> Result<Option<Key>, ApiError> {
    use sha2::{Digest, Sha256};
    let Some(key) = f.opt_str("idempotencyKey", ErrorCode::InvalidJson)? else {
        return Ok(None);
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "idempotencyKey must be 1-255 visible ASCII characters",
        ));
    }
    let mut h = Sha256::new();
    for (k, v) in f.canonical(&["token", "idempotencyKey"]) {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    Ok(Some(Key {
        key: key.to_string(),
        request_sha256: hex::encode(h.finalize()),
    }))
}

/// `webhookHeaders` (reference: "Array of headers for webhook callbacks"):
/// `[{"name":…,"value":…}]` (`key` for `name` also read), `["Name: value"]`,
/// or an object of names to values. At most 20; names and values must be
/// valid HTTP; `Host`, `Content-Length`, `Content-Type`, `Transfer-Encoding`
/// and `Connection` are refused. Error: 1017.
pub(crate) fn webhook_headers(f: &Fields) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidJson, format!("webhookHeaders: {m}"));
    let mut out = Vec::new();
    let pairs: Vec<(String, String)> = match f.value("webhookHeaders") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad(format!("{k} must have a string value"))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(a)) => a
            .iter()
            .map(|h| match h {
                Value::String(s) => s
                    .split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| bad(format!("{s:?} is not \"Name: value\""))),
                Value::Object(o) => {
                    let name = o
                        .get("name")
                        .or_else(|| o.get("key"))
                        .and_then(Value::as_str);
                    let value = o.get("value").and_then(Value::as_str);
                    match (name, value) {
                        (Some(n), Some(v)) => Ok((n.to_string(), v.to_string())),
                        _ => Err(bad("each header needs string name and value".into())),
                    }
                }
                _ => Err(bad(
                    "each header is an object or a \"Name: value\" string".into()
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("must be an array".into())),
    };
    if pairs.len() > 20 {
        return Err(bad("at most 20 headers".into()));
    }
    for (name, value) in pairs {
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("{name:?} is not a header name")))?;
        if matches!(
            n.as_str(),
            "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
        ) {
            return Err(bad(format!("{name} cannot be set")));
        }
        reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("the value of {name} is not a header value")))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The optional `agentEmail` of a send: must name an agent of the
/// organization (2002 otherwise; `CreateAgent` adds agents).
pub fn agent_of(
    ctx: &Ctx,
    org: &Org,
    email: Option<&str>,
) -> Result<Option<crate::model::Agent>, ApiError> {
    let Some(email) = email else {
        return Ok(None);
    };
    ctx.store
        .agent(&org.id, email.trim())?
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownAgent,
                format!("unable to assign to agent {email:?}: no such agent (CreateAgent)"),
            )
        })
}

/// The opt-in extension events a subscriber asks for (`events` of
/// `connect` and `SetWebhook`): a list of names from
/// [`crate::events::OPT_IN`]. Errors: 1017 not a list of strings, or an
/// unknown name.
pub(crate) fn opt_in_events(f: &Fields) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidJson, format!("events: {m}"));
    let list = match f.value("events") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("must be an array of event names".into())),
    };
    let mut out: Vec<String> = Vec::new();
    for v in list {
        let Some(name) = v.as_str() else {
            return Err(bad("must be an array of event names".into()));
        };
        if !crate::events::OPT_IN.contains(&name) {
            return Err(bad(format!(
                "{name:?} is not an opt-in event (known: {})",
                crate::events::OPT_IN.join(", ")
            )));
        }
        if !out.iter().any(|e| e == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// The opt-in events a `connect` envelope asks for (extension `events`).
/// Errors: as [`opt_in_events`].
pub fn connect_events(env: &super::Envelope<'_>) -> Result<Vec<String>, ApiError> {
    opt_in_events(&env.fields())
}

/// Where a `connect` asks to resume from (extension `resume`:
/// `{"epoch":…,"seq":N}`). Errors: 1017 not an object with a string
/// `epoch` and a non-negative integer `seq`.
pub fn connect_resume(env: &super::Envelope<'_>) -> Result<Option<(String, u64)>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidJson,
            "resume must be {\"epoch\":\"…\",\"seq\":N} from an earlier connected or event",
        )
    };
    match env.fields().value("resume") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            let epoch = o.get("epoch").and_then(Value::as_str).ok_or_else(bad)?;
            let seq = o.get("seq").and_then(Value::as_u64).ok_or_else(bad)?;
            Ok(Some((epoch.to_string(), seq)))
        }
        Some(_) => Err(bad()),
    }
}

/// A template send's or lookup's `templateName` and `language`, trimmed.
/// Errors: 3003 missing name, 3004 missing language.
pub(crate) fn template_of(f: &Fields) -> Result<(String, String), ApiError> {
    let name = f.req_str(
        "templateName",
        ErrorCode::MissingTemplateName,
        ErrorCode::MissingTemplateName,
    )?;
    let language = f.req_str(
        "language",
        ErrorCode::MissingTemplateLanguage,
        ErrorCode::MissingTemplateLanguage,
    )?;
    Ok((name.trim().to_string(), language.trim().to_string()))
}
