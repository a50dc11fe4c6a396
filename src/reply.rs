//! The reply envelope of the reference's "Response Format": `cmd`, `ok`,
//! `data`, `uid`, `error`, `errorCode`, plus the top-level fields some
//! commands add (`nextCursor`, later `phoneNumber`, `mid`, …).

use crate::error::ApiError;
use bytestring::ByteString;
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::time::Duration;

/// One reply, serialised as the reference's response object by
/// [`Reply::to_json`]. What most replies leave empty (an error, a
/// top-level `uid`, extension fields, POST-only hints) is boxed, so that a
/// reply, moved several times between a command and its transport, is
/// small (96 bytes rather than 216: moves without a `memcpy` call).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Name of the command answered (case sensitive): the command's own
    /// static name, or the caller's text echoed back in an error.
    pub cmd: Cow<'static, str>,
    /// 1 on success, 0 on error.
    pub ok: u8,
    /// Response data, when the command returns any: its JSON text,
    /// serialised once when set (or taken as stored, see
    /// [`Reply::with_json_data`]) rather than built as a `Value` tree first.
    /// Text, so that the reply is built as text and sent on a socket
    /// without being checked as UTF-8 again.
    pub data: Option<ByteString>,
    /// The rate-limit budget that applied (POST: `X-RateLimit-*`). Not JSON.
    pub rate: Option<RateInfo>,
    more: Option<Box<More>>,
}

/// The fields of a [`Reply`] that most replies leave empty.
#[derive(Debug, Clone, Default)]
struct More {
    /// User identifier, where the reference puts it at the top level.
    uid: Option<String>,
    /// Human-readable error (ok = 0).
    error: Option<String>,
    /// The reference's numeric error code (ok = 0).
    error_code: Option<u16>,
    /// Further top-level fields (extensions such as `nextCursor`).
    extra: Map<String, Value>,
    /// When rate limited: how long until a retry can succeed (POST sends it
    /// as `Retry-After`). Not part of the JSON.
    retry_after: Option<Duration>,
    /// HTTP status overriding the class of `errorCode`. Not JSON.
    status: Option<u16>,
    /// A reply replayed from an idempotency key (POST:
    /// `Idempotency-Replayed: true`): its JSON exactly as first sent.
    replayed: Option<ByteString>,
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

/// Longest `error` message, in characters.
pub const MAX_ERROR_CHARS: usize = 300;

/// Longest piece of input an error reply echoes (`cmd`), in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// `s` cut to `max` characters, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Appends `s` as a JSON string: as it is when it needs no escape (command
/// and field names, plain ASCII), else escaped by `serde_json`.
fn push_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialise"));
    }
}

impl Reply {
    /// `{"cmd":cmd,"ok":1}`. `cmd` is a command's own name: letters,
    /// digits and `_`, written without escaping.
    pub fn ok(cmd: &'static str) -> Reply {
        debug_assert!(cmd.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        Reply::named(Cow::Borrowed(cmd))
    }

    fn named(cmd: Cow<'static, str>) -> Reply {
        Reply {
            cmd,
            ok: 1,
            data: None,
            rate: None,
            more: None,
        }
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_default()
    }

    /// `{"cmd":cmd,"ok":0,"error":…,"errorCode":…}`. The message and the
    /// echoed `cmd` are cut to a short piece ([`MAX_ECHO_CHARS`]): an error
    /// never repeats a large input back.
    pub fn error(cmd: &str, e: &ApiError) -> Reply {
        Reply {
            ok: 0,
            more: Some(Box::new(More {
                error: Some(truncate(&e.message, MAX_ERROR_CHARS)),
                error_code: Some(e.code.as_u16()),
                extra: e
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                retry_after: e.retry_after,
                status: e.status,
                ..More::default()
            })),
            ..Reply::named(Cow::Owned(truncate(cmd, MAX_ECHO_CHARS)))
        }
    }

    /// Sets `data`.
    pub fn with_data(mut self, data: impl Serialize) -> Reply {
        self.data = Some(ByteString::from(
            serde_json::to_string(&data).expect("reply data serialises"),
        ));
        self
    }

    /// Sets `data` to JSON text that convgate itself serialised earlier (a
    /// stored record passed on); it is not parsed again.
    pub fn with_json_data(mut self, json: ByteString) -> Reply {
        self.data = Some(json);
        self
    }

    /// Sets the top-level `uid`.
    pub fn with_uid(mut self, uid: impl Into<String>) -> Reply {
        self.more().uid = Some(uid.into());
        self
    }

    /// Adds a top-level field.
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> Reply {
        self.set_field(name, value);
        self
    }

    /// Sets a top-level field.
    pub fn set_field(&mut self, name: &str, value: impl Into<Value>) {
        self.more().extra.insert(name.to_string(), value.into());
    }

    /// The top-level `uid`, if set.
    pub fn uid(&self) -> Option<&str> {
        self.more.as_ref()?.uid.as_deref()
    }

    /// The top-level field `name` (an extension such as `mid`), if set.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.more.as_ref()?.extra.get(name)
    }

    /// The reference's error code, when the reply is an error.
    pub fn error_code(&self) -> Option<u16> {
        self.more.as_ref()?.error_code
    }

    /// When rate limited: how long until a retry can succeed.
    pub fn retry_after(&self) -> Option<Duration> {
        self.more.as_ref()?.retry_after
    }

    /// Whether the reply is one replayed from an idempotency key.
    pub fn is_replayed(&self) -> bool {
        self.more.as_ref().is_some_and(|m| m.replayed.is_some())
    }

    /// HTTP status of this reply on the POST transport: 200 when ok, else
    /// the class of its `errorCode`.
    pub fn http_status(&self) -> u16 {
        if let Some(s) = self.more.as_ref().and_then(|m| m.status) {
            return s;
        }
        match self.error_code() {
            None => 200,
            Some(code) => crate::error::status_of(code),
        }
    }

    /// The JSON text of the reply.
    pub fn to_json(&self) -> String {
        let more = self.more.as_deref();
        if let Some(raw) = more.and_then(|m| m.replayed.as_ref()) {
            return raw.to_string();
        }
        // Written field by field in the reference's order (`cmd`, `ok`,
        // `data`, `uid`, `error`, `errorCode`, then extensions), so that
        // `data` goes in as the JSON text it already is.
        fn put(out: &mut String, name: &str, value: &impl Serialize) {
            out.push(',');
            push_str(out, name);
            out.push(':');
            out.push_str(&serde_json::to_string(value).expect("reply fields serialise"));
        }
        let data = self.data.as_ref().map_or(0, |d| d.len());
        let extra = more.map_or(0, |m| m.extra.len());
        let mut out = String::with_capacity(64 + self.cmd.len() + data + extra * 32);
        out.push_str("{\"cmd\":");
        match &self.cmd {
            // A command's own static name: plain ASCII ([`Reply::ok`]).
            Cow::Borrowed(name) => {
                out.push('"');
                out.push_str(name);
                out.push('"');
            }
            Cow::Owned(echoed) => push_str(&mut out, echoed),
        }
        out.push_str(",\"ok\":");
        if self.ok < 10 {
            out.push(char::from(b'0' + self.ok));
        } else {
            out.push_str(&self.ok.to_string());
        }
        if let Some(data) = &self.data {
            out.push_str(",\"data\":");
            out.push_str(data);
        }
        if let Some(more) = more {
            if let Some(uid) = &more.uid {
                put(&mut out, "uid", uid);
            }
            if let Some(error) = &more.error {
                put(&mut out, "error", error);
            }
            if let Some(code) = &more.error_code {
                put(&mut out, "errorCode", code);
            }
            for (name, value) in &more.extra {
                put(&mut out, name, value);
            }
        }
        out.push('}');
        out
    }

    /// A reply stored under an idempotency key, sent again byte for byte.
    pub fn replay(cmd: &str, json: &str) -> Reply {
        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        let code = v.get("errorCode").and_then(Value::as_u64).map(|c| c as u16);
        Reply {
            ok: u8::from(code.is_none()),
            more: Some(Box::new(More {
                error_code: code,
                replayed: Some(ByteString::from(json)),
                ..More::default()
            })),
            ..Reply::named(Cow::Owned(cmd.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, ErrorCode};
    use serde_json::json;

    /// A reply is moved several times on its way out: it stays small.
    #[test]
    fn a_reply_is_small() {
        assert!(
            std::mem::size_of::<Reply>() <= 96,
            "{}",
            std::mem::size_of::<Reply>()
        );
    }

    #[test]
    fn replies_are_the_reference_objects() {
        let user = json!({"uid": "1-wa3-1", "name": "Zoë \"Z\""});
        let ok = Reply::ok("GetUser").with_data(&user);
        let raw = Reply::ok("GetUser").with_json_data(ByteString::from(user.to_string()));
        for r in [ok, raw] {
            let v: Value = serde_json::from_str(&r.to_json()).unwrap();
            assert_eq!(v, json!({"cmd": "GetUser", "ok": 1, "data": user}));
        }
        let e = ApiError::new(ErrorCode::UnknownUser, "unknown user \"x\"");
        let r = Reply::error("GetUser", &e)
            .with_uid("1-wa3-1")
            .with_field("nextCursor", "a\"b");
        let text = r.to_json();
        assert!(text.starts_with(r#"{"cmd":"GetUser","ok":0,"#));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"cmd": "GetUser", "ok": 0, "uid": "1-wa3-1", "error": "unknown user \"x\"",
                   "errorCode": 1005, "nextCursor": "a\"b"})
        );
    }
}
