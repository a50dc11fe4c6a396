//! The WebSocket session: handshake, heartbeat, idle timeout, socket reuse.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn command_before_connect_gets_1019_then_close() {
    let gw = spawn_gateway().await;
    let mut ws = gw.raw_socket().await;
    ws.send(&json!({"cmd": "GetUsers", "token": gw.token}))
        .await;
    let r = ws.recv().await;
    assert_eq!(
        (r["cmd"].as_str(), r["errorCode"].as_u64()),
        (Some("GetUsers"), Some(1019))
    );
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1008);
}

#[tokio::test]
async fn bad_and_missing_tokens_are_refused_then_closed() {
    let gw = spawn_gateway().await;
    for (token, code) in [
        (json!("f".repeat(40)), 1001),
        (json!(null), 1000),
        (json!(""), 1000),
    ] {
        let mut ws = gw.raw_socket().await;
        ws.send(&json!({"cmd": "connect", "token": token})).await;
        let r = ws.recv().await;
        assert_eq!(r["errorCode"], code, "{token}");
        assert_eq!(r["ok"], 0);
        let frame = ws.closed().await.expect("close frame");
        assert_eq!(u16::from(frame.code), 1008);
    }
}

#[tokio::test]
async fn heartbeat_reply_has_the_reference_shape() {
    let gw = spawn_gateway().await;
    let mut ws = gw.socket().await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let r = ws.cmd("heartbeat", json!({})).await;
    assert_eq!(r["ok"], 1);
    let dt = r["data"]["datetime"].as_str().unwrap();
    assert_eq!(dt.len(), "2020-04-29T14:34:34.376Z".len(), "{dt}");
    let t = chrono::DateTime::parse_from_rfc3339(dt).unwrap();
    assert!(t > before && t < chrono::Utc::now() + chrono::Duration::seconds(1));
    // A second connect on a live session is answered, not an error.
    assert_eq!(
        ws.cmd("connect", json!({"token": gw.token})).await,
        json!({"cmd": "connected", "ok": 1})
    );
}

#[tokio::test]
async fn idle_socket_is_closed_with_a_reason_and_heartbeats_keep_it_open() {
    let gw = spawn_with(|c| {
        c.heartbeat_timeout = 0.4;
        c.connect_timeout = 0.4;
        c.max_sockets_per_token = 2;
    })
    .await;
    let mut alive = gw.socket().await;
    let mut idle = gw.socket().await;
    let mut never_connected = gw.raw_socket().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(alive.cmd("heartbeat", json!({})).await["ok"], 1);
    }
    let frame = idle.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4000);
    assert_eq!(frame.reason.as_str(), "heartbeat timeout");
    let frame = never_connected.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4000);
    assert_eq!(alive.cmd("heartbeat", json!({})).await["ok"], 1);
}

#[tokio::test]
async fn a_second_socket_with_the_same_token_replaces_the_first() {
    let gw = spawn_gateway().await;
    let mut first = gw.socket().await;
    let mut second = gw.socket().await;
    let r = first.recv().await;
    assert_eq!(
        (r["ok"].as_u64(), r["errorCode"].as_u64()),
        (Some(0), Some(1018))
    );
    let frame = first.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(second.cmd("heartbeat", json!({})).await["ok"], 1);
}

#[tokio::test]
async fn max_sockets_per_token_allows_several() {
    let gw = spawn_with(|c| c.max_sockets_per_token = 3).await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        socks.push(gw.socket().await);
    }
    for ws in &mut socks {
        assert_eq!(ws.cmd("heartbeat", json!({})).await["ok"], 1);
    }
    // A fourth replaces the oldest only.
    let _fourth = gw.socket().await;
    assert_eq!(socks[0].recv().await["errorCode"], 1018);
    assert_eq!(socks[1].cmd("heartbeat", json!({})).await["ok"], 1);
}

#[tokio::test]
async fn a_ping_before_connect_is_not_a_command() {
    let gw = spawn_gateway().await;
    let mut ws = gw.raw_socket().await;
    ws.send_msg(tokio_tungstenite::tungstenite::Message::Ping(
        b"hi".to_vec().into(),
    ))
    .await;
    ws.send(&json!({"cmd": "connect", "token": gw.token})).await;
    let hello = ws.recv().await;
    assert_eq!(
        (hello["cmd"].clone(), hello["ok"].clone()),
        (json!("connected"), json!(1)),
        "{hello}"
    );
}
