//! The reference's events as bodies to log: `onUserCreate`, `onUserUpdate`
//! (with only the changed fields), `onUserDelete`. The store adds `seq` and
//! `eventId` when it appends them ([`crate::store::WriteTx::emit`]).

use crate::model::User;
use serde_json::{json, Map, Value};

/// The event body `onUserCreate` (reference, "onUserCreate"): data = user.
pub fn on_user_create(user: &User) -> Map<String, Value> {
    obj(json!({"cmd": "onUserCreate", "ok": 1, "data": user}))
}

/// The event body `onUserUpdate`: data = `{user, update}`, `update` holding
/// only the changed fields (reference, "onUserUpdate").
pub fn on_user_update(user: &User, update: Map<String, Value>) -> Map<String, Value> {
    obj(json!({"cmd": "onUserUpdate", "ok": 1, "data": {"user": user, "update": update}}))
}

/// The event body `onUserDelete`: top-level `uid` (reference, "onUserDelete").
pub fn on_user_delete(uid: &str) -> Map<String, Value> {
    obj(json!({"cmd": "onUserDelete", "ok": 1, "uid": uid}))
}

/// The event body `onUserDisable`: top-level `uid` (reference,
/// "onUserDisable": e.g. the user blocked the bot or opted out).
pub fn on_user_disable(uid: &str) -> Map<String, Value> {
    obj(json!({"cmd": "onUserDisable", "ok": 1, "uid": uid}))
}

/// The event body `onUserEnable`: top-level `uid` (reference,
/// "onUserEnable": a disabled user engages again).
pub fn on_user_enable(uid: &str) -> Map<String, Value> {
    obj(json!({"cmd": "onUserEnable", "ok": 1, "uid": uid}))
}

/// The event body `onWebhookDisabled` (extension): data = `{url, reason}`.
pub fn on_webhook_disabled(url: &str, reason: &str) -> Map<String, Value> {
    obj(json!({"cmd": "onWebhookDisabled", "ok": 1, "data": {"url": url, "reason": reason}}))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

/// The fields of `after` whose values differ from `before`.
pub fn changed_fields(before: &User, after: &User) -> Map<String, Value> {
    let (Value::Object(b), Value::Object(a)) = (json!(before), json!(after)) else {
        unreachable!("users serialise to objects")
    };
    a.into_iter().filter(|(k, v)| b.get(k) != Some(v)).collect()
}
