//! protocol/ as data: the example exchanges replay over both transports, and
//! the error-code table agrees with the server.

use crate::helpers::*;
use serde_json::{json, Value};

/// `expect` matches `got`: objects key by key (same keys), arrays element by
/// element, and the string "<any>" matches any value.
fn matches(expect: &Value, got: &Value) -> bool {
    match (expect, got) {
        (Value::String(s), _) if s == "<any>" => true,
        (Value::Object(e), Value::Object(g)) => {
            e.len() == g.len()
                && e.iter()
                    .all(|(k, v)| g.get(k).is_some_and(|gv| matches(v, gv)))
        }
        (Value::Array(e), Value::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| matches(a, b))
        }
        _ => expect == got,
    }
}

fn substitute(v: &Value, token: &str) -> Value {
    let mut v = v.clone();
    if v["token"] == "<token>" {
        v["token"] = json!(token);
    }
    v
}

#[tokio::test]
async fn examples_replay_over_post() {
    let gw = spawn_gateway().await;
    let ex = protocol_json("examples/exchanges.json");
    let doc = protocol_json("schemas/convrs.schema.json");
    for step in ex["steps"].as_array().unwrap() {
        let def = format!("{}.request", step["send"]["cmd"].as_str().unwrap());
        if doc["$defs"].get(&def).is_some() {
            validate(&def, &step["send"]);
        }
        let (status, reply) = gw.post(&substitute(&step["send"], &gw.token)).await;
        assert!(
            matches(&step["expect"], &reply),
            "{}: got {reply}",
            step["name"]
        );
        assert_eq!(status, step["http"], "{}", step["name"]);
    }
}

#[tokio::test]
async fn examples_replay_over_websocket() {
    let gw = spawn_gateway().await;
    let mut ws = gw.socket().await;
    let ex = protocol_json("examples/exchanges.json");
    for step in ex["steps"].as_array().unwrap() {
        let mut body = step["send"].clone();
        body.as_object_mut().unwrap().remove("token");
        ws.send(&body).await;
        let reply = ws.reply().await;
        assert!(
            matches(&step["expect"], &reply),
            "{}: got {reply}",
            step["name"]
        );
    }
    // The replay changed the user: events were validated on the way.
    assert!(!ws.events.is_empty());
}

#[test]
fn error_code_table_agrees_with_the_server() {
    let table = protocol_json("error-codes.json");
    for row in table["codes"].as_array().unwrap() {
        let code = row["errorCode"].as_u64().unwrap() as u16;
        assert_eq!(
            row["http"],
            convgate::error::status_of(code),
            "errorCode {code}"
        );
    }
}

#[test]
fn every_request_definition_has_a_reply() {
    let doc = protocol_json("schemas/convrs.schema.json");
    let defs = doc["$defs"].as_object().unwrap();
    for name in defs.keys().filter_map(|k| k.strip_suffix(".request")) {
        assert!(
            defs.contains_key(&format!("{name}.reply")),
            "{name} has no reply schema"
        );
    }
    let asyncapi = protocol_json("asyncapi.json");
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
}
