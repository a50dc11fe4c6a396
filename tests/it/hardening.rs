//! No connection can hold the gateway hostage, every stored value is
//! bounded, every bad frame gets its RFC answer: each limit tested on
//! loopback with short configured values, over raw TCP where a well-behaved
//! client library would not misbehave on purpose.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn tcp(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.gw().addr).await.unwrap()
}

/// Reads until the peer closes (or `limit` passes); returns what was read
/// and whether the connection was closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

async fn healthz(gw: &TestGateway) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{}/healthz", gw.gw().addr))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_phase_of_a_connection_is_bounded() {
    let gw = spawn_with(|c| {
        c.header_read_timeout = 0.5;
        c.body_read_timeout = 0.5;
        c.keepalive_timeout = 0.8;
        c.connect_timeout = 0.5;
    })
    .await;
    // A connection that never sends a byte.
    let t0 = Instant::now();
    let mut silent = tcp(&gw).await;
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(
        closed && t0.elapsed() < Duration::from_secs(2),
        "silent: {:?}",
        t0.elapsed()
    );
    // Headers dripped one byte every 150 ms.
    let t0 = Instant::now();
    let mut drip = tcp(&gw).await;
    let head = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let mut closed = false;
    for b in head.iter() {
        if drip.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if t0.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        closed = read_until_closed(&mut drip, Duration::from_millis(500))
            .await
            .1;
    }
    assert!(
        closed && t0.elapsed() < Duration::from_secs(3),
        "header drip: {:?}",
        t0.elapsed()
    );
    // A body dripped after `Content-Length: 1000`: 408, then closed.
    let mut body = tcp(&gw).await;
    body.write_all(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut body, Duration::from_secs(3)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed);
    // Keep-alive: a second request within keepalive_timeout is served; then
    // an idle connection is closed.
    let mut kept = tcp(&gw).await;
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(get).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    kept.write_all(get).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "kept alive past header_read_timeout"
    );
    let t0 = Instant::now();
    let (_, closed) = read_until_closed(&mut kept, Duration::from_secs(3)).await;
    assert!(
        closed && t0.elapsed() >= Duration::from_millis(600),
        "idle keep-alive: {:?}",
        t0.elapsed()
    );
    // A WebSocket that never sends connect: 4000 at connect_timeout.
    let mut ws = gw.raw_socket().await;
    let t0 = Instant::now();
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4000, "connect timeout: no connect")
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn silent_connections_cannot_stop_service_at_the_cap() {
    let gw = spawn_with(|c| {
        c.max_connections = 4;
        c.header_read_timeout = 0.8;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tcp(&gw).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // At the cap: health answers; the API is refused at once, not queued.
    assert_eq!(healthz(&gw).await, 200);
    let t0 = Instant::now();
    let r = reqwest::Client::new()
        .post(gw.api_url())
        .json(&json!({"token": gw.token, "cmd": "GetBots"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(t0.elapsed() < Duration::from_secs(1));
    // Once the silent ones time out, a well-behaved client is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reqwest::Client::new()
            .post(gw.api_url())
            .json(&json!({"token": gw.token, "cmd": "GetBots"}))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Per address: a second connection from 127.0.0.1 over the cap is refused.
    let gw = spawn_with(|c| c.max_connections_per_ip = 1).await;
    let _one = tcp(&gw).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = reqwest::Client::new()
        .post(gw.api_url())
        .json(&json!({"token": gw.token, "cmd": "GetBots"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address() {
    let gw = spawn_with(|c| c.auth_failure_limit = 1).await;
    let mut limited = 0;
    for _ in 0..12 {
        let (s, r) = gw
            .cmd_as(
                "0000000000000000000000000000000000000000",
                "GetBots",
                json!({}),
            )
            .await;
        match s {
            401 => assert_eq!(r["errorCode"], 1001),
            429 => {
                assert_eq!(r["errorCode"], 2008);
                limited += 1;
            }
            other => panic!("{other}: {r}"),
        }
    }
    assert!(limited >= 5, "burst of 5, then limited: {limited}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("convgate_auth_failures_total 12"),
        "{metrics}"
    );
    // The right token still works.
    assert_eq!(gw.cmd("GetBots", json!({})).await.0, 200);
}

#[tokio::test]
async fn an_oversized_body_is_answered_413_after_it_was_sent() {
    let gw = spawn_with(|c| c.max_body_bytes = 1024).await;
    let mut s = tcp(&gw).await;
    let body = vec![b'x'; 200 * 1024];
    let head = format!(
        "POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body)
        .await
        .expect("the whole body is taken, not refused mid-way");
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("max_body_bytes"), "{text}");
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007() {
    let gw = spawn_gateway().await;
    let mut s = tcp(&gw).await;
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked text frame whose payload is not UTF-8.
    let payload = [0xff, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr[0], 0x88, "a close frame");
    let mut body = vec![0u8; (hdr[1] & 0x7f) as usize];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1007);
    assert_eq!(&body[2..], b"invalid UTF-8");
}

/// A masked client text frame (RFC 6455 §5.2) of `payload` (under 126 bytes).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [7u8, 1, 9, 3];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A client that sends its `connect` in the same write as its upgrade
/// request (before the 101) loses nothing: the frame hyper read past the
/// request reaches the session.
#[tokio::test]
async fn a_connect_sent_with_the_upgrade_request_is_answered() {
    let gw = spawn_gateway().await;
    let mut s = tcp(&gw).await;
    let connect = json!({"cmd": "connect", "token": gw.token}).to_string();
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    bytes.extend(masked_text(connect.as_bytes()));
    s.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455 §1.3's worked example of the accept key.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr[0], 0x81, "a text frame");
    let len = match hdr[1] & 0x7f {
        126 => usize::from(s.read_u16().await.unwrap()),
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (reply["cmd"].clone(), reply["ok"].clone()),
        (json!("connected"), json!(1))
    );
}

/// An upgrade that is not one by RFC 6455 §4.2.1 is refused with the
/// status that says why, and the connection stays HTTP.
#[tokio::test]
async fn a_malformed_websocket_upgrade_is_refused() {
    let gw = spawn_gateway().await;
    let url = gw.gw().ws_url().replace("ws://", "http://");
    let upgrade = |req: reqwest::RequestBuilder, version: &str| {
        req.header("Connection", "keep-alive, Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", version)
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let r = upgrade(gw.http.post(&url), "13").send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = upgrade(gw.http.get(&url), "8").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let versions: Vec<_> = r
        .headers()
        .get_all("sec-websocket-version")
        .iter()
        .collect();
    assert_eq!(
        versions,
        ["13"],
        "RFC 6455 §4.4: the version the server speaks"
    );
    let r = gw
        .http
        .get(&url)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Sec-WebSocket-Key"));
    let r = gw.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 400, "no Connection: upgrade");
}

/// A client speaking HTTP/2 with prior knowledge (RFC 9113 §3.3) is served
/// on the same port as HTTP/1.
#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Empty};
    let gw = spawn_gateway().await;
    let io = hyper_util::rt::TokioIo::new(tcp(&gw).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/healthz", gw.gw().addr))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.expect("an HTTP/2 answer");
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
}

#[tokio::test]
async fn errors_echo_little_and_wrong_types_are_validation_errors() {
    let gw = spawn_with(|c| c.max_user_data_bytes = 1000).await;
    let huge = "x".repeat(60 * 1024);
    let (s, r) = gw.cmd(&huge, json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(1004)));
    assert!(
        r.to_string().len() < 1024,
        "a 60 KB cmd is not echoed: {} bytes",
        r.to_string().len()
    );
    let (s, r) = gw
        .post_raw(format!(
            r#"{{"token":"{}","cmd":"GetUsers","botID":18446744073709551616}}"#,
            gw.token
        ))
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(1017)), "{r}");
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let (s, r) = gw
        .post_raw(format!(
            r#"{{"token":"{}","cmd":"SetUserData","uid":"{uid}","data":{{"n":1e400}}}}"#,
            gw.token
        ))
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(1017)));
    assert!(r["error"].as_str().unwrap().contains("out of range"), "{r}");
    // The data cap: nothing written over it.
    assert_eq!(
        gw.cmd(
            "SetUserData",
            json!({"uid": uid, "data": {"a": "x".repeat(500)}})
        )
        .await
        .0,
        200
    );
    let (s, r) = gw
        .cmd(
            "SetUserData",
            json!({"uid": uid, "data": {"b": "x".repeat(600)}}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(1017)), "{r}");
    assert!(r["error"].as_str().unwrap().contains("max_user_data_bytes"));
    let (_, d) = gw.cmd("GetUserData", json!({"uid": uid})).await;
    assert!(d["data"].get("b").is_none(), "{d}");
}

#[tokio::test]
async fn storage_caps_refuse_the_write_over_them() {
    let gw = spawn_with(|c| {
        c.max_tags_per_user = 2;
        c.max_tags_per_org = 3;
        c.max_bots_per_org = 2;
        c.max_agents_per_org = 1;
    })
    .await;
    let uid = gw.seed_user(1, "+447922029419", "Billy Bob").await;
    for t in ["Aaa", "Bbb", "Ccc"] {
        assert_eq!(gw.cmd("CreateUserTag", json!({"tag": t})).await.0, 200);
    }
    let (_, r) = gw.cmd("CreateUserTag", json!({"tag": "Ddd"})).await;
    assert!(
        r["error"].as_str().unwrap().contains("max_tags_per_org"),
        "{r}"
    );
    for t in ["Aaa", "Bbb"] {
        assert_eq!(
            gw.cmd("SetUserTag", json!({"uid": uid, "tag": t})).await.0,
            200
        );
    }
    let (_, r) = gw
        .cmd("SetUserTag", json!({"uid": uid, "tag": "Ccc"}))
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("max_tags_per_user"),
        "{r}"
    );
    assert_eq!(
        gw.cmd("CreateBot", json!({"botID": 2, "kind": "web"}))
            .await
            .0,
        200
    );
    let (_, r) = gw
        .cmd("CreateBot", json!({"botID": 3, "kind": "web"}))
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("max_bots_per_org"),
        "{r}"
    );
    assert_eq!(
        gw.cmd(
            "CreateBot",
            json!({"botID": 2, "kind": "web", "name": "renamed"})
        )
        .await
        .0,
        200,
        "an existing bot still changes"
    );
    assert_eq!(
        gw.cmd(
            "CreateAgent",
            json!({"email": "a@example.com", "name": "Ann Agent"})
        )
        .await
        .0,
        200
    );
    let (_, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": "b@example.com", "name": "Bob Agent"}),
        )
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("max_agents_per_org"),
        "{r}"
    );
}

#[tokio::test]
async fn a_failed_first_start_loses_no_token() {
    let dir = TestDir::new();
    // The port is taken: the start fails before the store is touched.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = dir.config();
    config.listen = taken.local_addr().unwrap();
    assert!(convgate::server::start(config.clone()).await.is_err());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let gw = convgate::server::start(config.clone()).await.unwrap();
    let first = gw
        .bootstrap_token
        .clone()
        .expect("the first good start makes the token");
    // A start that made the token but died before returning it: the next
    // start replaces it (nobody can be using it) and returns the new one.
    gw.ctx.store.mark_untold("default").await.unwrap();
    gw.shutdown();
    gw.wait().await.unwrap();
    let gw = convgate::server::start(config.clone()).await.unwrap();
    let second = gw
        .bootstrap_token
        .clone()
        .expect("a new token for the untold one");
    assert_ne!(first, second);
    let api = gw.api_url();
    let http = reqwest::Client::new();
    let call = |token: &str| {
        let body = json!({"token": token, "cmd": "GetBots"});
        let (http, api) = (http.clone(), api.clone());
        async move {
            http.post(api)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(call(&second).await["ok"], 1);
    assert_eq!(call(&first).await["errorCode"], 1001);
    gw.shutdown();
    gw.wait().await.unwrap();
    let gw = convgate::server::start(config).await.unwrap();
    assert!(gw.bootstrap_token.is_none(), "told once: no third token");
}
