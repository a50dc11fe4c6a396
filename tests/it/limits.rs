//! Bad input and limits: each is an error reply or a close code, and the
//! server keeps serving everyone else.

use crate::helpers::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn binary_frame_gets_1017_and_the_socket_stays_open() {
    let gw = spawn_gateway().await;
    let mut ws = gw.socket().await;
    ws.send_msg(Message::Binary(br#"{"cmd":"heartbeat"}"#.to_vec().into()))
        .await;
    let r = ws.recv().await;
    assert_eq!(r["errorCode"], 1017);
    ws.send_msg(Message::Text("{not json".into())).await;
    assert_eq!(ws.recv().await["errorCode"], 1017);
    assert_eq!(ws.cmd("heartbeat", json!({})).await["ok"], 1);
}

#[tokio::test]
async fn binary_first_frame_gets_1019() {
    let gw = spawn_gateway().await;
    let mut ws = gw.raw_socket().await;
    ws.send_msg(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(ws.recv().await["errorCode"], 1019);
    assert_eq!(u16::from(ws.closed().await.unwrap().code), 1008);
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_keep_working() {
    let gw = spawn_with(|c| {
        c.max_message_bytes = 1024;
        c.max_sockets_per_token = 2;
    })
    .await;
    let mut bystander = gw.socket().await;
    let mut ws = gw.socket().await;
    let big = json!({"cmd": "SetUserNotes", "uid": "x", "notes": "n".repeat(4096)});
    ws.send(&big).await;
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
    assert_eq!(bystander.cmd("heartbeat", json!({})).await["ok"], 1);
    let (s, _) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn oversized_post_body_gets_413() {
    let gw = spawn_with(|c| c.max_body_bytes = 1024).await;
    let big = json!({"token": gw.token, "cmd": "GetUsers", "pad": "p".repeat(4096)}).to_string();
    let (s, r) = gw.post_raw(big.clone()).await;
    assert_eq!(s, 413);
    assert_eq!(r["errorCode"], 1017);
    // Without Content-Length (chunked), the limit holds too.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let (s, _) = gw.post_raw(reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(s, 413);
    let (s, _) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(s, 200);
    // A body within the limit that arrives in several chunks is read whole.
    let small = json!({"token": gw.token, "cmd": "GetUsers", "pad": "p".repeat(500)}).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = small
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let (s, r) = gw
        .post_raw(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .await;
    assert_eq!((s, &r["cmd"]), (200, &json!("GetUsers")), "{r}");
}

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let gw = spawn_with(|c| c.rate_limit = 3).await;
    let mut limited = None;
    for _ in 0..10 {
        let res = gw
            .http
            .post(gw.api_url())
            .json(&json!({"token": gw.token, "cmd": "GetUsers"}))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: serde_json::Value = res.json().await.unwrap();
            limited = Some((retry, body));
            break;
        }
    }
    let (retry, body) = limited.expect("the 4th command within a second is refused");
    assert!(retry >= 1);
    validate_message(&body);
    assert_eq!(body["errorCode"], 2008);
    // Over a socket it is the same error reply.
    let mut ws = gw.socket().await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(ws.cmd("GetUsers", json!({})).await["errorCode"].as_u64());
    }
    assert!(codes.contains(&Some(2008)), "{codes:?}");
}

#[tokio::test]
async fn api_answers_only_post_on_its_exact_path() {
    let gw = spawn_gateway().await;
    let body = json!({"token": gw.token, "cmd": "GetUsers"}).to_string();
    let send = |method: reqwest::Method, url: String| {
        gw.http
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let r = send(reqwest::Method::POST, format!("{}?trace=1", gw.api_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (r["cmd"].clone(), r["ok"].clone()),
        (json!("GetUsers"), json!(1))
    );
    let r = send(reqwest::Method::GET, gw.api_url()).await.unwrap();
    assert_eq!(r.status(), 405);
    let r = send(reqwest::Method::POST, format!("{}/", gw.api_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
