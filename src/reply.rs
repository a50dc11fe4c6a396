//! The reply envelope of the reference's "Response Format": `cmd`, `ok`,
//! `data`, `uid`, `error`, `errorCode`, plus the top-level fields some
//! commands add (`nextCursor`, later `phoneNumber`, `mid`, …).

use crate::error::ApiError;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::time::Duration;

/// One reply, serialised as the reference's response object.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// Name of the command answered (case sensitive).
    pub cmd: String,
    /// 1 on success, 0 on error.
    pub ok: u8,
    /// Response data, when the command returns any; serialised once, when
    /// set, rather than built as a `Value` tree first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// User identifier, where the reference puts it at the top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Human-readable error (ok = 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The reference's numeric error code (ok = 0).
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
    /// Further top-level fields (extensions such as `nextCursor`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// When rate limited: how long until a retry can succeed (POST sends it
    /// as `Retry-After`). Not part of the JSON.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    /// The rate-limit budget that applied (POST: `X-RateLimit-*`). Not JSON.
    #[serde(skip)]
    pub rate: Option<RateInfo>,
    /// HTTP status overriding the class of `errorCode`. Not JSON.
    #[serde(skip)]
    pub status: Option<u16>,
    /// A reply replayed from an idempotency key (POST: `Idempotency-Replayed: true`):
    /// its JSON exactly as first sent.
    #[serde(skip)]
    pub replayed: Option<Bytes>,
}

/// A token's rate-limit budget after a request, for the `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` and `X-RateLimit-Reset` headers (as 247Rep and
/// WhatsAPI send them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests allowed per window (the burst).
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Unix seconds when the budget is full again.
    pub reset: i64,
}

impl Reply {
    /// `{"cmd":cmd,"ok":1}`.
    pub fn ok(cmd: &str) -> Reply {
        Reply {
            cmd: cmd.to_string(),
            ok: 1,
            data: None,
            uid: None,
            error: None,
            error_code: None,
            extra: Map::new(),
            retry_after: None,
            rate: None,
            status: None,
            replayed: None,
        }
    }

    /// `{"cmd":cmd,"ok":0,"error":…,"errorCode":…}`.
    pub fn error(cmd: &str, e: &ApiError) -> Reply {
        Reply {
            ok: 0,
            error: Some(e.message.clone()),
            error_code: Some(e.code.as_u16()),
            extra: e
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            retry_after: e.retry_after,
            status: e.status,
            ..Reply::ok(cmd)
        }
    }

    /// Sets `data`.
    pub fn with_data(mut self, data: impl Serialize) -> Reply {
        self.data = Some(serde_json::value::to_raw_value(&data).expect("reply data serialises"));
        self
    }

    /// Sets `data` to JSON already serialised (a stored record passed on).
    pub fn with_raw_data(mut self, data: Box<RawValue>) -> Reply {
        self.data = Some(data);
        self
    }

    /// Sets the top-level `uid`.
    pub fn with_uid(mut self, uid: impl Into<String>) -> Reply {
        self.uid = Some(uid.into());
        self
    }

    /// Adds a top-level field.
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> Reply {
        self.extra.insert(name.to_string(), value.into());
        self
    }

    /// HTTP status of this reply on the POST transport: 200 when ok, else
    /// the class of its `errorCode`.
    pub fn http_status(&self) -> u16 {
        if let Some(s) = self.status {
            return s;
        }
        match self.error_code {
            None => 200,
            Some(code) => crate::error::status_of(code),
        }
    }

    /// The JSON text of the reply.
    pub fn to_json(&self) -> Bytes {
        if let Some(raw) = &self.replayed {
            return raw.clone();
        }
        Bytes::from(serde_json::to_vec(self).expect("replies serialise"))
    }

    /// A reply stored under an idempotency key, sent again byte for byte.
    pub fn replay(cmd: &str, json: &str) -> Reply {
        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        let code = v.get("errorCode").and_then(Value::as_u64).map(|c| c as u16);
        Reply {
            ok: u8::from(code.is_none()),
            error_code: code,
            replayed: Some(Bytes::from(json.to_string())),
            ..Reply::ok(cmd)
        }
    }
}
