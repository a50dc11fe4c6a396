//! Data written by an earlier convgate opens unchanged.
//!
//! `tests/fixtures/v1-data` is a data dir written by the code of the
//! WhatsApp-only layout (before the `Channel` interface): the `default`
//! organization (token below), a WhatsApp bot 3941 with sealed credentials
//! (secrets_key = base64 of 32 × 0x05) and a Telegram bot 73, the user
//! `3941-wa3-447922029419` (David Jones, tag Premium, notes, custom data),
//! the customer `3941-wa3-16505551234` (Sheena Nelson, wrote "Hello there"
//! as `wamid.FIXTURE-IN-1`), then two template sends — one to the customer by
//! agent@example.com with a `webhookURL` and idempotency key
//! `fixture-key-1` (wamid …A0, delivered), one to David (wamid …A1, failed
//! with 131050) — and three webhook deliveries, all delivered. The test runs
//! on a copy: the gateway may migrate what it opens.

use crate::helpers::*;
use crate::whatsapp::{
    ack_of, channel_url, inbound, sign, status_webhook, text_webhook, FakeGraph, APP_SECRET, BOT,
    CUSTOMER, PHONE,
};
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
const TEMPLATE_TO_CUSTOMER: &str = "6b02a6bffc3c7d8a6621a41e";
const TEMPLATE_TO_DAVID: &str = "6b02a6bfcff0ae63b806aef9";
const WAMID_0: &str = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

async fn open_fixture(fake: &FakeGraph) -> TestGateway {
    let dir = TestDir::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-data");
    copy_dir(&fixture, dir.path());
    if let Some(url) = &dir.store {
        // On PostgreSQL: the old data dir is migrated into the database
        // first (`convgate migrate`), then upgraded there when it opens.
        let (from, to) = (dir.path().to_path_buf(), url.clone());
        let report =
            tokio::task::spawn_blocking(move || convgate::store::copy_to_postgres(&from, &to))
                .await
                .unwrap()
                .expect("migrate");
        assert!(report.by_kind["bot"] >= 1, "{report:?}");
    }
    let mut config = dir.config();
    config.secrets_key = Some(convgate::config::Secret::new(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [5u8; 32],
    )));
    config.allow_private_webhooks = true;
    config.graph_base_url = fake.base();
    config.phone_rate_limit = 1000;
    let gw = convgate::server::start(config.clone())
        .await
        .expect("the old data dir opens");
    assert!(gw.bootstrap_token.is_none(), "organizations were found");
    TestGateway {
        gw: Some(gw),
        token: TOKEN.into(),
        _dir: dir,
        config,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn a_data_dir_of_the_whatsapp_only_layout_opens_and_serves() {
    let fake = FakeGraph::start().await;
    let mut gw = open_fixture(&fake).await;
    for round in 0..2 {
        // Users, tags, notes and custom data.
        let (s, r) = gw
            .cmd("GetUser", json!({"uid": "3941-wa3-447922029419"}))
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["data"]["name"], "David Jones");
        assert_eq!(r["data"]["notes"], "VIP since 2020");
        assert_eq!(r["data"]["bot"], "WA3");
        let (_, tags) = gw
            .cmd("GetUserTags", json!({"uid": "3941-wa3-447922029419"}))
            .await;
        assert!(tags.to_string().contains("Premium"), "{tags}");
        let (_, data) = gw
            .cmd("GetUserData", json!({"uid": "3941-wa3-447922029419"}))
            .await;
        assert_eq!(data["data"]["plan"], "gold", "{data}");
        let (_, customer) = gw
            .cmd("GetUser", json!({"uid": format!("{BOT}-wa3-{CUSTOMER}")}))
            .await;
        assert_eq!(customer["data"]["name"], "Sheena Nelson");
        // Bots with their sealed settings.
        let (_, bots) = gw.cmd("GetBots", json!({})).await;
        let wa = &bots["data"][1];
        assert_eq!(wa["botID"], BOT, "{bots}");
        assert_eq!(wa["whatsapp"]["access_token_set"], true);
        assert_eq!(wa["whatsapp"]["app_secret_set"], true);
        assert_eq!(wa["whatsapp"]["verify_token_set"], true);
        assert_eq!(bots["data"][0]["kind"], "telegram");
        // Messages, with their acks, provider errors and agents.
        let r = ack_of(&gw, TEMPLATE_TO_CUSTOMER).await;
        assert_eq!(r["ack"], if round == 0 { 2 } else { 10 }, "{r}");
        let r = ack_of(&gw, TEMPLATE_TO_DAVID).await;
        assert_eq!(r["ack"], -1, "{r}");
        assert_eq!(r["whatsappErrorCode"], 131050, "{r}");
        let (_, conv) = gw
            .cmd(
                "GetConversation",
                json!({"uid": format!("{BOT}-wa3-{CUSTOMER}")}),
            )
            .await;
        let rows = conv["data"].as_array().unwrap();
        assert!(
            rows.iter()
                .any(|r| r["agentemail"] == "agent@example.com" && r["aid"] == 1),
            "{conv}"
        );
        assert!(rows.iter().any(|r| r["msg"] == "Hello there"), "{conv}");
        // Webhook deliveries.
        let (_, d) = gw
            .cmd("GetDeliveries", json!({"status": "delivered"}))
            .await;
        assert!(d["data"].as_array().unwrap().len() >= 3, "{d}");
        if round == 0 {
            // The inbound URL still finds the bot and opens its app secret;
            // the stored provider ids still dedupe and route statuses.
            let first = text_webhook("wamid.FIXTURE-IN-1", "Hello there", None);
            assert_eq!(inbound(&gw, &first).await, 200);
            let (_, again) = gw
                .cmd(
                    "GetConversation",
                    json!({"uid": format!("{BOT}-wa3-{CUSTOMER}")}),
                )
                .await;
            assert_eq!(again["data"].as_array().unwrap().len(), rows.len());
            assert_eq!(
                inbound(&gw, &status_webhook(WAMID_0, "read", CUSTOMER)).await,
                200
            );
            assert_eq!(ack_of(&gw, TEMPLATE_TO_CUSTOMER).await["ack"], 3);
            // The customer's reply moves the last template to 10 (per-user
            // channel state kept).
            let reply = text_webhook("wamid.FIXTURE-IN-2", "Thanks!", None);
            assert_eq!(inbound(&gw, &reply).await, 200);
            assert_eq!(ack_of(&gw, TEMPLATE_TO_CUSTOMER).await["ack"], 10);
            // The idempotency key is still held: another request under it is refused.
            let (s, _, r) = gw
                .cmd_full(
                    "SendWhatsAppTemplate",
                    json!({"botID": BOT, "phone": PHONE, "templateName": "order_confirmation",
                        "language": "en", "idempotencyKey": "fixture-key-1"}),
                    &[],
                )
                .await;
            assert_eq!((s, r["errorCode"].clone()), (409, json!(1017)), "{r}");
            let (s, r) = gw
                .cmd(
                    "SendTextMessage",
                    json!({"uid": "3941-wa3-447922029419", "message": "Your order shipped"}),
                )
                .await;
            assert_eq!(s, 200, "the sealed access token opens: {r}");
            assert_eq!(fake.sends().await.len(), 1);
            let bad = gw
                .http
                .post(channel_url(&gw, BOT))
                .header("x-hub-signature-256", sign("wrong", b"{}"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(bad.status().as_u16(), 401);
            let ok = gw
                .http
                .post(channel_url(&gw, BOT))
                .header("x-hub-signature-256", sign(APP_SECRET, b"{}"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(ok.status().as_u16(), 200);
            gw.stop().await;
            gw.restart().await;
        }
    }
    let (s, r) = gw
        .cmd("UpsertUser", json!({"botID": BOT, "phone": PHONE}))
        .await;
    assert_eq!((s, r["uid"].clone()), (200, json!("3941-wa3-447922029419")));
    let _: Value = r;
}
