//! Encodings of keys and records. Keys are `/`-joined parts, numbers as 20
//! zero-padded digits so that they sort as numbers; records are JSON, but
//! for two layouts tuned for their hot paths: user records are framed so
//! that the user's JSON is passed on as it is (`GetUser`), and delivery
//! records, the most written, are postcard.

use super::StoreError;
use crate::model::{Delivery, UserRecord};
use serde::{de::DeserializeOwned, Serialize};

pub(super) fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

/// `prefix/org` then `/` and each number as 20 zero-padded decimal digits:
/// keys that sort as their numbers do (`dlv/{org}/{seq:020}`). Written by
/// hand: `format!`'s padding was a tenth of a webhook delivery's cost.
pub(super) fn num_key(prefix: &str, org: &str, nums: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + org.len() + 1 + nums.len() * 21);
    k.extend_from_slice(prefix.as_bytes());
    k.push(b'/');
    k.extend_from_slice(org.as_bytes());
    for &n in nums {
        let mut digits = [b'0'; 20];
        let mut n = n;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        k.push(b'/');
        k.extend_from_slice(&digits);
    }
    k
}

pub(super) fn decode<T: DeserializeOwned>(v: Option<sled::IVec>) -> Result<Option<T>, StoreError> {
    v.map(|v| serde_json::from_slice(&v))
        .transpose()
        .map_err(Into::into)
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// First byte of a user record in the framed layout (a JSON record starts
/// with `{`).
pub(super) const USER_FRAME_V1: u8 = 1;

/// A user record: `0x01`, the length of the user's JSON (u32 big-endian),
/// the user's JSON, then the tags' JSON. The user's JSON stands alone so
/// that `GetUser` copies it into its reply as it is.
pub(super) fn encode_user(rec: &UserRecord) -> Vec<u8> {
    let user = encode(&rec.user);
    let len = u32::try_from(user.len()).expect("a user record is far below 4 GiB");
    let mut out = Vec::with_capacity(5 + user.len() + 16);
    out.push(USER_FRAME_V1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&user);
    serde_json::to_writer(&mut out, &rec.tags).expect("tags serialise");
    out
}

/// The user's JSON and the tags' JSON of a framed record; `None` for a
/// record in the older layout (one JSON object) or a malformed frame.
pub(super) fn split_user(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&version, rest) = v.split_first()?;
    if version != USER_FRAME_V1 || rest.len() < 4 {
        return None;
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// Decodes a user record in either layout.
pub(super) fn decode_user(v: &[u8]) -> Result<UserRecord, StoreError> {
    match split_user(v) {
        Some((user, tags)) => Ok(UserRecord {
            user: serde_json::from_slice(user)?,
            tags: serde_json::from_slice(tags)?,
        }),
        None if v.first() == Some(&b'{') => Ok(serde_json::from_slice(v)?),
        None => Err(StoreError::Codec("malformed user record".into())),
    }
}

/// Delivery records are the most written records (one per event and
/// webhook), so they use a compact binary encoding (postcard) rather than
/// JSON: smaller values make every write of the tree cheaper.
pub(super) fn encode_delivery(d: &Delivery) -> Vec<u8> {
    postcard::to_stdvec(d).expect("deliveries serialise")
}

pub(super) fn decode_delivery(v: &[u8]) -> Result<Delivery, StoreError> {
    postcard::from_bytes(v).map_err(|e| StoreError::Codec(e.to_string()))
}

pub(super) fn be_u64(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
}

pub(super) fn dlv_key(org: &str, seq: u64) -> Vec<u8> {
    num_key("dlv", org, &[seq])
}

pub(super) fn dq_key(org: &str, due_ms: i64, seq: u64) -> Vec<u8> {
    num_key("dq", org, &[due_ms.max(0) as u64, seq])
}

pub(super) fn cbq_key(due_ms: i64, id: &str) -> Vec<u8> {
    format!("cbq/{:020}/{id}", due_ms.max(0)).into_bytes()
}

pub(super) fn bot_key(org: &str, id: u64) -> Vec<u8> {
    format!("bot/{org}/{id:020}").into_bytes()
}

/// `bix/{botID:020}`: the instance-wide index of bots by id.
pub(super) fn bix_key(id: u64) -> Vec<u8> {
    format!("bix/{id:020}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keys_are_zero_padded_and_sort_as_numbers() {
        for n in [0, 7, 1_000, u64::MAX] {
            assert_eq!(
                num_key("dlv", "o1", &[n]),
                format!("dlv/o1/{n:020}").into_bytes()
            );
        }
        assert_eq!(
            num_key("dq", "o", &[5, 12]),
            format!("dq/o/{:020}/{:020}", 5, 12).into_bytes()
        );
        assert!(num_key("evt", "o", &[9]) < num_key("evt", "o", &[10]));
    }

    use crate::model::User;

    fn record(name: &str, tags: &[&str]) -> UserRecord {
        UserRecord {
            user: User {
                uid: "3941-wa3-447922029419".into(),
                name: name.into(),
                first_name: name.into(),
                last_name: String::new(),
                email: String::new(),
                phone: "+447922029419".into(),
                bot: "WA3".into(),
                bot_id: 3941,
                lang: "en".into(),
                created: "2026-11-22T01:14:04.233Z".into(),
                notes: "\u{1}\"\\,\"tags\":[\"x\"]}".into(),
                url: String::new(),
                disabled: false,
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn user_records_round_trip_and_pass_their_user_json_on() {
        for rec in [
            record("Billy Bob", &[]),
            record("Zoë \"Z\" \\ 😀", &["VIP", "\",\"user\":{", ""]),
        ] {
            let framed = encode_user(&rec);
            let back = decode_user(&framed).unwrap();
            assert_eq!((back.user, back.tags), (rec.user.clone(), rec.tags.clone()));
            let (user, _) = split_user(&framed).unwrap();
            assert_eq!(user, encode(&rec.user).as_slice());
            // Records written before the framed layout still read.
            let legacy = encode(&rec);
            assert!(split_user(&legacy).is_none());
            let back = decode_user(&legacy).unwrap();
            assert_eq!((back.user, back.tags), (rec.user, rec.tags));
        }
        assert!(decode_user(&[USER_FRAME_V1, 0, 0, 1, 0, b'{']).is_err());
        assert!(decode_user(b"").is_err());
    }
}
