//! API keys and the sandbox (extension, issue 20): named live and test
//! keys on both transports, revocation, the token as key `default`, the
//! sandbox's isolation, simulated sends and acks that never reach a
//! provider, simulated failures and `SimulateInbound`.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A provider that records every request and answers 500: the sandbox
/// must never reach it.
async fn recording_provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    server
}

async fn create_key(gw: &TestGateway, name: &str, mode: &str) -> String {
    let (s, r) = gw
        .cmd("CreateApiKey", json!({"name": name, "mode": mode}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["data"]["name"].clone(), r["data"]["mode"].clone()),
        (json!(name), json!(mode))
    );
    r["data"]["key"].as_str().unwrap().to_string()
}

/// Polls `GetMessageDetails` with `key` until `mid` has `ack` (5 s at most).
async fn wait_ack(gw: &TestGateway, key: &str, mid: &str, ack: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, r) = gw
            .cmd_as(key, "GetMessageDetails", json!({"mid": mid}))
            .await;
        if r["ack"] == ack {
            return r;
        }
        assert!(Instant::now() < deadline, "ack {ack} not reached: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_work_on_both_transports_and_revoking_one_closes_its_sockets() {
    let gw = spawn_gateway().await;
    let live = create_key(&gw, "crm-prod", "live").await;
    let test = create_key(&gw, "crm-dev", "test").await;
    assert_eq!(live.len(), 40);
    assert_ne!(live, test);

    // A second key with a taken name, a bad mode, `default`: 1017.
    for fields in [
        json!({"name": "crm-prod"}),
        json!({"name": "x", "mode": "staging"}),
        json!({"name": "default"}),
        json!({"name": "has space"}),
    ] {
        let (s, r) = gw.cmd("CreateApiKey", fields.clone()).await;
        assert_eq!(
            (s, r["errorCode"].clone()),
            (400, json!(1017)),
            "{fields}: {r}"
        );
    }

    // Both transports, exactly like the token; no `test` for a live key.
    let (s, r) = gw.cmd_as(&live, "GetUsers", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert!(r.get("test").is_none(), "{r}");
    let mut live_ws = gw.socket_as(&live).await;
    let r = live_ws.cmd("heartbeat", json!({})).await;
    assert_eq!(r["ok"], 1);
    let mut test_ws = gw.socket_as(&test).await;
    let r = test_ws.cmd("GetUsers", json!({})).await;
    assert_eq!(
        (r["ok"].clone(), r["test"].clone()),
        (json!(1), json!(true)),
        "{r}"
    );

    // Events caused by a key name it as their actor.
    gw.cmd("CreateBot", json!({"botID": 7001, "kind": "whatsapp"}))
        .await;
    let r = live_ws
        .cmd(
            "UpsertUser",
            json!({"botID": 7001, "phone": "+14155552123"}),
        )
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    let ev = live_ws.event().await;
    assert_eq!(ev["cmd"], "onUserCreate");
    assert_eq!(ev["actor"], json!({"type": "api", "id": "crm-prod"}));

    // A test key manages no keys and no token: 1001.
    for (cmd, fields) in [
        ("CreateApiKey", json!({"name": "more"})),
        ("GetApiKeys", json!({})),
        ("RevokeApiKey", json!({"name": "crm-prod"})),
        ("ResetToken", json!({})),
    ] {
        let (s, r) = gw.cmd_as(&test, cmd, fields).await;
        assert_eq!(
            (s, r["errorCode"].clone(), r["test"].clone()),
            (401, json!(1001), json!(true)),
            "{cmd}: {r}"
        );
    }

    // GetApiKeys: the token as `default`, every key, last use, never a key.
    let (_, r) = gw.cmd("GetApiKeys", json!({})).await;
    let keys = r["data"].as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "default");
    assert!(
        names.contains(&"crm-prod") && names.contains(&"crm-dev"),
        "{r}"
    );
    assert!(
        keys.iter()
            .all(|k| k.get("key").is_none() && k["lastUsed"].is_string()),
        "{r}"
    );
    assert!(!r.to_string().contains(&live) && !r.to_string().contains(&test));

    // Revoking: the key's sockets close 1008 at once, and it stops working;
    // other keys' sockets stay.
    let (s, r) = gw.cmd("RevokeApiKey", json!({"name": "crm-prod"})).await;
    assert_eq!(s, 200, "{r}");
    let frame = live_ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    let (s, r) = gw.cmd_as(&live, "GetUsers", json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (401, json!(1001)), "{r}");
    let (s, r) = gw.cmd("RevokeApiKey", json!({"name": "crm-prod"})).await;
    assert_eq!((s, r["errorCode"].clone()), (401, json!(1001)), "{r}");
    let r = test_ws.cmd("heartbeat", json!({})).await;
    assert_eq!(r["ok"], 1, "{r}");

    // The token is the key `default`: ResetToken replaces it, the named
    // keys keep working.
    let (s, r) = gw.cmd("ResetToken", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let new_token = r["data"]["token"].as_str().unwrap().to_string();
    let (s, _) = gw.cmd_as(&new_token, "GetApiKeys", json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(s, 401, "the old token stopped");
    let (s, _) = gw.cmd_as(&test, "GetUsers", json!({})).await;
    assert_eq!(s, 200);
    let r = test_ws.cmd("heartbeat", json!({})).await;
    assert_eq!(r["ok"], 1, "a test key's socket survives ResetToken: {r}");

    // DisableApi stops every key of the organization, test keys included.
    let (s, r) = gw.cmd_as(&new_token, "DisableApi", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let frame = test_ws.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008);
    let (s, _) = gw.cmd_as(&test, "GetUsers", json!({})).await;
    assert_ne!(s, 200);
    let (s, r) = gw
        .cmd_as(ADMIN_TOKEN, "EnableApi", json!({"orgID": "default"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, _) = gw.cmd_as(&test, "GetUsers", json!({})).await;
    assert_eq!(s, 200);
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn the_sandbox_and_the_live_organization_never_see_each_other() {
    let live_hook = receiver(200).await;
    let test_hook = receiver(200).await;
    let gw = spawn_with(|c| c.allow_private_webhooks = true).await;
    let test = create_key(&gw, "dev", "test").await;
    let (s, r) = gw.cmd("SetWebhook", json!({"url": live_hook.uri()})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = gw
        .cmd_as(&test, "SetWebhook", json!({"url": test_hook.uri()}))
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, r) = gw.cmd("GetWebhook", json!({})).await;
    assert_eq!(r["data"]["url"], json!(live_hook.uri()), "{r}");

    // Bots are shared: one created live is usable from the sandbox.
    gw.cmd("CreateBot", json!({"botID": 7101, "kind": "whatsapp"}))
        .await;
    let (_, r) = gw.cmd_as(&test, "GetBots", json!({})).await;
    assert!(r.to_string().contains("7101"), "{r}");

    let mut live_ws = gw.socket().await;
    let mut test_ws = gw.socket_as(&test).await;
    let (_, r) = gw
        .cmd_as(
            &test,
            "UpsertUser",
            json!({"botID": 7101, "phone": "+14155552201", "name": "Sandy"}),
        )
        .await;
    let sandbox_uid = r["uid"].as_str().unwrap().to_string();
    let (_, r) = gw
        .cmd(
            "UpsertUser",
            json!({"botID": 7101, "phone": "+14155552202", "name": "Liv"}),
        )
        .await;
    let live_uid = r["uid"].as_str().unwrap().to_string();

    // Users: each side sees its own only.
    let (_, r) = gw.cmd("GetUsers", json!({})).await;
    assert!(
        r.to_string().contains(&live_uid) && !r.to_string().contains(&sandbox_uid),
        "{r}"
    );
    let (_, r) = gw.cmd_as(&test, "GetUsers", json!({})).await;
    assert!(
        r.to_string().contains(&sandbox_uid) && !r.to_string().contains(&live_uid),
        "{r}"
    );
    let (s, _) = gw.cmd("GetUser", json!({"uid": sandbox_uid})).await;
    assert_ne!(s, 200);

    // Events: each socket gets its own side's only.
    let ev = test_ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["data"]["uid"].clone()),
        (json!("onUserCreate"), json!(sandbox_uid))
    );
    let ev = live_ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["data"]["uid"].clone()),
        (json!("onUserCreate"), json!(live_uid))
    );
    test_ws.silent_for(200).await;
    live_ws.silent_for(0).await;

    // Webhooks: each receiver gets its own side's only.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (l, t) = (bodies(&live_hook).await, bodies(&test_hook).await);

        if !l.is_empty() && !t.is_empty() {
            assert!(
                l.iter().all(|e| e["data"]["uid"] == json!(live_uid)),
                "{l:?}"
            );
            assert!(
                t.iter().all(|e| e["data"]["uid"] == json!(sandbox_uid)),
                "{t:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks not delivered: {l:?} {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sandbox_sends_are_simulated_end_to_end_and_never_reach_a_provider() {
    let provider = recording_provider().await;
    let callbacks = receiver(200).await;
    let base = provider.uri();
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.graph_base_url = base.clone();
        c.sandbox_ack_delays = vec![0.05, 0.1, 0.15];
        c.phone_rate_limit = 1000;
    })
    .await;
    let test = create_key(&gw, "dev", "test").await;
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": 7201, "kind": "whatsapp", "phone_number_id": "106540352242922",
                "waba_id": "102290129340398", "access_token": "EAAJB-sandbox"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": 7202, "kind": "sms", "account_sid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "auth_token": "twilio-secret", "from": "+15557122661", "twilio_base_url": base}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    gw.cmd("CreateBot", json!({"botID": 7203, "kind": "telegram"}))
        .await;

    // SimulateInbound: live keys are refused.
    let (s, r) = gw
        .cmd(
            "SimulateInbound",
            json!({"botID": 7201, "phone": "+14155552301", "message": "hi"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (401, json!(1001)), "{r}");

    // A customer writes (WhatsApp): the user and its conversation exist.
    let mut ws = gw.socket_as(&test).await;
    let r = ws
        .cmd("SimulateInbound", json!({"botID": 7201, "phone": "+14155552301", "message": "Where is my order?", "name": "Ada"}))
        .await;
    assert_eq!(
        (r["ok"].clone(), r["test"].clone()),
        (json!(1), json!(true)),
        "{r}"
    );
    let uid = r["uid"].as_str().unwrap().to_string();
    assert_eq!(uid, "7201-wa3-14155552301");
    assert!(
        r["providerMessageId"]
            .as_str()
            .unwrap()
            .starts_with("wamid."),
        "{r}"
    );
    let ev = ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["data"]["uid"].clone()),
        (json!("onUserCreate"), json!(uid))
    );
    let r = ws.cmd("GetConversation", json!({"uid": uid})).await;
    assert!(r.to_string().contains("Where is my order?"), "{r}");

    // The answer moves through sent → delivered → read, with callbacks.
    let r = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": uid, "message": "On its way!", "webhookURL": callbacks.uri()}),
        )
        .await;
    assert_eq!(
        (r["ok"].clone(), r["test"].clone()),
        (json!(1), json!(true)),
        "{r}"
    );
    let mid = r["mid"].as_str().unwrap().to_string();
    wait_ack(&gw, &test, &mid, 3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let acks: Vec<Value> = callbacks
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["ack"].clone())
            .collect();
        if acks.len() >= 3 {
            assert_eq!(acks, vec![json!(1), json!(2), json!(3)]);
            break;
        }
        assert!(Instant::now() < deadline, "callbacks: {acks:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // WhatsApp failure range: 3002 with the Graph error, ack -2.
    let r = ws
        .cmd(
            "SimulateInbound",
            json!({"botID": 7201, "phone": "+14155560000", "message": "hello"}),
        )
        .await;
    let gone = r["uid"].as_str().unwrap().to_string();
    let r = ws
        .cmd("SendTextMessage", json!({"uid": gone, "message": "hi"}))
        .await;
    assert_eq!(
        (
            r["errorCode"].clone(),
            r["whatsappErrorCode"].clone(),
            r["test"].clone()
        ),
        (json!(3002), json!(131026), json!(true)),
        "{r}"
    );

    // SMS: sent → delivered; the failure range answers 2005 with 21211.
    let r = ws
        .cmd(
            "SendSMSMessage",
            json!({"botID": 7202, "phone": "+14155552671", "message": "Your code is 1234"}),
        )
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    let sms_mid = r["mid"].as_str().unwrap().to_string();
    wait_ack(&gw, &test, &sms_mid, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, d) = gw
        .cmd_as(&test, "GetMessageDetails", json!({"mid": sms_mid}))
        .await;
    assert_eq!(d["ack"], 2, "SMS has no read receipt: {d}");
    let r = ws
        .cmd(
            "SendSMSMessage",
            json!({"botID": 7202, "phone": "+14155550000", "message": "x"}),
        )
        .await;
    assert_eq!(
        (r["errorCode"].clone(), r["smsErrorCode"].clone()),
        (json!(2005), json!(21211)),
        "{r}"
    );

    // Telegram: a chat, sent at once; the failure range is a user who
    // blocked the bot (2006, disabled).
    let r = ws
        .cmd(
            "SimulateInbound",
            json!({"botID": 7203, "chatId": 11112222, "message": "/start"}),
        )
        .await;
    let tg = r["uid"].as_str().unwrap().to_string();
    assert_eq!(tg, "7203-tel-11112222");
    let r = ws
        .cmd("SendTextMessage", json!({"uid": tg, "message": "Welcome"}))
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    wait_ack(&gw, &test, r["mid"].as_str().unwrap(), 1).await;
    let r = ws
        .cmd(
            "SimulateInbound",
            json!({"botID": 7203, "chatId": 33330000, "message": "/start"}),
        )
        .await;
    let blocked = r["uid"].as_str().unwrap().to_string();
    let r = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": blocked, "message": "Welcome"}),
        )
        .await;
    assert_eq!(r["errorCode"], 2006, "{r}");
    let (_, u) = gw.cmd_as(&test, "GetUser", json!({"uid": blocked})).await;
    assert_eq!(u["data"]["disabled"], true, "{u}");

    // Wrong address kinds are clear errors.
    let r = ws
        .cmd(
            "SimulateInbound",
            json!({"botID": 7203, "phone": "+14155552301", "message": "x"}),
        )
        .await;
    assert_eq!(r["errorCode"], 1017, "{r}");

    // Nothing of this reached the provider; the live organization saw none of it.
    assert!(
        provider
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "the sandbox called a provider"
    );
    let (_, r) = gw.cmd("GetUsers", json!({})).await;
    assert!(!r.to_string().contains(&uid), "{r}");
}

#[tokio::test]
async fn the_sandbox_log_is_trimmed_like_the_live_one() {
    let gw = spawn_with(|c| c.event_retention = 0.5).await;
    let test = create_key(&gw, "dev", "test").await;
    gw.cmd("CreateBot", json!({"botID": 7301, "kind": "whatsapp"}))
        .await;
    for phone in ["+14155552401", "+14155552402"] {
        let (s, r) = gw
            .cmd_as(&test, "UpsertUser", json!({"botID": 7301, "phone": phone}))
            .await;
        assert_eq!(s, 200, "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, r) = gw.cmd_as(&test, "GetEvents", json!({"after": 0})).await;
        if r["errorCode"] == 4100 {
            assert_eq!(r["test"], true, "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox log was never trimmed: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn queued_delivery_callbacks_are_capped_per_organization() {
    // A receiver that keeps failing: every callback stays queued.
    let down = receiver(500).await;
    let mut gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.sandbox_ack_delays = vec![0.0];
        c.webhook_retry_schedule = vec![0.0, 600.0];
        c.max_pending_callbacks_per_org = 1;
        c.phone_rate_limit = 1000;
    })
    .await;
    let test = create_key(&gw, "dev", "test").await;
    gw.cmd("CreateBot", json!({"botID": 7401, "kind": "sms"}))
        .await;
    let send = |phone: &'static str| json!({"botID": 7401, "phone": phone, "message": "x", "webhookURL": down.uri()});
    let (s, r) = gw
        .cmd_as(&test, "SendSMSMessage", send("+14155552501"))
        .await;
    assert_eq!(s, 200, "{r}");
    // Once its "sent" callback is queued, the next send with a callback is
    // refused and nothing of it is stored; sends without one still go.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let (_, r) = gw
            .cmd_as(&test, "SendSMSMessage", send("+14155552502"))
            .await;
        if r["ok"] == 0 {
            break r;
        }
        assert!(Instant::now() < deadline, "never capped: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused["errorCode"], 1017, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("max_pending_callbacks_per_org"),
        "{refused}"
    );
    let (s, r) = gw
        .cmd_as(
            &test,
            "SendSMSMessage",
            json!({"botID": 7401, "phone": "+14155552503", "message": "x"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // The count is rebuilt from the durable outbox after a restart.
    gw.stop().await;
    gw.restart().await;
    let (_, r) = gw
        .cmd_as(&test, "SendSMSMessage", send("+14155552505"))
        .await;
    assert_eq!(r["errorCode"], 1017, "{r}");
}

#[tokio::test]
async fn a_keys_last_use_is_kept_across_a_restart() {
    let mut gw = spawn_gateway().await;
    let used = create_key(&gw, "used", "live").await;
    create_key(&gw, "idle", "test").await;
    let (s, _) = gw.cmd_as(&used, "GetUsers", json!({})).await;
    assert_eq!(s, 200);
    let last_use = |r: &Value, name: &str| {
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["lastUsed"].clone())
            .unwrap()
    };
    let (_, before) = gw.cmd("GetApiKeys", json!({})).await;
    assert!(last_use(&before, "used").is_string(), "{before}");
    assert!(last_use(&before, "idle").is_null(), "{before}");
    gw.stop().await;
    gw.restart().await;
    let (_, after) = gw.cmd("GetApiKeys", json!({})).await;
    assert_eq!(
        last_use(&after, "used"),
        last_use(&before, "used"),
        "{after}"
    );
    assert!(last_use(&after, "idle").is_null(), "{after}");
}
