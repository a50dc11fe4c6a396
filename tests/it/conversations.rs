//! Conversations between users and agents, over the WhatsApp channel
//! (fake Graph API, Meta's documented payloads): opening, assignment,
//! transfer rows, notes, closing by command and by idle timeout with the
//! reference's `onUserConversation`, the reference's list commands, the
//! flat polling cursor, and the opt-in events.

use crate::helpers::*;
use crate::whatsapp::{
    inbound, send_template, text_webhook_from, FakeGraph, ACCESS_TOKEN, APP_SECRET, BOT, PNID, WABA,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ANN: &str = "ann@example.com";
const BOB: &str = "bob@example.com";

async fn conv_gateway(
    fake: &FakeGraph,
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> TestGateway {
    let base = fake.base();
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.graph_base_url = base;
        c.phone_rate_limit = 100_000;
        c.send_rate_limit = 100_000;
        c.rate_limit = 0;
        c.webhook_retry_schedule = vec![0.0, 0.05, 0.05];
        tweak(c);
    })
    .await;
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": BOT, "kind": "whatsapp", "phone_number_id": PNID, "waba_id": WABA,
                "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    for (email, name) in [(ANN, "Ann Agent"), (BOB, "Bob Agent")] {
        let (s, r) = gw
            .cmd("CreateAgent", json!({"email": email, "name": name}))
            .await;
        assert_eq!(s, 200, "{r}");
    }
    gw
}

fn uid_of(wa_id: &str) -> String {
    format!("{BOT}-wa3-{wa_id}")
}

/// A customer message from `wa_id`.
async fn customer_says(gw: &TestGateway, wa_id: &str, wamid: &str, text: &str) {
    assert_eq!(
        inbound(gw, &text_webhook_from(wa_id, wamid, text, None)).await,
        200
    );
}

async fn open_conversations(gw: &TestGateway, filter: Value) -> Vec<Value> {
    let (s, r) = gw.cmd("GetOpenConversations", filter).await;
    assert_eq!(s, 200, "{r}");
    r["data"].as_array().unwrap().clone()
}

/// The next event named `cmd` (others on the way are skipped).
async fn next_named(ws: &mut Ws, cmd: &str) -> Value {
    loop {
        let ev = ws.event().await;
        if ev["cmd"] == cmd {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_conversation_opens_is_assigned_transferred_noted_and_closed() {
    let fake = FakeGraph::start().await;
    let gw = conv_gateway(&fake, |_| {}).await;
    let mut crm = gw.socket().await;
    let customer = "16505551234";
    let uid = uid_of(customer);
    customer_says(&gw, customer, "wamid.C1", "Hi, my order is late").await;
    customer_says(&gw, customer, "wamid.C2", "Order 7").await;
    let open = open_conversations(&gw, json!({})).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let cid = open[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            open[0]["uid"].clone(),
            open[0]["aid"].clone(),
            open[0]["agent"].clone()
        ),
        (json!(uid), json!(0), json!(""))
    );
    assert_eq!(
        (
            open[0]["uco"].clone(),
            open[0]["aco"].clone(),
            open[0]["bid"].clone()
        ),
        (json!(2), json!(0), json!(BOT))
    );
    // An agent's send assigns it; a send without an agent goes out as hers.
    let (s, r) = send_template(&gw, customer, json!({"agentEmail": ANN})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid, "message": "Looking into it"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let open = open_conversations(&gw, json!({"agentEmail": ANN})).await;
    assert_eq!(
        (
            open[0]["agent"].clone(),
            open[0]["aid"].clone(),
            open[0]["aco"].clone()
        ),
        (json!("Ann Agent"), json!(1), json!(2))
    );
    assert!(open_conversations(&gw, json!({"agentEmail": BOB}))
        .await
        .is_empty());
    assert_eq!(open_conversations(&gw, json!({"botID": 1})).await.len(), 0);
    // Transfer to Bob: a transfer row; a note that never reaches Meta.
    let (s, r) = gw
        .cmd("AssignConversation", json!({"uid": uid, "agentEmail": BOB}))
        .await;
    assert_eq!(
        (s, r["data"]["agent"].clone()),
        (200, json!("Bob Agent")),
        "{r}"
    );
    let sends_before = fake.sends().await.len();
    let (s, r) = gw
        .cmd(
            "AddConversationNote",
            json!({"uid": uid, "agentEmail": BOB, "note": "VIP, refund approved"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        fake.sends().await.len(),
        sends_before,
        "a note is never sent"
    );
    let (_, agents) = gw.cmd("GetAgents", json!({})).await;
    let count = |email: &str| {
        agents["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["email"] == email)
            .unwrap()["openConversations"]
            .clone()
    };
    assert_eq!((count(ANN), count(BOB)), (json!(0), json!(1)));
    // Unassign, reassign; errors.
    let (_, r) = gw
        .cmd("AssignConversation", json!({"uid": uid, "agentEmail": ""}))
        .await;
    assert_eq!(r["data"]["aid"], 0, "{r}");
    let (_, r) = gw
        .cmd("AssignConversation", json!({"uid": uid, "agentEmail": ANN}))
        .await;
    assert_eq!(r["data"]["agent"], "Ann Agent");
    let (_, r) = gw
        .cmd(
            "AssignConversation",
            json!({"uid": uid, "agentEmail": "nobody@example.com"}),
        )
        .await;
    assert_eq!(r["errorCode"], 2002);
    let (_, r) = gw
        .cmd(
            "AddConversationNote",
            json!({"uid": uid, "agentEmail": ANN, "note": "x".repeat(1025)}),
        )
        .await;
    assert_eq!(r["errorCode"], 1023);
    // Close: onUserConversation with every row, in order, then nothing changes.
    let (s, r) = gw
        .cmd("CloseConversation", json!({"uid": uid, "agentEmail": ANN}))
        .await;
    assert_eq!((s, r["data"]["cid"].clone()), (200, json!(cid)), "{r}");
    let ev = next_named(&mut crm, "onUserConversation").await;
    assert_eq!(ev["uid"], uid);
    assert_eq!(
        ev["actor"],
        json!({"type": "api", "id": "default"}),
        "closed by the token's command"
    );
    let rows = ev["data"].as_array().unwrap();
    let shape: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["typ"].as_str().unwrap().to_string(),
                r["sender"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("text", "client"),
        ("text", "client"),
        ("text", "agent"),
        ("text", "agent"),
        ("transfer", "system"),
        ("note", "agent"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(&shape[..6], &expected[..], "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["cid"] == cid && r["uid"] == uid && r["bot"] == "WA3"));
    // Meta's sample timestamps are equal: the two client rows in either order.
    let mut client: Vec<&str> = rows[..2]
        .iter()
        .map(|r| r["msg"].as_str().unwrap())
        .collect();
    client.sort();
    assert_eq!(client, ["Hi, my order is late", "Order 7"]);
    assert_eq!(rows[2]["agent"], "Ann Agent");
    assert_eq!(rows[3]["agent"], "Ann Agent", "sent as the assigned agent");
    assert_eq!(rows[5]["msg"], "VIP, refund approved");
    assert!(open_conversations(&gw, json!({})).await.is_empty());
    let (_, r) = gw.cmd("CloseConversation", json!({"uid": uid})).await;
    assert_eq!(r["errorCode"], 1005, "nothing open: {r}");
    // The next message opens a new conversation.
    customer_says(&gw, customer, "wamid.C3", "One more thing").await;
    let open = open_conversations(&gw, json!({})).await;
    assert_ne!(open[0]["id"], cid);
    assert_eq!(
        (open[0]["uco"].clone(), open[0]["aid"].clone()),
        (json!(1), json!(0))
    );
    let (_, conv) = gw.cmd("GetConversation", json!({"uid": uid})).await;
    let rows = conv["data"].as_array().unwrap();
    let new_rows: Vec<&Value> = rows.iter().filter(|r| r["cid"] == open[0]["id"]).collect();
    assert_eq!(new_rows.len(), 1, "{conv}");
    assert_eq!(new_rows[0]["msg"], "One more thing");
    assert!(
        rows.iter().all(|r| r["cid"].is_string()),
        "every row has its conversation"
    );
    // DeleteAgent unassigns its open conversations.
    gw.cmd("AssignConversation", json!({"uid": uid, "agentEmail": BOB}))
        .await;
    let (_, r) = gw.cmd("DeleteAgent", json!({"email": BOB})).await;
    assert_eq!(r["data"]["unassigned"], 1, "{r}");
    assert_eq!(open_conversations(&gw, json!({})).await[0]["aid"], 0);
    let (_, r) = gw.cmd("DeleteAgent", json!({"email": BOB})).await;
    assert_eq!(r["errorCode"], 2002);
}

#[tokio::test]
async fn idle_conversations_close_by_themselves_and_survive_a_restart() {
    let fake = FakeGraph::start().await;
    // Long enough that a restart on a slow machine (or on PostgreSQL) fits
    // inside it: the conversations must still be open after it.
    let mut gw = conv_gateway(&fake, |c| c.conversation_idle_timeout = 3.0).await;
    customer_says(&gw, "16505551234", "wamid.I1", "hello").await;
    send_template(&gw, "16505551234", json!({"agentEmail": ANN})).await;
    customer_says(&gw, "16505551235", "wamid.I2", "hi").await;
    // A restart in the middle keeps them open with their counts.
    gw.stop().await;
    gw.restart().await;
    let open = open_conversations(&gw, json!({})).await;
    assert_eq!(open.len(), 2, "{open:?}");
    let first = open
        .iter()
        .find(|c| c["uid"] == uid_of("16505551234"))
        .unwrap();
    assert_eq!(
        (
            first["uco"].clone(),
            first["aco"].clone(),
            first["agent"].clone()
        ),
        (json!(1), json!(1), json!("Ann Agent"))
    );
    let mut crm = gw.socket().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut closed = Vec::new();
    while closed.len() < 2 && Instant::now() < deadline {
        let ev = next_named(&mut crm, "onUserConversation").await;
        assert_eq!(
            ev["actor"],
            json!({"type": "system", "id": null}),
            "closed by the idle task"
        );
        closed.push(ev["uid"].as_str().unwrap().to_string());
    }
    closed.sort();
    assert_eq!(closed, vec![uid_of("16505551234"), uid_of("16505551235")]);
    assert!(open_conversations(&gw, json!({})).await.is_empty());
}

#[tokio::test]
async fn flat_polling_sees_every_closed_conversation_once_in_order() {
    let fake = FakeGraph::start().await;
    let gw = conv_gateway(&fake, |_| {}).await;
    let t0 = chrono::Utc::now();
    let mut cursor: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut closed_order: Vec<String> = Vec::new();
    for round in 0..3 {
        for i in 0..3 {
            let wa = format!("1650555{round}{i:03}");
            customer_says(&gw, &wa, &format!("wamid.F{round}{i}"), "hi").await;
            let (_, r) = gw
                .cmd("CloseConversation", json!({"uid": uid_of(&wa)}))
                .await;
            closed_order.push(r["data"]["cid"].as_str().unwrap().to_string());
        }
        let mut fields = json!({});
        if let Some(c) = &cursor {
            fields["cursor"] = json!(c);
        }
        let (s, r) = gw.cmd("GetConversationsFlat", fields).await;
        assert_eq!(s, 200, "{r}");
        for row in r["data"].as_array().unwrap() {
            let cid = row["cid"].as_str().unwrap().to_string();
            if seen.last() != Some(&cid) {
                seen.push(cid);
            }
        }
        cursor = Some(r["nextCursor"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, closed_order, "each once, in close order");
    let (_, r) = gw
        .cmd("GetConversationsFlat", json!({"cursor": cursor}))
        .await;
    assert!(r["data"].as_array().unwrap().is_empty());
    assert_eq!(
        r["nextCursor"].as_str(),
        cursor.as_deref(),
        "an empty page keeps the place"
    );
    // Date filters and their errors.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, r) = gw
        .cmd("GetConversationsFlat", json!({"startDate": later}))
        .await;
    assert!(r["data"].as_array().unwrap().is_empty(), "{r}");
    let (_, r) = gw
        .cmd(
            "GetConversationsFlat",
            json!({"startDate": t0.to_rfc3339(), "endDate": later}),
        )
        .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 9, "{r}");
    let (_, r) = gw
        .cmd("GetConversationsFlat", json!({"endDate": t0.to_rfc3339()}))
        .await;
    assert!(
        r["data"].as_array().unwrap().is_empty(),
        "closed after endDate: {r}"
    );
    for (fields, code) in [
        (json!({"startDate": "yesterday"}), 1003),
        (json!({"endDate": "soon"}), 1002),
        (
            json!({"startDate": later, "endDate": t0.to_rfc3339()}),
            1021,
        ),
        (json!({"cursor": "not-ours"}), 1017),
    ] {
        let (_, r) = gw.cmd("GetConversationsFlat", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields}: {r}");
    }
}

#[tokio::test]
async fn a_flat_page_holds_at_most_1000_conversations_never_cut() {
    let fake = FakeGraph::start().await;
    // The webhooks carry the documented example's timestamp (2025): with
    // the idle closer on, its first sweep (after a minute) would close
    // conversations this test has yet to close itself.
    let gw = conv_gateway(&fake, |c| c.conversation_idle_timeout = 0.0).await;
    let gw = std::sync::Arc::new(gw);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let gw = gw.clone();
        tasks.spawn(async move {
            for i in (worker..1001).step_by(8) {
                let wa = format!("1415{i:07}");
                customer_says(&gw, &wa, &format!("wamid.M{i}"), "hi").await;
                customer_says(&gw, &wa, &format!("wamid.N{i}"), "again").await;
                let (s, r) = gw
                    .cmd("CloseConversation", json!({"uid": uid_of(&wa)}))
                    .await;
                assert_eq!(s, 200, "{r}");
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let (_, page) = gw.cmd("GetConversationsFlat", json!({})).await;
    let rows = page["data"].as_array().unwrap();
    let mut cids: Vec<&str> = rows.iter().map(|r| r["cid"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 2000, "1000 whole conversations of two rows");
    cids.dedup();
    assert_eq!(cids.len(), 1000);
    let (_, rest) = gw
        .cmd(
            "GetConversationsFlat",
            json!({"cursor": page["nextCursor"]}),
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2, "the 1001st");
}

#[tokio::test]
async fn opt_in_events_reach_only_those_that_asked() {
    let fake = FakeGraph::start().await;
    let gw = conv_gateway(&fake, |c| c.max_sockets_per_token = 5).await;
    let hook = receiver(200).await;
    let (s, r) = gw
        .cmd(
            "SetWebhook",
            json!({"url": hook.uri(), "events": ["onConversationUpdate"]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, r) = gw
        .cmd(
            "SetWebhook",
            json!({"url": hook.uri(), "events": ["onEverything"]}),
        )
        .await;
    assert_eq!(r["errorCode"], 1017, "{r}");
    gw.cmd(
        "SetWebhook",
        json!({"url": hook.uri(), "events": ["onConversationUpdate"]}),
    )
    .await;
    let mut plain = gw.socket().await;
    let mut live = gw.raw_socket().await;
    live.send(&json!({"cmd": "connect", "token": gw.token, "events": ["onMessage", "onConversationUpdate"]}))
        .await;
    assert_eq!(live.recv().await["cmd"], "connected");
    customer_says(&gw, "16505551234", "wamid.E1", "hello").await;
    let (s, r) = send_template(&gw, "16505551234", json!({"agentEmail": ANN})).await;
    assert_eq!(s, 200, "{r}");
    // The subscribed socket: the conversation opening, the message rows, the assignment.
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(live.event().await["cmd"].as_str().unwrap().to_string());
    }
    assert_eq!(
        names,
        [
            "onUserCreate",
            "onConversationUpdate",
            "onMessage",
            "onConversationUpdate",
            "onMessage"
        ]
    );
    // An ack change of an outbound row is an onMessage update.
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";
    assert_eq!(
        inbound(
            &gw,
            &crate::whatsapp::status_webhook(wamid, "delivered", "16505551234")
        )
        .await,
        200
    );
    let ev = live.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["data"]["ack"].clone()),
        (json!("onMessage"), json!(2)),
        "{ev}"
    );
    // The plain socket saw only the reference's event.
    assert_eq!(plain.event().await["cmd"], "onUserCreate");
    plain.silent_for(300).await;
    // The webhook got onUserCreate and the two conversation updates, no onMessage.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: Vec<String> = hook
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["cmd"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        if got.len() >= 3 || Instant::now() > deadline {
            assert_eq!(
                got,
                [
                    "onUserCreate",
                    "onConversationUpdate",
                    "onConversationUpdate"
                ]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // connect with an unknown event name is refused.
    let mut bad = gw.raw_socket().await;
    bad.send(&json!({"cmd": "connect", "token": gw.token, "events": ["nope"]}))
        .await;
    assert_eq!(bad.recv().await["errorCode"], 1017);
}
