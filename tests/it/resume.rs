//! Lossless events: resume after a reconnect (also while events are being
//! produced, and across a restart), resumes the log cannot serve (4100,
//! then live), `GetEvents` paging and long polls, and who caused each event.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Makes one event (`onUserCreate`) through POST; returns nothing.
async fn make_event(gw: &TestGateway, n: u64) {
    let phone = format!("+4479220{:05}", 10_000 + n);
    let (s, r) = gw
        .cmd(
            "UpsertUser",
            json!({"botID": 3941, "phone": phone, "name": "Billy Bob"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

async fn resume_gateway(tweak: impl FnOnce(&mut convgate::config::Config)) -> TestGateway {
    let gw = spawn_with(|c| {
        c.rate_limit = 0;
        tweak(c);
    })
    .await;
    assert_eq!(
        gw.cmd("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
            .await
            .0,
        200
    );
    gw
}

/// Connects with `resume`; returns the socket and the `connected` reply.
async fn connect_resuming(gw: &TestGateway, epoch: &str, seq: u64) -> (Ws, Value) {
    let mut ws = gw.raw_socket().await;
    ws.send(&json!({"cmd": "connect", "token": gw.token, "resume": {"epoch": epoch, "seq": seq}}))
        .await;
    let hello = ws.recv().await;
    assert_eq!(hello["cmd"], "connected", "{hello}");
    (ws, hello)
}

/// Reads messages until `resumed`; returns the replayed events and it.
async fn until_resumed(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut events = Vec::new();
    loop {
        let m = ws.recv().await;
        if m["cmd"] == "resumed" {
            return (events, m);
        }
        events.push(m);
    }
}

#[tokio::test]
async fn a_dropped_socket_resumes_with_exactly_the_missed_events_then_live() {
    let gw = std::sync::Arc::new(resume_gateway(|_| {}).await);
    let mut n = 0;
    for round in 0..50 {
        let ws = gw.socket().await;
        drop(ws);
        let (_, hello) = connect_resuming(&gw, "0", 0).await;
        let epoch = hello["data"]["epoch"].as_str().unwrap().to_string();
        let from = hello["data"]["seq"].as_u64().unwrap();
        // Missed while away.
        for _ in 0..3 {
            n += 1;
            make_event(&gw, n).await;
        }
        // Produced while the replay runs.
        let producer = {
            let gw = gw.clone();
            let base = n;
            tokio::spawn(async move {
                for k in 1..=3 {
                    make_event(&gw, base + k).await;
                }
            })
        };
        n += 3;
        let (mut ws, _) = connect_resuming(&gw, &epoch, from).await;
        let (replayed, resumed) = until_resumed(&mut ws).await;
        let mut seqs: Vec<u64> = replayed
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            resumed["data"]["from"],
            from + 1,
            "round {round}: {resumed}"
        );
        assert_eq!(
            seqs.last().copied().unwrap_or(from),
            resumed["data"]["to"].as_u64().unwrap()
        );
        producer.await.unwrap();
        let last = from + 6;
        while seqs.last().copied().unwrap_or(from) < last {
            let e = ws.event().await;
            seqs.push(e["seq"].as_u64().unwrap());
        }
        let expected: Vec<u64> = (from + 1..=last).collect();
        assert_eq!(
            seqs, expected,
            "round {round}: each missed event once, in order, then live"
        );
        ws.silent_for(20).await;
    }
}

#[tokio::test]
async fn a_resume_survives_a_restart_and_bad_resumes_go_live_with_4100() {
    let mut gw = resume_gateway(|c| c.event_retention = 1.0).await;
    let hello = gw.socket().await;
    drop(hello);
    let (mut ws, first) = connect_resuming(&gw, "x", 0).await;
    let epoch = first["data"]["epoch"].as_str().unwrap().to_string();
    // An epoch this log never had: 4100 with where the log stands, then live.
    let (_, r) = until_resumed(&mut ws).await;
    assert_eq!(
        (r["ok"].clone(), r["errorCode"].clone()),
        (json!(0), json!(4100)),
        "{r}"
    );
    assert_eq!(r["data"]["epoch"], epoch);
    make_event(&gw, 1).await;
    assert_eq!(
        ws.event().await["cmd"],
        "onUserCreate",
        "live after a failed resume"
    );
    drop(ws);
    make_event(&gw, 2).await;
    // Across a restart, the same epoch and the missed events.
    gw.stop().await;
    gw.restart().await;
    let (mut ws, hello) = connect_resuming(&gw, &epoch, 1).await;
    assert_eq!(
        hello["data"]["epoch"], epoch,
        "the epoch outlives a restart"
    );
    let (replayed, resumed) = until_resumed(&mut ws).await;
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(
        (replayed[0]["seq"].clone(), resumed["ok"].clone()),
        (json!(2), json!(1))
    );
    drop(ws);
    // Events older than event_retention are trimmed: too old is 4100.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw.cmd("GetEvents", json!({"after": 0})).await;
        if r["errorCode"] == 4100 {
            assert!(r["oldestSeq"].as_u64().unwrap() > 1, "{r}");
            assert_eq!(r["epoch"], epoch);
            break;
        }
        assert!(Instant::now() < deadline, "the log was never trimmed: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut ws, _) = connect_resuming(&gw, &epoch, 0).await;
    let (_, r) = until_resumed(&mut ws).await;
    assert_eq!(r["errorCode"], 4100, "{r}");
}

#[tokio::test]
async fn get_events_pages_long_polls_and_ends_on_shutdown() {
    let mut gw = resume_gateway(|_| {}).await;
    for n in 1..=5 {
        make_event(&gw, n).await;
    }
    // Paging: every event once, in order.
    let (mut after, mut seen) = (0u64, Vec::new());
    loop {
        let (s, r) = gw
            .cmd("GetEvents", json!({"after": after, "limit": 2}))
            .await;
        assert_eq!(s, 200, "{r}");
        for e in r["data"].as_array().unwrap() {
            seen.push(e["seq"].as_u64().unwrap());
            assert_eq!(
                e["actor"],
                json!({"type": "api", "id": "default"}),
                "caused by the token"
            );
        }
        after = r["nextSeq"].as_u64().unwrap();
        if r["hasMore"] == false {
            break;
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    // Times out empty.
    let t0 = Instant::now();
    let (_, r) = gw
        .cmd("GetEvents", json!({"after": after, "wait": 0.3}))
        .await;
    assert!(
        r["data"].as_array().unwrap().is_empty() && r["nextSeq"] == after,
        "{r}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(250));
    // Wakes on an event.
    let poll = {
        let (http, url, token) = (gw.http.clone(), gw.api_url(), gw.token.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r: Value = http
                .post(url)
                .json(&json!({"token": token, "cmd": "GetEvents", "after": after, "wait": 10}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    make_event(&gw, 6).await;
    let (r, took) = poll.await.unwrap();
    assert_eq!(r["data"][0]["seq"], 6, "{r}");
    assert!(
        took < Duration::from_secs(5),
        "woken, not timed out: {took:?}"
    );
    // Errors.
    for (fields, code) in [
        (json!({"limit": 0}), 1017),
        (json!({"limit": 1001}), 1017),
        (json!({"wait": 31}), 1017),
        (json!({"epoch": "0000000000000000"}), 4100),
    ] {
        let (_, r) = gw.cmd("GetEvents", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields}: {r}");
    }
    // A long poll ends early and cleanly on shutdown.
    let poll = {
        let (http, url, token) = (gw.http.clone(), gw.api_url(), gw.token.clone());
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"token": token, "cmd": "GetEvents", "after": 6, "wait": 30}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    gw.stop().await;
    let r = poll.await.unwrap();
    assert_eq!(
        (r["ok"].clone(), r["data"].clone()),
        (json!(1), json!([])),
        "{r}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}
