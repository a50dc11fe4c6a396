//! The agent console over real HTTP and WebSocket clients: passwords,
//! sign-in and its limits, sessions and their end, the Origin check, the
//! agent's command set, user links. The same console in real Chromium is
//! in `browser.rs`.

use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) const AGENT: &str = "ann@example.com";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// A port that was free a moment ago, so that `public_base_url` can name
/// the gateway's own address before it starts.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway whose `public_base_url` is its own loopback address.
pub(crate) async fn spawn_console(
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> TestGateway {
    let port = free_port();
    spawn_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.public_base_url = Some(format!("http://127.0.0.1:{port}"));
        tweak(c);
    })
    .await
}

pub(crate) fn base(gw: &TestGateway) -> String {
    gw.config.public_base_url.clone().unwrap()
}

/// Creates agent `email` with the console password.
pub(crate) async fn agent_with_password(gw: &TestGateway, email: &str, name: &str) {
    let (s, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": email, "name": name, "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(!r.to_string().contains(PASSWORD), "never echoed: {r}");
}

/// Signs in; returns the status, the `Set-Cookie` header and the body.
async fn sign_in_raw(
    gw: &TestGateway,
    email: &str,
    password: &str,
) -> (u16, Option<String>, Value) {
    let res = gw
        .http
        .post(format!("{}/console/session", base(gw)))
        .header("origin", base(gw))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    (status, cookie, res.json().await.unwrap())
}

/// Signs in and returns `convgate_session=<id>`.
pub(crate) async fn sign_in(gw: &TestGateway, email: &str) -> String {
    let (s, cookie, body) = sign_in_raw(gw, email, PASSWORD).await;
    assert_eq!(s, 200, "{body}");
    cookie.unwrap().split(';').next().unwrap().to_string()
}

/// Opens the console's WebSocket with `cookie` from `origin`.
async fn console_socket(
    gw: &TestGateway,
    cookie: &str,
    origin: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{}/console/ws", gw.gw().addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(Ws {
        stream,
        events: VecDeque::new(),
    })
}

/// A connected console socket of the session `cookie`.
async fn agent_socket(gw: &TestGateway, cookie: &str) -> Ws {
    let mut ws = console_socket(gw, cookie, &base(gw))
        .await
        .expect("upgrade");
    ws.send(&json!({"cmd": "connect", "events": ["onMessage", "onConversationUpdate"]}))
        .await;
    let r = ws.recv().await;
    assert_eq!(
        (r["cmd"].as_str(), r["ok"].as_i64()),
        (Some("connected"), Some(1)),
        "{r}"
    );
    ws
}

fn refused_status(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(res) => res.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn get(
    gw: &TestGateway,
    path: &str,
    cookie: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = gw.http.get(format!("{}{path}", base(gw)));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.headers().clone(),
        res.text().await.unwrap(),
    )
}

#[tokio::test]
async fn passwords_are_checked_hashed_and_never_echoed() {
    let gw = spawn_console(|_| {}).await;
    gw.cmd("CreateAgent", json!({"email": AGENT, "name": "Ann Agent"}))
        .await;
    let (s, r) = gw
        .cmd(
            "SetAgentPassword",
            json!({"email": AGENT, "password": "eleven char"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(4101)), "{r}");
    let (s, r) = gw
        .cmd(
            "SetAgentPassword",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r["errorCode"], 2002, "{s} {r}");
    let (s, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": "bob@example.com", "name": "Bob", "password": "short"}),
        )
        .await;
    assert_eq!(r["errorCode"], 4101, "{s} {r}");
    let (s, r) = gw
        .cmd(
            "SetAgentPassword",
            json!({"email": AGENT, "password": PASSWORD}),
        )
        .await;
    assert_eq!((s, &r["data"]), (200, &json!({"email": AGENT})), "{r}");
    // The password is nowhere on disk; its Argon2id hash is.
    let mut found_hash = false;
    for (name, bytes) in stored(&gw._dir) {
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "password in clear in {name}"
        );
        found_hash |= bytes.windows(10).any(|w| w == b"$argon2id$");
    }
    assert!(found_hash, "an Argon2id hash is stored");
    assert_eq!(sign_in_raw(&gw, AGENT, PASSWORD).await.0, 200);
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_refuses_alike_whether_or_not_the_email_exists() {
    let gw = spawn_console(|_| {}).await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;
    let (s1, c1, wrong) = sign_in_raw(&gw, AGENT, "not the password at all").await;
    let (s2, c2, unknown) = sign_in_raw(&gw, "nobody@example.com", PASSWORD).await;
    assert_eq!((s1, s2), (401, 401));
    assert!(c1.is_none() && c2.is_none());
    assert_eq!(wrong, unknown, "the refusal never says which");
    assert_eq!(wrong["errorCode"], 4103);

    let (s, cookie, body) = sign_in_raw(&gw, "ANN@example.com", PASSWORD).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["email"], AGENT);
    assert_eq!(body["data"]["org"], "default");
    let cookie = cookie.unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let session = cookie.split(';').next().unwrap();
    let (s, _, who) = get(&gw, "/console/session", Some(session)).await;
    assert_eq!(s, 200, "{who}");
    assert!(who.contains("Ann Agent"));
    let (s, _, _) = get(&gw, "/console/session", Some("convgate_session=forged")).await;
    assert_eq!(s, 401);

    // Sign-in needs the console's own Origin.
    let res = gw
        .http
        .post(format!("{}/console/session", base(&gw)))
        .header("origin", "https://evil.example")
        .json(&json!({"email": AGENT, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn sign_ins_are_limited_per_email() {
    let gw = spawn_console(|c| c.console_sign_in_limit = 3).await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;
    for _ in 0..3 {
        assert_eq!(sign_in_raw(&gw, AGENT, "wrong password guess").await.0, 401);
    }
    let res = gw
        .http
        .post(format!("{}/console/session", base(&gw)))
        .header("origin", base(&gw))
        .json(&json!({"email": AGENT, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errorCode"], 4103);
}

#[tokio::test]
async fn the_page_is_embedded_with_a_strict_policy_and_no_outside_requests() {
    let gw = spawn_console(|_| {}).await;
    let (s, h, page) = get(&gw, "/console", None).await;
    assert_eq!(s, 200);
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(!page.contains("<script>"), "no inline script");
    for asset in ["app.js", "app.css"] {
        let (s, h, body) = get(&gw, &format!("/console/assets/{asset}"), None).await;
        assert_eq!(s, 200, "{asset}");
        assert!(h["content-security-policy"].to_str().is_ok());
        for text in [&page, &body] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{asset}: no outside URL"
            );
        }
    }
    assert_eq!(get(&gw, "/console/assets/../Cargo.toml", None).await.0, 404);
    let (s, _, deep) = get(&gw, "/console/u/anything", None).await;
    assert_eq!((s, deep), (200, page), "a user link serves the page");
}

#[tokio::test]
async fn user_links_are_opaque_stable_and_only_open_in_their_organization() {
    let mut gw = spawn_console(|_| {}).await;
    let uid = gw.seed_user(3941, "+16505551234", "Jane Doe").await;
    let (_, r) = gw.cmd("GetUser", json!({"uid": uid})).await;
    let url = r["data"]["url"].as_str().unwrap().to_string();
    let prefix = format!("{}/console/u/", base(&gw));
    assert!(url.starts_with(&prefix), "{url}");
    let link = &url[prefix.len()..];
    assert_eq!(link.len(), 22, "{url}");
    assert!(!url.contains("6505551234") && !url.contains(&uid), "{url}");

    agent_with_password(&gw, AGENT, "Ann Agent").await;
    let cookie = sign_in(&gw, AGENT).await;
    let (s, _, body) = get(&gw, &format!("/console/links/{link}"), Some(&cookie)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"]["uid"],
        uid
    );
    // The link alone grants nothing.
    assert_eq!(
        get(&gw, &format!("/console/links/{link}"), None).await.0,
        401
    );

    // An agent of another organization cannot open it.
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Other"}))
        .await;
    let other_token = org["data"]["token"].as_str().unwrap().to_string();
    let (s, r) = gw
        .cmd_as(
            &other_token,
            "CreateAgent",
            json!({"email": "eve@example.com", "name": "Eve", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let eve = sign_in(&gw, "eve@example.com").await;
    let (s, _, body) = get(&gw, &format!("/console/links/{link}"), Some(&eve)).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(
        get(&gw, "/console/links/AAAAAAAAAAAAAAAAAAAAAA", Some(&eve))
            .await
            .2,
        body,
        "an unknown link and another organization's look the same"
    );

    // Stable across a restart, and moved to a new public_base_url.
    gw.stop().await;
    gw.config.public_base_url = Some("https://gw.example.com".into());
    gw.restart().await;
    let (_, r) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert_eq!(
        r["data"]["url"],
        format!("https://gw.example.com/console/u/{link}")
    );
}

#[tokio::test]
async fn users_created_before_public_base_url_get_links_at_start() {
    let mut gw = spawn_with(|_| {}).await;
    let uid = gw.seed_user(3941, "+16505551234", "Jane Doe").await;
    let (_, r) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert_eq!(r["data"]["url"], "", "no public_base_url: no link");
    gw.stop().await;
    gw.config.public_base_url = Some("https://gw.example.com".into());
    gw.restart().await;
    let (_, r) = gw.cmd("GetUser", json!({"uid": uid})).await;
    let url = r["data"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://gw.example.com/console/u/"),
        "{url}"
    );
}

#[tokio::test]
async fn the_console_socket_checks_origin_and_session_and_acts_as_the_agent() {
    let gw = spawn_console(|_| {}).await;
    let uid = gw.seed_user(3941, "+16505551234", "Jane Doe").await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;
    gw.cmd(
        "CreateAgent",
        json!({"email": "bob@example.com", "name": "Bob"}),
    )
    .await;
    let cookie = sign_in(&gw, AGENT).await;

    // Cross-site WebSocket hijacking: the cookie from another origin.
    let e = console_socket(&gw, &cookie, "https://evil.example")
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(e), 403);
    let e = console_socket(&gw, "convgate_session=forged", &base(&gw))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(e), 401);

    let mut ws = agent_socket(&gw, &cookie).await;
    // What an agent works with runs…
    let r = ws
        .cmd("GetOpenConversations", json!({"details": true}))
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    let r = ws
        .cmd("SetUserNotes", json!({"uid": uid, "notes": "VIP"}))
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserUpdate");
    assert_eq!(ev["actor"], json!({"type": "agent", "id": AGENT}), "{ev}");
    // …what the CRM manages does not.
    for (cmd, fields) in [
        (
            "CreateBot",
            json!({"botID": 7, "kind": "whatsapp", "name": "x"}),
        ),
        ("ResetToken", json!({})),
        (
            "SetAgentPassword",
            json!({"email": AGENT, "password": "another long password"}),
        ),
        ("DeleteUser", json!({"uid": uid})),
    ] {
        let r = ws.cmd(cmd, fields).await;
        assert_eq!(r["errorCode"], 4102, "{cmd}: {r}");
    }
    // An agent sends, notes and closes only as itself.
    let r = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": uid, "message": "hi", "agentEmail": "bob@example.com"}),
        )
        .await;
    assert_eq!(r["errorCode"], 4102, "{r}");
    let r = ws.cmd("CloseConversation", json!({"uid": uid})).await;
    assert_eq!(r["errorCode"], 4102, "{r}");
}

#[tokio::test]
async fn sessions_end_on_sign_out_password_change_and_agent_deletion() {
    let gw = spawn_console(|_| {}).await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;

    // Sign-out: that session's sockets close, the cookie stops working.
    let cookie = sign_in(&gw, AGENT).await;
    let other = sign_in(&gw, AGENT).await;
    let mut ws = agent_socket(&gw, &cookie).await;
    let mut other_ws = agent_socket(&gw, &other).await;
    let res = gw
        .http
        .delete(format!("{}/console/session", base(&gw)))
        .header("cookie", &cookie)
        .header("origin", base(&gw))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1008));
    assert_eq!(get(&gw, "/console/session", Some(&cookie)).await.0, 401);
    assert_eq!(
        other_ws.cmd("heartbeat", json!({})).await["ok"],
        1,
        "other sessions live on"
    );

    // A new password ends every session of the agent.
    gw.cmd(
        "SetAgentPassword",
        json!({"email": AGENT, "password": "a brand new password"}),
    )
    .await;
    assert_eq!(
        other_ws.closed().await.map(|f| u16::from(f.code)),
        Some(1008)
    );
    assert_eq!(get(&gw, "/console/session", Some(&other)).await.0, 401);

    // Deleting the agent too.
    gw.cmd(
        "SetAgentPassword",
        json!({"email": AGENT, "password": PASSWORD}),
    )
    .await;
    let cookie = sign_in(&gw, AGENT).await;
    let mut ws = agent_socket(&gw, &cookie).await;
    gw.cmd("DeleteAgent", json!({"email": AGENT})).await;
    assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1008));
    assert_eq!(get(&gw, "/console/session", Some(&cookie)).await.0, 401);
    assert_eq!(sign_in_raw(&gw, AGENT, PASSWORD).await.0, 401);
}

#[tokio::test]
async fn sessions_expire_after_console_session_ttl() {
    let gw = spawn_console(|c| {
        c.console_session_ttl = 1.0;
        c.template_refresh = 0.2;
    })
    .await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;
    let cookie = sign_in(&gw, AGENT).await;
    let mut ws = agent_socket(&gw, &cookie).await;
    assert_eq!(get(&gw, "/console/session", Some(&cookie)).await.0, 200);
    // The housekeeping ends it and closes its socket.
    assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1008));
    assert_eq!(get(&gw, "/console/session", Some(&cookie)).await.0, 401);
    let _ = ws.stream.next().await;
}
