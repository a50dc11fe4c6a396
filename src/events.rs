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
