//! The agent console in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver with `fantoccini`, against a
//! real gateway and the fake Graph API. Ignored by `cargo test`: `.ci/run`
//! runs them as their own step (`cargo test --test it browser:: --
//! --ignored`), which fails loudly when Chromium cannot start. Screenshots
//! go to `target/console-*.png`.

use crate::console::{agent_with_password, base, free_port, spawn_console, AGENT, PASSWORD};
use crate::helpers::*;
use crate::whatsapp::{create_bot, inbound, status_webhook, text_webhook_from, FakeGraph};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::time::Duration;

const XSS: &str = "<img src=x onerror=alert(1)>";
const CUSTOMER: &str = "16505550123";

/// A chromedriver child process, killed on drop.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// The child is reaped by `Driver`'s `Drop`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
async fn driver() -> Driver {
    let port = free_port();
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = std::process::Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (apt-get install chromium-driver): {e}"));
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Driver { child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on {url}");
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,900"]
        }),
    );
    // chromedriver listens on loopback, in plain http.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("Chromium starts under chromedriver")
}

/// Polls the JavaScript expression `cond` until it is truthy (10 s).
async fn until(c: &Client, what: &str, cond: &str) {
    let script = format!("return !!({cond});");
    for _ in 0..200 {
        if c.execute(&script, vec![]).await.unwrap() == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = c.source().await.unwrap_or_default();
    panic!("timed out waiting for {what} ({cond}); page:\n{page}");
}

async fn js(c: &Client, expr: &str) -> Value {
    c.execute(&format!("return ({expr});"), vec![])
        .await
        .unwrap()
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn sign_in(c: &Client, email: &str, password: &str) {
    until(
        c,
        "the sign-in form",
        "!document.getElementById('signin').hidden",
    )
    .await;
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "#signin-submit").await;
}

#[tokio::test]
#[ignore = "needs Chromium; .ci/run runs it as its own step"]
async fn an_agent_answers_a_customer_in_chromium() {
    let fake = FakeGraph::start().await;
    let graph = fake.base();
    let gw = spawn_console(|c| {
        c.graph_base_url = graph;
        c.provider_retry_schedule = vec![0.02];
        // The agent answers faster than the reference's one message per
        // second per phone.
        c.phone_rate_limit = 1000;
    })
    .await;
    create_bot(&gw).await;
    agent_with_password(&gw, AGENT, "Ann Agent").await;
    gw.cmd(
        "CreateAgent",
        json!({"email": "bob@example.com", "name": "Bob Agent"}),
    )
    .await;
    let mut crm = gw.socket().await;
    let d = driver().await;
    let c = browser(&d).await;

    // Sign in: a wrong password is refused, the right one opens the inbox.
    c.goto(&format!("{}/console", base(&gw))).await.unwrap();
    sign_in(&c, AGENT, "not the right password").await;
    until(
        &c,
        "the refusal",
        "document.getElementById('signin-error').textContent.includes('Wrong email or password')",
    )
    .await;
    sign_in(&c, AGENT, PASSWORD).await;
    until(&c, "the inbox", "!document.getElementById('app').hidden && document.getElementById('link-state').textContent === ''").await;

    // A customer writes on WhatsApp: the conversation appears without a
    // reload, the hostile name rendered as text.
    let mut hook = text_webhook_from(
        CUSTOMER,
        "wamid.HBgLMTY1MDU1NTAxMjMVAgASGBQzQTRBNjVDRjlFMjg4NEI5QjhBNwA=",
        "Hello, is my order shipped?",
        None,
    );
    hook["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["name"] = json!(XSS);
    assert_eq!(inbound(&gw, &hook).await, 200);
    until(
        &c,
        "the new conversation",
        &format!(
            "[...document.querySelectorAll('#conversations .who')].some(e => e.textContent === {})",
            json!(XSS)
        ),
    )
    .await;
    assert_eq!(
        js(&c, "document.querySelectorAll('#conversations img').length").await,
        json!(0)
    );
    assert!(c.get_alert_text().await.is_err(), "no script ran");
    screenshot(&c, "console-inbox.png").await;

    // The user's url (the CRM's link) opens the conversation.
    let uid = format!("3941-wa3-{CUSTOMER}");
    let (_, user) = gw.cmd("GetUser", json!({"uid": uid})).await;
    let url = user["data"]["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/console/u/", base(&gw))),
        "{url}"
    );
    c.goto(&url).await.unwrap();
    until(
        &c,
        "the transcript",
        "document.querySelectorAll('#transcript li.client').length === 1",
    )
    .await;
    assert_eq!(
        js(&c, "document.getElementById('c-title').textContent").await,
        json!(XSS)
    );
    assert_eq!(
        js(&c, "document.querySelectorAll('img').length").await,
        json!(0)
    );

    // Take it, answer it: the provider receives the send; a status moves
    // its delivery state.
    click(&c, "#take").await;
    until(
        &c,
        "assigned",
        "document.getElementById('c-state').textContent === 'assigned to Ann Agent'",
    )
    .await;
    fill(&c, "#reply", "Yes, it ships today.").await;
    click(&c, "#send").await;
    let mut sends = Vec::new();
    for _ in 0..100 {
        sends = fake.sends().await;
        if !sends.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["text"]["body"], "Yes, it ships today.");
    assert_eq!(sends[0]["to"], CUSTOMER);
    until(
        &c,
        "the agent's row",
        "document.querySelector('#transcript li.agent .ack') !== null",
    )
    .await;
    let (_, conv) = gw.cmd("GetConversation", json!({"uid": uid})).await;
    assert_eq!(
        conv["data"][1]["agentemail"], AGENT,
        "sent as the agent: {conv}"
    );
    // The fake Graph numbers its wamids from 0.
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0".to_string();
    assert_eq!(
        inbound(&gw, &status_webhook(&wamid, "delivered", CUSTOMER)).await,
        200
    );
    until(
        &c,
        "delivered",
        "document.querySelector('#transcript li.agent .ack').dataset.ack === '2'",
    )
    .await;

    // Outside WhatsApp's 24-hour window a reply is refused: the reason is
    // shown and an approved template can go out instead.
    fake.refuse_texts_outside_window().await;
    fill(&c, "#reply", "Are you still there?").await;
    click(&c, "#send").await;
    until(
        &c,
        "the refusal",
        "document.getElementById('send-error').textContent.includes('Re-engagement message')",
    )
    .await;
    until(
        &c,
        "the templates",
        "!document.getElementById('templates').hidden",
    )
    .await;
    let names = js(
        &c,
        "[...document.querySelectorAll('#template option')].map(o => o.textContent)",
    )
    .await;
    assert!(
        !names.to_string().contains("spring_sale"),
        "only approved templates: {names}"
    );
    click(&c, "#template option[value*='followup_inquiry_request']").await;
    click(&c, "#send-template").await;
    until(
        &c,
        "the template sent",
        "document.getElementById('templates').hidden",
    )
    .await;
    let sends = fake.sends().await;
    let last = sends.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["template"]["name"].as_str()),
        (Some("template"), Some("followup_inquiry_request")),
        "{last}"
    );
    assert_eq!(
        sends.iter().filter(|s| s["type"] == "text").count(),
        2,
        "the refused text was tried once"
    );

    // A note is kept, never sent.
    fill(&c, "#note", "Customer asked twice; prioritise.").await;
    click(&c, "#add-note").await;
    until(
        &c,
        "the note",
        "document.querySelector('#transcript li.note') !== null",
    )
    .await;
    assert_eq!(
        fake.sends().await.len(),
        sends.len(),
        "a note is never sent"
    );
    screenshot(&c, "console-conversation.png").await;

    // An edit in the user panel is the CRM's own change, with its event.
    fill(&c, "#u-notes", "Prefers WhatsApp").await;
    click(&c, "#u-save").await;
    let update = loop {
        let ev = crm.event().await;
        if ev["cmd"] == "onUserUpdate" {
            break ev;
        }
    };
    assert_eq!(
        update["data"]["update"],
        json!({"notes": "Prefers WhatsApp"})
    );
    assert_eq!(update["actor"], json!({"type": "agent", "id": AGENT}));

    // Closing it tells the CRM, with the rows.
    click(&c, "#close").await;
    let closed = loop {
        let ev = crm.event().await;
        if ev["cmd"] == "onUserConversation" {
            break ev;
        }
    };
    assert_eq!(closed["uid"], uid);
    let rows = closed["data"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["msg"] == "Yes, it ships today." && r["sender"] == "agent"),
        "{closed}"
    );
    assert!(
        rows.iter()
            .any(|r| r["msg"] == "Hello, is my order shipped?"),
        "{closed}"
    );
    assert_eq!(closed["actor"]["id"], AGENT);
    until(
        &c,
        "closed",
        "document.getElementById('c-state').textContent === 'closed'",
    )
    .await;

    // Phone width: everything fits.
    c.set_window_size(375, 812).await.unwrap();
    assert!(
        js(
            &c,
            "document.documentElement.scrollWidth <= window.innerWidth"
        )
        .await
            == json!(true)
    );
    c.set_window_size(1280, 900).await.unwrap();

    // An agent of another organization cannot open the link.
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Other"}))
        .await;
    let other = org["data"]["token"].as_str().unwrap().to_string();
    gw.cmd_as(
        &other,
        "CreateAgent",
        json!({"email": "eve@example.com", "name": "Eve", "password": PASSWORD}),
    )
    .await;
    click(&c, "#signout").await;
    sign_in(&c, "eve@example.com", PASSWORD).await;
    until(
        &c,
        "Eve's inbox",
        "document.getElementById('me').textContent === 'Eve'",
    )
    .await;
    c.goto(&url).await.unwrap();
    until(
        &c,
        "the refusal",
        "document.getElementById('link-state').textContent.includes('not in your organization')",
    )
    .await;
    assert_eq!(
        js(&c, "document.getElementById('conversation').hidden").await,
        json!(true)
    );

    // A page of another origin cannot use the session's socket.
    let port = gw.gw().addr.port();
    c.goto(&format!("http://localhost:{port}/console"))
        .await
        .unwrap();
    let verdict = c
        .execute_async(
            &format!(
                "const done = arguments[0]; const ws = new WebSocket('ws://127.0.0.1:{port}/console/ws');
                 ws.onopen = () => ws.send(JSON.stringify({{cmd: 'connect'}}));
                 ws.onmessage = (m) => done('open: ' + m.data);
                 ws.onerror = () => done('refused'); ws.onclose = () => done('refused');"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(verdict, json!("refused"));
    c.close().await.unwrap();
}
