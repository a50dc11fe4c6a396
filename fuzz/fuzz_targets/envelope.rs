//! The request envelope and every command's field parsing: any bytes a
//! client sends over POST or a socket must give a reply, never a panic.
//!
//! The envelope's own single-pass scanner is also checked against
//! `serde_json` reading the same text as an object of raw values (what the
//! gateway did before it had a scanner): both accept the same texts, with
//! the same fields, except that the scanner refuses values nested deeper
//! than 128 levels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

fuzz_target!(|data: &[u8]| {
    let ours = convgate::cmd::Envelope::parse(data);
    let theirs = reference(data);
    match (&ours, &theirs) {
        (Ok(env), Ok(fields)) => assert_eq!(
            &env.values()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>(),
            fields,
            "{:?}",
            String::from_utf8_lossy(data)
        ),
        (Ok(_), Err(e)) => panic!("accepted what serde_json refuses ({e}): {data:?}"),
        (Err(e), Ok(_)) => assert!(
            e.message.contains("levels of nesting")
                || e.message.contains("cmd must be a string")
                || e.code == convgate::error::ErrorCode::InvalidToken,
            "refused what serde_json accepts ({}): {:?}",
            e.message,
            String::from_utf8_lossy(data)
        ),
        (Err(_), Err(_)) => {}
    }
    if let Ok(env) = ours {
        let _ = convgate::cmd::Command::parse(&env);
        let _ = convgate::cmd::connect_events(&env);
        let _ = convgate::cmd::connect_resume(&env);
    }
});

/// serde_json's reading: one object, names decoded, each value raw (a
/// string decoded when it holds an escape), then decoded to JSON.
fn reference(data: &[u8]) -> Result<Vec<(String, Value)>, String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = de
        .deserialize_map(ObjectVisitor)
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|(k, v)| {
            let t = v.get();
            let value = if t.starts_with('"') {
                Value::String(serde_json::from_str::<String>(t).map_err(|e| e.to_string())?)
            } else {
                serde_json::from_str(t).unwrap_or(Value::Null)
            };
            Ok((k, value))
        })
        .collect()
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            fields.push((name, map.next_value()?));
        }
        Ok(fields)
    }
}
