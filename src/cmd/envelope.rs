//! The request object both transports carry, read once and borrowed.
//!
//! `{"token":…,"cmd":…, field: value, …}` (reference, "Making API calls" and
//! "Websocket API"). Parsing checks the whole text is one JSON object and
//! keeps every field as a view into the request's bytes: a string without
//! escapes is a slice of the input, any other value its raw JSON text. A
//! command decodes only the fields it reads, and a `GetUser` allocates
//! nothing for its envelope. Duplicate names: the last one counts, as in
//! `serde_json::Map`.

use crate::error::{ApiError, ErrorCode};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// A parsed request object, borrowing from the request's bytes: its `cmd`,
/// its `token` (if any), and all fields.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The command name as sent (empty when absent or `null`).
    pub cmd: Cow<'a, str>,
    /// The `token` field, when present and a string.
    pub token: Option<Cow<'a, str>>,
    /// Every field of the object in the order sent, `cmd` and `token` included.
    fields: Vec<(Cow<'a, str>, Field<'a>)>,
}

/// One field's value: a JSON string decoded (borrowed when it holds no
/// escape), or any other value as its raw JSON text.
#[derive(Debug, Clone)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Raw(&'a RawValue),
}

impl<'a> Envelope<'a> {
    /// Parses one JSON object. Errors: 1017 when `bytes` is not a JSON object
    /// (or not UTF-8) or `cmd` is not a string; 1001 when `token` is not a
    /// string.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, ApiError> {
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        // Validated once here: parsing from a `str` spares serde_json a
        // second UTF-8 check of every string and raw value.
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(&format!("invalid JSON object: not UTF-8: {e}")))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de
            .deserialize_map(ObjectVisitor)
            .and_then(|f| de.end().map(|()| f))
            .map_err(|e| invalid(&format!("invalid JSON object: {e}")))?;
        let mut env = Envelope {
            cmd: Cow::Borrowed(""),
            token: None,
            fields,
        };
        env.cmd = match env.get("cmd") {
            None => Cow::Borrowed(""),
            Some(Field::Str(s)) => s.clone(),
            Some(Field::Raw(_)) => {
                return Err(invalid("invalid JSON object: cmd must be a string"))
            }
        };
        env.token = match env.get("token") {
            None => None,
            Some(Field::Str(s)) => Some(s.clone()),
            Some(Field::Raw(_)) => {
                return Err(ApiError::new(ErrorCode::InvalidToken, "invalid API token"))
            }
        };
        Ok(env)
    }

    /// Sets string field `name` unless the request carries it (a transport's
    /// header standing for a field, e.g. `Idempotency-Key`).
    pub fn default_str(&mut self, name: &'a str, value: &'a str) {
        if self.get(name).is_none() {
            self.fields
                .push((Cow::Borrowed(name), Field::Str(Cow::Borrowed(value))));
        }
    }

    /// Typed access to the fields, for [`super::Command::parse`].
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields(&self.fields)
    }

    /// The last field called `name`; `null` counts as absent.
    fn get(&self, name: &str) -> Option<&Field<'a>> {
        lookup(&self.fields, name)
    }
}

fn lookup<'e, 'a>(fields: &'e [(Cow<'a, str>, Field<'a>)], name: &str) -> Option<&'e Field<'a>> {
    fields
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| !matches!(v, Field::Raw(r) if r.get() == "null"))
}

/// Reads the top-level object: names as (borrowed) strings, values raw.
struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Vec<(Cow<'de, str>, Field<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Name(name)) = map.next_key()? {
            let raw: &'de RawValue = map.next_value()?;
            fields.push((name, decode(raw).map_err(serde::de::Error::custom)?));
        }
        Ok(fields)
    }
}

/// A JSON string value is decoded now (a slice of the input when it holds
/// no escape); other values stay raw.
fn decode(raw: &RawValue) -> Result<Field<'_>, serde_json::Error> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Ok(Field::Raw(raw));
    }
    let inner = &text[1..text.len() - 1];
    Ok(Field::Str(if inner.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(text)?)
    } else {
        Cow::Borrowed(inner)
    }))
}

/// An object's name, borrowed from the input when it holds no escape.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Typed access to an envelope's fields, each failure with its field's code.
pub(crate) struct Fields<'e>(&'e [(Cow<'e, str>, Field<'e>)]);

impl<'e> Fields<'e> {
    /// An optional string; `null` counts as absent; another type → `invalid`.
    pub fn opt_str(&self, name: &str, invalid: ErrorCode) -> Result<Option<&'e str>, ApiError> {
        match lookup(self.0, name) {
            None => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s.as_ref())),
            Some(Field::Raw(_)) => Err(ApiError::new(invalid, format!("{name} must be a string"))),
        }
    }

    /// A required string: absent or empty → `missing`, another type → `invalid`.
    pub fn req_str(
        &self,
        name: &str,
        missing: ErrorCode,
        invalid: ErrorCode,
    ) -> Result<&'e str, ApiError> {
        match self.opt_str(name, invalid)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ApiError::new(missing, format!("missing {name}"))),
        }
    }

    /// The required `uid` (1025 when missing).
    pub fn uid(&self) -> Result<&'e str, ApiError> {
        self.req_str("uid", ErrorCode::MissingUid, ErrorCode::MissingUid)
    }

    /// Field `name` as a JSON value, `null` included (`None` when absent);
    /// for the fields that hold structures (`data`, `parameters`, …).
    pub fn value(&self, name: &str) -> Option<Value> {
        let (_, v) = self.0.iter().rev().find(|(k, _)| k == name)?;
        Some(to_value(v))
    }

    /// Field `name` as a JSON value, or why it cannot be one (e.g. a number
    /// out of range somewhere inside it).
    pub fn checked_value(&self, name: &str) -> Option<Result<Value, String>> {
        let (_, v) = self.0.iter().rev().find(|(k, _)| k == name)?;
        Some(match v {
            Field::Str(s) => Ok(Value::String(s.to_string())),
            Field::Raw(r) => serde_json::from_str(r.get()).map_err(|e| e.to_string()),
        })
    }

    /// An optional non-negative integer, also accepted as a numeric string
    /// (the reference's `botID` is an integer; clients send both).
    pub fn opt_u64(&self, name: &str, invalid: ErrorCode) -> Result<Option<u64>, ApiError> {
        let bad = || ApiError::new(invalid, format!("{name} must be a non-negative integer"));
        match lookup(self.0, name) {
            None => Ok(None),
            Some(Field::Str(s)) if s.trim().is_empty() => Ok(None),
            Some(Field::Str(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(Field::Raw(r)) => match to_value(&Field::Raw(r)) {
                Value::Number(n) => n.as_u64().map(Some).ok_or_else(bad),
                _ => Err(bad()),
            },
        }
    }

    /// The required `botID` (1008 missing, 1017 not a non-negative integer
    /// that fits 64 bits: a malformed field is a validation error, not an
    /// unknown bot).
    pub fn bot_id(&self) -> Result<u64, ApiError> {
        self.opt_u64("botID", ErrorCode::InvalidJson)?
            .ok_or_else(|| ApiError::new(ErrorCode::MissingBotId, "missing botID"))
    }

    /// An optional 0/1 flag (`overwrite`); `true`/`false` accepted too.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        let value = lookup(self.0, name).map(to_value);
        match value {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!("{name} must be 0 or 1"),
            )),
        }
    }

    /// Each field name but `except`, sorted, with its value in compact JSON
    /// (the last of duplicates): the canonical text an idempotency key's
    /// request hash is taken over.
    pub fn canonical(&self, except: &[&str]) -> Vec<(&'e str, String)> {
        let mut last = std::collections::BTreeMap::new();
        for (k, v) in self.0 {
            if !except.contains(&k.as_ref()) {
                last.insert(k.as_ref(), v);
            }
        }
        last.into_iter()
            .map(|(k, v)| (k, to_value(v).to_string()))
            .collect()
    }
}

/// A field as a `serde_json::Value`. Raw text was checked when the envelope
/// was parsed, so it parses again.
fn to_value(f: &Field) -> Value {
    match f {
        Field::Str(s) => Value::String(s.to_string()),
        Field::Raw(r) => serde_json::from_str(r.get()).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_unless_escaped_and_last_duplicate_wins() {
        let text = br#"{"cmd":"GetUser","uid":"a\"b","n":7,"uid2":"x","uid2":"y","z":null}"#;
        let env = Envelope::parse(text).unwrap();
        assert_eq!(env.cmd, "GetUser");
        assert!(matches!(env.cmd, Cow::Borrowed(_)));
        let f = env.fields();
        assert_eq!(f.uid().unwrap(), "a\"b");
        assert_eq!(
            f.opt_str("uid2", ErrorCode::InvalidJson).unwrap(),
            Some("y")
        );
        assert_eq!(f.opt_u64("n", ErrorCode::InvalidJson).unwrap(), Some(7));
        assert_eq!(f.opt_str("z", ErrorCode::InvalidJson).unwrap(), None);
        assert_eq!(f.value("z"), Some(Value::Null));
        assert_eq!(f.value("absent"), None);
        assert_eq!(
            f.opt_str("n", ErrorCode::InvalidName).unwrap_err().code,
            ErrorCode::InvalidName
        );
    }

    #[test]
    fn rejects_what_is_not_one_object() {
        for bad in [
            &b"[1]"[..],
            b"\"x\"",
            b"{\"a\":1} {}",
            b"{\"a\":",
            b"{\"cmd\":5}",
            b"\xff",
        ] {
            let e = Envelope::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidJson, "{bad:?}");
        }
        let e = Envelope::parse(br#"{"cmd":"GetUser","token":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidToken);
    }

    #[test]
    fn canonical_form_ignores_spacing_and_order() {
        let a = Envelope::parse(br#"{"b": [1, 2], "a":"x", "token":"t"}"#).unwrap();
        let b = Envelope::parse(br#"{"token":"u","a":"x","b":[1,2]}"#).unwrap();
        let (a, b) = (a.fields(), b.fields());
        assert_eq!(a.canonical(&["token"]), b.canonical(&["token"]));
        assert_eq!(
            a.canonical(&["token"]),
            vec![("a", "\"x\"".to_string()), ("b", "[1,2]".to_string())]
        );
    }

    #[test]
    fn a_transport_default_does_not_override_the_field() {
        let mut env = Envelope::parse(br#"{"idempotencyKey":"body"}"#).unwrap();
        env.default_str("idempotencyKey", "header");
        let f = env.fields();
        assert_eq!(
            f.opt_str("idempotencyKey", ErrorCode::InvalidJson).unwrap(),
            Some("body")
        );
        let mut env = Envelope::parse(b"{}").unwrap();
        env.default_str("idempotencyKey", "header");
        let f = env.fields();
        assert_eq!(
            f.opt_str("idempotencyKey", ErrorCode::InvalidJson).unwrap(),
            Some("header")
        );
    }
}
