//! The reference's events as bodies to log: `onUserCreate`, `onUserUpdate`
//! (with only the changed fields), `onUserDelete`. The store adds `seq` and
//! `eventId` when it appends them ([`crate::store::WriteTx::emit`]).

use crate::model::{Agent, Conversation, User};
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

/// Extension events a subscriber receives only when it asked for them
/// (`connect`'s and `SetWebhook`'s `events`); a plain Convrs client never
/// sees them.
pub const OPT_IN: &[&str] = &["onMessage", "onConversationUpdate", "onRouteEnd"];

/// The `cmd` of a logged event's JSON. Events are serialised with their
/// keys in order, so `cmd` comes first: `{"cmd":"onMessage",…`.
pub fn name_of(json: &[u8]) -> &str {
    json.strip_prefix(b"{\"cmd\":\"")
        .and_then(|rest| rest.iter().position(|&b| b == b'"').map(|end| &rest[..end]))
        .and_then(|n| std::str::from_utf8(n).ok())
        .unwrap_or("")
}

/// Whether a subscriber with the opt-in `events` receives the logged event
/// `json`: every reference event, and the opt-in ones it asked for.
pub fn wanted(json: &[u8], events: &[String]) -> bool {
    let name = name_of(json);
    !OPT_IN.contains(&name) || events.iter().any(|e| e == name)
}

/// The event body `onUserConversation`: top-level `uid`, `data` the rows of
/// the closed conversation (reference, "onUserConversation").
pub fn on_user_conversation(uid: &str, rows: Vec<Value>) -> Map<String, Value> {
    obj(json!({"cmd": "onUserConversation", "ok": 1, "uid": uid, "data": rows}))
}

/// The event body `onRouteEnd` (extension, opt-in): a run of a route
/// ended. `data` = `{uid, route, runId, outcome}` with outcome `completed`,
/// `timed_out`, `failed` (then `errorCode` and `error`) or `replaced`.
pub fn on_route_end(
    run: &crate::routes::Run,
    outcome: &str,
    error: Option<(u16, &str)>,
) -> Map<String, Value> {
    let mut data =
        json!({"uid": run.uid, "route": run.route, "runId": run.run_id, "outcome": outcome});
    if let Some((code, message)) = error {
        data["errorCode"] = code.into();
        data["error"] = message.into();
    }
    obj(json!({"cmd": "onRouteEnd", "ok": 1, "data": data}))
}

/// The event body `onMessage` (extension, opt-in): `data` = the row.
pub fn on_message(row: Value) -> Map<String, Value> {
    obj(json!({"cmd": "onMessage", "ok": 1, "data": row}))
}

/// The event body `onConversationUpdate` (extension, opt-in): `data` =
/// `{cid, uid, status, aid, agent}`, status open|assigned|closed.
pub fn on_conversation_update(
    c: &Conversation,
    status: &str,
    agent: Option<&Agent>,
) -> Map<String, Value> {
    obj(json!({"cmd": "onConversationUpdate", "ok": 1, "data": {
        "cid": c.cid,
        "uid": c.uid,
        "status": status,
        "aid": agent.map_or(0, |a| a.aid),
        "agent": agent.map_or("", |a| a.name.as_str()),
    }}))
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
