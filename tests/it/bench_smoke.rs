//! Keeps the benchmark harness from rotting: every load-generator scenario
//! runs for about a second at tiny scale against a test gateway and against
//! the bare baselines. No timing is asserted; only that each scenario ran and
//! counted what it should.

use crate::helpers::*;

#[allow(dead_code)]
#[path = "../../examples/bare_http_echo.rs"]
mod bare_http_echo;
#[allow(dead_code)]
#[path = "../../examples/bare_ws_echo.rs"]
mod bare_ws_echo;
#[allow(dead_code)]
#[path = "../../examples/loadgen.rs"]
mod loadgen;

use loadgen::{Opts, Scenario, Target};

fn opts(scenario: Scenario, target: Target, addr: String, token: &str, connections: usize) -> Opts {
    Opts {
        scenario,
        target,
        addr,
        token: token.to_string(),
        connections,
        duration: 0.5,
        warmup: 0.1,
        rate: 0.0,
        pid: Some(std::process::id()),
        events: 40,
        fsync_dir: None,
        public_base_url: None,
        conversations: 20,
        client: loadgen::WsClient::Raw,
        receiver_only: false,
        spread: Vec::new(),
        label: None,
    }
}

async fn bench_gateway() -> TestGateway {
    spawn_with(|c| {
        c.rate_limit = 0;
        c.max_sockets_per_token = 1000;
        c.allow_private_webhooks = true;
    })
    .await
}

async fn bare(
    serve: fn(
        tokio::net::TcpListener,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(listener));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_post_round_trips_closed_and_open_loop() {
    let gw = bench_gateway().await;
    let addr = gw.gw().addr.to_string();
    let r = loadgen::run(&opts(
        Scenario::M1,
        Target::Gateway,
        addr.clone(),
        &gw.token,
        4,
    ))
    .await
    .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    assert!(r.p50_us > 0 && r.p99_us >= r.p50_us && r.peak_rss_kib.is_some());
    let mut open = opts(Scenario::M1, Target::Gateway, addr, &gw.token, 4);
    open.rate = 200.0;
    let r = loadgen::run(&open).await.unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    let bare_addr = bare(|l| Box::pin(bare_http_echo::serve(l))).await;
    let r = loadgen::run(&opts(Scenario::M1, Target::Bare, bare_addr, "", 4))
        .await
        .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_floor_answers_getuser_and_refuses_a_wrong_token() {
    use bare_http_echo::floor::{Floor, TOKEN};
    let http = bare(|l| {
        Box::pin(bare_http_echo::serve_as(
            l,
            Some(std::sync::Arc::new(Floor::default())),
        ))
    })
    .await;
    let r = loadgen::run(&opts(Scenario::M1, Target::Floor, http.clone(), TOKEN, 4))
        .await
        .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    // Every request with another token is answered 400 (errorCode 1001).
    let r = loadgen::run(&opts(Scenario::M1, Target::Floor, http, "not-the-token", 4))
        .await
        .unwrap();
    assert!(r.operations == 0 && r.errors > 0, "{r:?}");
    let ws = bare(|l| {
        Box::pin(bare_ws_echo::serve_as(
            l,
            Some(std::sync::Arc::new(bare_ws_echo::floor::Floor::default())),
        ))
    })
    .await;
    let r = loadgen::run(&opts(Scenario::M2, Target::Floor, ws, TOKEN, 4))
        .await
        .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    // The floor is for m1 and m2 only.
    let err = loadgen::run(&opts(Scenario::M5, Target::Floor, String::new(), TOKEN, 1))
        .await
        .unwrap_err();
    assert!(err.contains("m1 and m2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_websocket_round_trips() {
    let gw = bench_gateway().await;
    let r = loadgen::run(&opts(
        Scenario::M2,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        4,
    ))
    .await
    .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    assert!(r.gen_cpu.is_some() && r.server_cpu.is_some(), "{r:?}");
    let bare_addr = bare(|l| Box::pin(bare_ws_echo::serve(l))).await;
    let r = loadgen::run(&opts(Scenario::M2, Target::Bare, bare_addr.clone(), "", 4))
        .await
        .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    // The independent client of bench.sh's generator check.
    for target in [Target::Gateway, Target::Bare] {
        let addr = match target {
            Target::Gateway => gw.gw().addr.to_string(),
            Target::Bare | Target::Floor => bare_addr.clone(),
        };
        let mut o = opts(Scenario::M2, target, addr, &gw.token, 4);
        o.client = loadgen::WsClient::Tungstenite;
        let r = loadgen::run(&o).await.unwrap();
        assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_idle_sockets_and_rss() {
    let gw = bench_gateway().await;
    let r = loadgen::run(&opts(
        Scenario::M3,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        20,
    ))
    .await
    .unwrap();
    assert_eq!((r.operations, r.errors), (20, 0), "{r:?}");
    assert!(r.extra["rss_after_kib"].as_u64().unwrap() > 0, "{r:?}");
    assert!(r.extra.contains_key("rss_per_socket_kib"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_fan_out_reaches_every_socket() {
    let gw = bench_gateway().await;
    let addr = gw.gw().addr.to_string();
    let mut o = opts(Scenario::M4, Target::Gateway, addr.clone(), &gw.token, 10);
    // Sockets spread over "two nodes" (M10's three-node fan-out), here
    // the same one twice; the label is reported.
    o.spread = vec![addr];
    o.label = Some("spread".into());
    let r = loadgen::run(&o).await.unwrap();
    assert_eq!(r.label.as_deref(), Some("spread"));
    assert!(r.extra["rounds"].as_u64().unwrap() >= 1, "{r:?}");
    assert_eq!(r.extra["missing"], 0, "{r:?}");
    assert_eq!(r.operations, r.extra["rounds"].as_u64().unwrap() * 10);
    // The baseline: the same fan-out through the bare echo's broadcast.
    let bare_addr = bare(|l| Box::pin(bare_ws_echo::serve(l))).await;
    let r = loadgen::run(&opts(Scenario::M4, Target::Bare, bare_addr, "", 10))
        .await
        .unwrap();
    assert!(r.extra["rounds"].as_u64().unwrap() >= 1, "{r:?}");
    assert_eq!(r.extra["missing"], 0, "{r:?}");
    assert_eq!(r.operations, r.extra["rounds"].as_u64().unwrap() * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m5_durable_writes_share_flushes() {
    let gw = bench_gateway().await;
    let mut o = opts(
        Scenario::M5,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        8,
    );
    let dir = tempfile::tempdir().unwrap();
    o.fsync_dir = Some(dir.path().to_path_buf());
    let r = loadgen::run(&o).await.unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    assert!(
        r.extra["writes_per_flush"].as_f64().unwrap() >= 1.0,
        "{r:?}"
    );
    assert!(r.extra["fsync_per_s"].as_f64().unwrap() > 0.0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_webhook_deliveries_each_once() {
    let gw = bench_gateway().await;
    let r = loadgen::run(&opts(
        Scenario::M6,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        4,
    ))
    .await
    .unwrap();
    assert_eq!(r.operations, 40, "every event delivered: {r:?}");
    assert_eq!(r.extra["received"], 40, "and once: {r:?}");
    let r = loadgen::run(&opts(Scenario::M6, Target::Bare, String::new(), "", 4))
        .await
        .unwrap();
    assert_eq!(r.operations, 40, "{r:?}");
    // The receiver alone, as bench.sh measures its capacity.
    let mut o = opts(Scenario::M6, Target::Bare, "127.0.0.1:0".into(), "", 1);
    o.receiver_only = true;
    let r = loadgen::run(&o).await.unwrap();
    assert_eq!((r.operations, r.errors), (0, 0), "nothing posted: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_signed_inbound_sms_are_applied_and_share_flushes() {
    let gw = spawn_with(|c| {
        c.rate_limit = 0;
        c.public_base_url = Some("https://gw.bench.test".into());
    })
    .await;
    let mut o = opts(
        Scenario::M7,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        4,
    );
    o.public_base_url = Some("https://gw.bench.test".into());
    let r = loadgen::run(&o).await.unwrap();
    assert!(
        r.operations > 0 && r.errors == 0,
        "every post verified and applied: {r:?}"
    );
    assert!(
        r.extra["writes_per_flush"].as_f64().unwrap() >= 1.0,
        "{r:?}"
    );
    let (_, users) = gw.cmd("GetUsers", serde_json::json!({})).await;
    assert_eq!(
        users["data"].as_array().unwrap().len(),
        4,
        "one user per number"
    );
    let bare_addr = bare(|l| Box::pin(bare_http_echo::serve(l))).await;
    let r = loadgen::run(&opts(Scenario::M7, Target::Bare, bare_addr, "", 4))
        .await
        .unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m8_conversation_pages_are_timed() {
    let gw = spawn_with(|c| {
        c.rate_limit = 0;
        c.phone_rate_limit = 0;
        c.public_base_url = Some("https://gw.bench.test".into());
    })
    .await;
    let mut o = opts(
        Scenario::M8,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        1,
    );
    o.public_base_url = Some("https://gw.bench.test".into());
    let r = loadgen::run(&o).await.unwrap();
    assert!(r.operations > 0 && r.errors == 0, "{r:?}");
    assert!(r.extra["flat_page_bytes"].as_u64().unwrap() > 0, "{r:?}");
    let (_, open) = gw.cmd("GetOpenConversations", serde_json::json!({})).await;
    assert_eq!(
        open["data"].as_array().unwrap().len(),
        1000,
        "1,000 open conversations seeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m9_resume_and_long_poll_wake_ups() {
    let gw = bench_gateway().await;
    let mut o = opts(
        Scenario::M9,
        Target::Gateway,
        gw.gw().addr.to_string(),
        &gw.token,
        1,
    );
    o.events = 200;
    let r = loadgen::run(&o).await.unwrap();
    assert_eq!(r.operations, 200, "every missed event replayed: {r:?}");
    assert!(r.extra["wake_rounds"].as_u64().unwrap() >= 3, "{r:?}");
}
