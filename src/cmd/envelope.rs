//! The request object both transports carry, read once and borrowed.
//!
//! `{"token":…,"cmd":…, field: value, …}` (reference, "Making API calls" and
//! "Websocket API"). Parsing checks the whole text is one JSON object
//! (RFC 8259) in a single pass and keeps every field as a view into the
//! request's bytes: a string without escapes is a slice of the input, any
//! other value its raw JSON text, checked but not decoded. A command decodes
//! only the fields it reads, and a `GetUser` allocates nothing for its
//! envelope but the field list. Duplicate names: the last one counts, as in
//! `serde_json::Map`. What this accepts is exactly what `serde_json` accepts
//! as an object (nesting up to 128 levels, no trailing text); the `envelope`
//! fuzz target checks both agree on every input.

use crate::error::{ApiError, ErrorCode};
use serde_json::Value;
use smallvec::SmallVec;
use std::borrow::Cow;

/// A parsed request object, borrowing from the request's bytes: its `cmd`,
/// its `token` (if any), and all fields.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// The command name as sent (empty when absent or `null`).
    pub cmd: Cow<'a, str>,
    /// The `token` field, when present and a string.
    pub token: Option<Cow<'a, str>>,
    /// Every field of the object in the order sent, `cmd` and `token`
    /// included (up to six without an allocation).
    fields: FieldList<'a>,
}

type FieldList<'a> = SmallVec<[(Cow<'a, str>, Field<'a>); 6]>;

/// One field's value: a JSON string decoded (borrowed when it holds no
/// escape), or any other value as its raw JSON text (already checked).
#[derive(Debug, Clone)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Raw(&'a str),
}

impl<'a> Envelope<'a> {
    /// Parses one JSON object. Errors: 1017 when `bytes` is not a JSON object
    /// (or not UTF-8) or `cmd` is not a string; 1001 when `token` is not a
    /// string.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, ApiError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("invalid JSON object: not UTF-8: {e}"),
            )
        })?;
        Envelope::parse_str(text)
    }

    /// [`Envelope::parse`] of text already known to be UTF-8 (a WebSocket
    /// text frame, which tungstenite has checked).
    pub fn parse_str(text: &'a str) -> Result<Envelope<'a>, ApiError> {
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        // The field list is filled in place: returned, it would be
        // copied twice (six fields inline).
        let mut env = Envelope {
            cmd: Cow::Borrowed(""),
            token: None,
            fields: FieldList::new(),
        };
        Scanner::new(text)
            .object(&mut env.fields)
            .map_err(|e| invalid(&format!("invalid JSON object: {e}")))?;
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

    /// Every field in the order sent, each value decoded to JSON (a value
    /// nested deeper than `serde_json` decodes becomes `null`): for
    /// diagnostics and the `envelope` fuzz target.
    pub fn values(&self) -> Vec<(&str, Value)> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_ref(), to_value(v)))
            .collect()
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
        .filter(|v| !matches!(v, Field::Raw("null")))
}

/// The bytes that end a run of plain string content: `"`, backslash and
/// the control characters (one load per byte, as `serde_json`'s `ESCAPE`).
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = true;
        c += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// How many bytes at the start of `b` are plain string content: neither
/// `"`, a backslash nor a control character. Eight bytes at a time, as
/// `serde_json`'s `skip_to_escape` does (the byte-at-a-time loop was half
/// of the envelope's cost).
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let special = |c: u8| SPECIAL[usize::from(c)];
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        // Little-endian: the first byte in memory is the lowest.
        let v = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // A high bit set where a byte is 0 after the XOR (a quote or a
        // backslash) or below 0x20. A borrow can flag a byte wrongly only
        // above a byte rightly flagged, so the lowest flag is exact: the
        // first special byte, found without looking at the bytes one by one.
        let flagged = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGH;
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| special(c))
        .unwrap_or(b.len() - i)
}

/// How deep values may nest, the top-level object included (`serde_json`'s
/// recursion limit).
const MAX_DEPTH: usize = 128;

/// A single pass over the request text (RFC 8259's grammar): the top-level
/// object's names and string values are sliced out, every other value is
/// checked and kept as its text.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

/// Why the text is not one JSON object, and where.
type ScanError = String;

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// `what` was expected at the current position: the message names it
    /// with the line and column (1-based, in characters) where it was not.
    fn error(&self, what: &str) -> ScanError {
        let before = &self.text[..self.at.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        match self.peek() {
            None => format!("EOF while parsing {what} at line {line} column {column}"),
            Some(_) => format!("expected {what} at line {line} column {column}"),
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// The whole text: one object, then only whitespace.
    fn object(mut self, fields: &mut FieldList<'a>) -> Result<(), ScanError> {
        self.ws();
        self.expect(b'{', "an object")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(self.error("a string name"));
                }
                let name = self.string()?;
                self.ws();
                self.expect(b':', "':'")?;
                self.ws();
                let value = if self.peek() == Some(b'"') {
                    Field::Str(self.string()?)
                } else {
                    let start = self.at;
                    self.value(1)?;
                    Field::Raw(&self.text[start..self.at])
                };
                fields.push((name, value));
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.ws();
                    }
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.error("',' or '}'")),
                }
            }
        }
        self.ws();
        if self.at != self.text.len() {
            return Err(self.error("the end of the text after the object"));
        }
        Ok(())
    }

    /// A string at the current `"`: its contents, borrowed when it holds no
    /// escape (escapes are decoded by `serde_json`, which also refuses lone
    /// surrogates).
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        // Most strings hold no escape: their plain run ends at the closing
        // quote. One run and one slice, no call (callgrind: a string cost
        // ~240 instructions through `skip_string`).
        let bytes = self.bytes();
        let from = self.at + 1;
        let end = from + plain_run(&bytes[from..]);
        if bytes.get(end) == Some(&b'"') {
            self.at = end + 1;
            return Ok(Cow::Borrowed(&self.text[from..end]));
        }
        self.escaped_string()
    }

    /// [`Scanner::string`] of a string that holds an escape or is not
    /// well formed.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let start = self.at;
        let escaped = self.skip_string()?;
        let text = &self.text[start..self.at];
        if escaped {
            serde_json::from_str::<String>(text)
                .map(Cow::Owned)
                .map_err(|e| e.to_string())
        } else {
            Ok(Cow::Borrowed(&text[1..text.len() - 1]))
        }
    }

    /// Moves past the string at the current `"`; whether it held an escape.
    fn skip_string(&mut self) -> Result<bool, ScanError> {
        let bytes = self.bytes();
        self.at += 1;
        let mut escaped = false;
        loop {
            self.at += plain_run(&bytes[self.at..]);
            match bytes.get(self.at) {
                None => return Err(self.error("the end of a string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match bytes.get(self.at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 2
                        }
                        Some(b'u') => {
                            let hex = bytes.get(self.at + 2..self.at + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                self.at += 2;
                                return Err(self.error("four hex digits in an escape"));
                            }
                            self.at += 6;
                        }
                        _ => {
                            self.at += 1;
                            return Err(self.error("an escape"));
                        }
                    }
                }
                Some(&b) if b < 0x20 => return Err(self.error("no control character in a string")),
                Some(_) => self.at += 1,
            }
        }
    }

    /// Moves past one value of any type nested `depth` levels deep.
    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"') => self.skip_string().map(drop),
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("at most 128 levels of nesting"));
                }
                self.at += 1;
                self.ws();
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        if self.peek() != Some(b'"') {
                            return Err(self.error("a string name"));
                        }
                        self.skip_string()?;
                        self.ws();
                        self.expect(b':', "':'")?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.at += 1;
                            self.ws();
                        }
                        Some(b) if b == close => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("',' or the end of a container")),
                    }
                }
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a value")),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), ScanError> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("a value"))
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("a digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("a digit in an exponent"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
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
            Field::Raw(r) => serde_json::from_str(r).map_err(|e| e.to_string()),
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
        Field::Raw(r) => serde_json::from_str(r).unwrap_or(Value::Null),
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
    fn the_scanner_keeps_raw_values_and_follows_the_grammar() {
        let text = " {\"a\" : [1, {\"b\": \"c\\\"\"}, -0.5e+3, true, null] ,\n\"\\u0041\":false}\t";
        let env = Envelope::parse(text.as_bytes()).unwrap();
        let values = env.values();
        assert_eq!(values[0].0, "a");
        assert_eq!(
            values[0].1,
            serde_json::json!([1, {"b": "c\""}, -500.0, true, null])
        );
        assert_eq!(values[1], ("A", Value::Bool(false)));
        assert!(matches!(env.fields[0].1, Field::Raw(r) if r.starts_with('[') && r.ends_with(']')));
        for bad in [
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":[1,]}",
            "{\"a\":1,}",
            "{\"a\":tru}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"\\ud800\"}",
            "{a:1}",
            "{\"a\" 1}",
            "{\"a\":{\"b\"}}",
            "",
            "   ",
        ] {
            let e = Envelope::parse(bad.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidJson, "{bad}");
        }
        let e = Envelope::parse(b"{\"a\":[1}").unwrap_err();
        assert!(e.message.contains("line 1 column 8"), "{}", e.message);
    }

    #[test]
    fn plain_runs_stop_at_the_first_special_byte() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        // Every position of each special byte (and near misses) in strings
        // of every length up to 40, over a background of plain bytes.
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f, 0x21, 0x5d, 0x7f, 0xc3] {
                    let mut b = vec![b'a'; len];
                    if at < len {
                        b[at] = special;
                    }
                    assert_eq!(plain_run(&b), naive(&b), "{b:?}");
                }
            }
        }
        // Two special bytes in one eight-byte word (a borrow from the first
        // may flag bytes above it: the first must still be found), over
        // backgrounds of ASCII and of UTF-8's high bytes.
        for background in [b'a', 0x80, 0xbf, 0xe2, 0xff, 0x20, 0x21] {
            for first in 0..16 {
                for second in first + 1..17 {
                    for (x, y) in [(b'"', b'\\'), (0x00, b'"'), (0x1f, 0x00), (b'\\', 0x01)] {
                        let mut b = vec![background; 17];
                        b[first] = x;
                        b[second] = y;
                        assert_eq!(plain_run(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(Envelope::parse(deep(127).as_bytes()).is_ok());
        let e = Envelope::parse(deep(128).as_bytes()).unwrap_err();
        assert!(e.message.contains("128 levels"), "{}", e.message);
        // A megabyte of brackets is an error, not a stack overflow.
        assert!(Envelope::parse(deep(1 << 20).as_bytes()).is_err());
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
