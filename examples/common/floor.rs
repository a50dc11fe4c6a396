//! The protocol's floor for `GetUser`: the least work any gateway must do
//! for one request on top of what the bare echo does, with the libraries a
//! quick implementation would use. `bench.sh` runs the bare echoes in this
//! mode (`bare_http_echo ADDR floor`, `bare_ws_echo ADDR floor`) beside
//! the plain echo, so that the gap to the echo splits into what the
//! protocol costs and what convgate adds on top.
//!
//! Per request: the envelope read with serde_json (a borrowed struct: the
//! fields `cmd`, `token` and `uid`, every other value still checked), the
//! token found in a map by its raw value (HTTP only: a socket is
//! authenticated once, by `connect`), the command matched by name, the user
//! found in a map behind a lock as a cached JSON record, and the reply
//! `{"cmd":"GetUser","ok":1,"data":{user}}` written into a new string; bad
//! JSON, an unknown token, command or user get the reference's error reply
//! (`errorCode` 1017, 1001, 1004, 1025, 1005; a POST answers
//! them with 400). What it leaves out and convgate
//! does: escaped strings in names and values (serde_json refuses them in a
//! borrowed `&str`), duplicate fields, rate limits, idempotency keys, key
//! use, the reply's extension fields, any command but `GetUser`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// One organization's cached users: uid → the user's JSON.
type Users = Map<Box<str>, Arc<str>>;

/// The token the load generator sends (`bench.sh`'s `TOKEN`).
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
/// The user the load generator asks for.
pub const UID: &str = "3941-wa3-447922029419";
/// That user's record as the gateway stores and returns it.
pub const USER: &str = r#"{"uid":"3941-wa3-447922029419","name":"Billy Bob","first_name":"Billy","last_name":"Bob","email":"","phone":"+447922029419","bot":"WA3","botID":3941,"lang":"","created":"2026-11-23T06:08:47.239Z","notes":"","url":""}"#;

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    cmd: &'a str,
    #[serde(borrow, default)]
    token: Option<&'a str>,
    #[serde(borrow, default)]
    uid: Option<&'a str>,
}

/// Tokens (raw value → organization) and cached users per organization.
pub struct Floor {
    tokens: Map<Box<str>, u64>,
    users: RwLock<Map<u64, Users>>,
}

impl Default for Floor {
    fn default() -> Floor {
        let mut tokens = Map::default();
        tokens.insert(TOKEN.into(), 1);
        let mut org = Map::default();
        org.insert(UID.into(), Arc::from(USER));
        let mut users = Map::default();
        users.insert(1, org);
        Floor {
            tokens,
            users: RwLock::new(users),
        }
    }
}

impl Floor {
    /// The reply to one request, `Err` for an error reply; `org` is the
    /// socket's organization, or `None` when the request must carry its
    /// token (a POST).
    pub fn answer(&self, request: &[u8], org: Option<u64>) -> Result<String, String> {
        let env: Envelope = match serde_json::from_slice(request) {
            Ok(env) => env,
            Err(e) => return error("", 1017, &format!("invalid JSON object: {e}")),
        };
        let org = match org.or_else(|| self.tokens.get(env.token.unwrap_or("")).copied()) {
            Some(org) => org,
            None => return error(env.cmd, 1001, "invalid API token"),
        };
        if env.cmd != "GetUser" {
            return error(env.cmd, 1004, "unknown command");
        }
        let Some(uid) = env.uid else {
            return error(env.cmd, 1025, "uid is required");
        };
        let users = self.users.read().expect("users");
        let Some(user) = users.get(&org).and_then(|o| o.get(uid)) else {
            return error(env.cmd, 1005, "unknown user");
        };
        let mut out = String::with_capacity(32 + user.len());
        out.push_str(r#"{"cmd":"GetUser","ok":1,"data":"#);
        out.push_str(user);
        out.push('}');
        Ok(out)
    }
}

fn error(cmd: &str, code: u16, message: &str) -> Result<String, String> {
    Err(serde_json::json!({"cmd": cmd, "ok": 0, "errorCode": code, "error": message}).to_string())
}
