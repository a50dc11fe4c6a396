//! The Telegram channel against a fake Bot API (wiremock on loopback) and
//! real posts into `/channels/telegram/{botID}` carrying the secret token.
//!
//! Payloads follow Telegram's documentation: the sample updates of the
//! webhook guide ("Testing your bot with updates": a private text message
//! from "Test Firstname Test Lastname", chat and user 1111111), the
//! `Message` object's `photo` (an array of `PhotoSize`) and `caption`,
//! `ChatMemberUpdated` with `kicked` and `member`, and the Bot API's
//! answers: `getMe`'s `User`, `setWebhook`'s `true`, `sendMessage`'s
//! `Message`, and the error objects for 401 Unauthorized, 403 "bot was
//! blocked by the user", 429 with `parameters.retry_after`, and 400 "chat
//! not found".

use crate::helpers::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const BOT: u64 = 73;
pub const TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
pub const PUBLIC: &str = "https://gw.example.com";
const CHAT: i64 = 1111111;
/// A chat whose user blocked the bot: sends answer 403.
const BLOCKED_CHAT: i64 = 2222222;
/// A chat that does not exist: sends answer 400.
const MISSING_CHAT: i64 = 3333333;
/// A chat that hits flood control once: 429 with retry_after 1.
const FLOOD_CHAT: i64 = 4444444;

/// The webhook guide's sample: a private text message.
pub fn text_update(update_id: i64, chat: i64, message_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "date": 1441645532,
            "chat": {"last_name": "Test Lastname", "id": chat, "type": "private",
                "first_name": "Test Firstname", "username": "Testusername"},
            "message_id": message_id,
            "from": {"last_name": "Test Lastname", "id": chat, "first_name": "Test Firstname",
                "username": "Testusername", "language_code": "en"},
            "text": text
        }
    })
}

/// A photo with a caption: `photo` lists the sizes, smallest first.
fn photo_update(update_id: i64, chat: i64, message_id: i64) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "date": 1441645600,
            "chat": {"id": chat, "type": "private", "first_name": "Test Firstname"},
            "message_id": message_id,
            "from": {"id": chat, "first_name": "Test Firstname", "last_name": "Test Lastname"},
            "photo": [
                {"file_id": "AgACAgIAAxkBAAIBsmall", "file_unique_id": "AQADs", "width": 90, "height": 51, "file_size": 1240},
                {"file_id": "AgACAgIAAxkBAAIBlarge", "file_unique_id": "AQADl", "width": 1280, "height": 720, "file_size": 88000},
                {"file_id": "AgACAgIAAxkBAAIBmedium", "file_unique_id": "AQADm", "width": 320, "height": 180, "file_size": 9000}
            ],
            "caption": "my parcel arrived damaged"
        }
    })
}

/// `my_chat_member`: the bot's status in the private chat changed.
fn member_update(update_id: i64, chat: i64, old: &str, new: &str) -> Value {
    let user = json!({"id": chat, "is_bot": false, "first_name": "Test Firstname", "last_name": "Test Lastname"});
    let bot =
        json!({"id": 123456, "is_bot": true, "first_name": "Support", "username": "support_bot"});
    json!({
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": chat, "type": "private", "first_name": "Test Firstname"},
            "from": user,
            "date": 1441646000,
            "old_chat_member": {"user": bot, "status": old},
            "new_chat_member": {"user": bot, "status": new, "until_date": 0}
        }
    })
}

fn refused(code: i64, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(code as u16)
        .set_body_json(json!({"ok": false, "error_code": code, "description": description}))
}

/// The fake Bot API.
pub struct FakeBotApi {
    pub server: MockServer,
}

impl FakeBotApi {
    pub async fn start() -> FakeBotApi {
        let server = MockServer::start().await;
        let m = |name: &str| format!("/bot{TOKEN}/{name}");
        Mock::given(method("POST"))
            .and(path(m("getMe")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": {
                "id": 123456, "is_bot": true, "first_name": "Support", "username": "support_bot",
                "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false
            }})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(m("setWebhook")))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"ok": true, "result": true, "description": "Webhook was set"}),
            ))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(m("sendMessage")))
            .and(body_partial_json(json!({"chat_id": BLOCKED_CHAT})))
            .respond_with(refused(403, "Forbidden: bot was blocked by the user"))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(m("sendMessage")))
            .and(body_partial_json(json!({"chat_id": MISSING_CHAT})))
            .respond_with(refused(400, "Bad Request: chat not found"))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(m("sendMessage")))
            .and(body_partial_json(json!({"chat_id": FLOOD_CHAT})))
            .respond_with(ResponseTemplate::new(429).set_body_json(json!({
                "ok": false, "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1}
            })))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let next = Arc::new(AtomicI64::new(5000));
        Mock::given(method("POST"))
            .and(path(m("sendMessage")))
            .respond_with(move |req: &Request| {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let id = next.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": {
                    "message_id": id,
                    "from": {"id": 123456, "is_bot": true, "first_name": "Support", "username": "support_bot"},
                    "chat": {"id": body["chat_id"], "type": "private", "first_name": "Test Firstname"},
                    "date": 1441646100,
                    "text": body["text"]
                }}))
            })
            .with_priority(5)
            .mount(&server)
            .await;
        FakeBotApi { server }
    }

    /// Bodies of the calls of `method` received so far.
    pub async fn calls(&self, method_name: &str) -> Vec<Value> {
        let p = format!("/bot{TOKEN}/{method_name}");
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == p)
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }
}

async fn tg_gateway(
    fake: &FakeBotApi,
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> (TestGateway, String) {
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.public_base_url = Some(PUBLIC.into());
        c.provider_retry_schedule = vec![0.6, 0.6];
        c.phone_rate_limit = 1000;
        c.send_rate_limit = 1000;
        c.webhook_retry_schedule = vec![0.0, 0.05, 0.05];
        tweak(c);
    })
    .await;
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": BOT, "kind": "telegram", "name": "Support", "bot_token": TOKEN,
                "telegram_base_url": fake.server.uri()}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let secret = fake
        .calls("setWebhook")
        .await
        .last()
        .map(|c| c["secret_token"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    (gw, secret)
}

/// POSTs `update` to the bot's URL with `secret` as the secret token.
async fn deliver(gw: &TestGateway, update: &Value, secret: Option<&str>) -> u16 {
    let mut req = gw
        .http
        .post(format!("http://{}/channels/telegram/{BOT}", gw.gw().addr))
        .header("content-type", "application/json")
        .body(update.to_string());
    if let Some(s) = secret {
        req = req.header("x-telegram-bot-api-secret-token", s);
    }
    req.send().await.unwrap().status().as_u16()
}

pub fn uid(chat: i64) -> String {
    format!("{BOT}-tel-{chat}")
}

#[tokio::test]
async fn create_calls_get_me_and_set_webhook_with_a_sealed_secret() {
    let fake = FakeBotApi::start().await;
    let (gw, secret) = tg_gateway(&fake, |_| {}).await;
    let hooks = fake.calls("setWebhook").await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], format!("{PUBLIC}/channels/telegram/{BOT}"));
    assert_eq!(
        hooks[0]["allowed_updates"],
        json!(["message", "edited_message", "my_chat_member"])
    );
    assert!(secret.len() >= 32, "a generated secret_token: {secret}");
    let (_, bots) = gw.cmd("GetBots", json!({})).await;
    let t = &bots["data"][0]["telegram"];
    assert_eq!(t["username"], "support_bot", "{bots}");
    assert_eq!(t["webhook_set"], true);
    assert_eq!(t["bot_token_set"], true);
    assert_eq!(t["webhook_secret_set"], true);
    assert!(!bots.to_string().contains(TOKEN) && !bots.to_string().contains(&secret));
    // A token Telegram refuses: a clear error, nothing stored.
    let bad = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(refused(401, "Unauthorized"))
        .mount(&bad)
        .await;
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": 74, "kind": "telegram", "bot_token": "1:bad", "telegram_base_url": bad.uri()}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(1017)), "{r}");
    assert_eq!(
        (
            r["telegramErrorCode"].clone(),
            r["telegramErrorDesc"].clone()
        ),
        (json!(401), json!("Unauthorized"))
    );
    let (_, bots) = gw.cmd("GetBots", json!({})).await;
    assert_eq!(bots["data"].as_array().unwrap().len(), 1, "nothing stored");
    // Without public_base_url the bot is stored, the webhook not set.
    let gw2 = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (s, r) = gw2
        .cmd(
            "CreateBot",
            json!({"botID": BOT, "kind": "telegram", "bot_token": TOKEN, "telegram_base_url": fake.server.uri()}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["telegram"]["webhook_set"], false);
    assert_eq!(
        fake.calls("setWebhook").await.len(),
        1,
        "no second setWebhook"
    );
}

#[tokio::test]
async fn updates_need_the_secret_and_make_users_and_messages_once() {
    let fake = FakeBotApi::start().await;
    let (gw, secret) = tg_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    let hello = text_update(10000, CHAT, 1365, "/start");
    assert_eq!(deliver(&gw, &hello, None).await, 401, "missing");
    assert_eq!(deliver(&gw, &hello, Some("wrong")).await, 401, "wrong");
    assert_eq!(deliver(&gw, &hello, Some(&secret)).await, 200);
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserCreate");
    let user = &ev["data"];
    assert_eq!(user["uid"], uid(CHAT));
    assert_eq!(user["bot"], "Telegram");
    assert_eq!(user["name"], "Test Firstname Test Lastname");
    assert_eq!(
        (user["first_name"].clone(), user["last_name"].clone()),
        (json!("Test Firstname"), json!("Test Lastname"))
    );
    assert_eq!(user["lang"], "en");
    // The same update_id again: no second effect.
    assert_eq!(deliver(&gw, &hello, Some(&secret)).await, 200);
    // A photo: the largest size's file_id, the caption as text.
    assert_eq!(
        deliver(&gw, &photo_update(10001, CHAT, 1366), Some(&secret)).await,
        200
    );
    let (_, conv) = gw.cmd("GetConversation", json!({"uid": uid(CHAT)})).await;
    let rows = conv["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{conv}");
    assert_eq!(
        (rows[0]["msg"].clone(), rows[0]["sender"].clone()),
        (json!("/start"), json!("client"))
    );
    assert_eq!(rows[1]["typ"], "image");
    assert_eq!(rows[1]["mediaId"], "AgACAgIAAxkBAAIBlarge");
    assert_eq!(rows[1]["msg"], "my parcel arrived damaged");
    // A changed name: onUserUpdate with the changed fields.
    let mut renamed = text_update(10002, CHAT, 1367, "hi again");
    renamed["message"]["from"]["last_name"] = json!("Newname");
    assert_eq!(deliver(&gw, &renamed, Some(&secret)).await, 200);
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserUpdate");
    assert_eq!(
        ev["data"]["update"],
        json!({"name": "Test Firstname Newname", "last_name": "Newname"})
    );
    // Kinds convgate does not use: acknowledged and ignored.
    let group = json!({"update_id": 10003, "message": {"message_id": 1, "date": 1441645532,
        "chat": {"id": -100123, "type": "supergroup", "title": "Team"}, "from": {"id": 5, "first_name": "X"}, "text": "hi"}});
    let channel_post = json!({"update_id": 10004, "channel_post": {"message_id": 2, "date": 1441645532,
        "chat": {"id": -100555, "type": "channel", "title": "News"}, "text": "news"}});
    let future_kind = json!({"update_id": 10005, "some_new_kind": {"x": 1}});
    let edit = json!({"update_id": 10006, "edited_message": {"message_id": 999, "date": 1441645532, "edit_date": 1441645600,
        "chat": {"id": CHAT, "type": "private"}, "from": {"id": CHAT, "first_name": "Test Firstname"}, "text": "edited"}});
    for u in [group, channel_post, future_kind, edit] {
        assert_eq!(deliver(&gw, &u, Some(&secret)).await, 200, "{u}");
    }
    ws.silent_for(300).await;
    let (_, users) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(users["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn blocking_disables_and_sends_answer_2006() {
    let fake = FakeBotApi::start().await;
    let (gw, secret) = tg_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    assert_eq!(
        deliver(&gw, &text_update(1, CHAT, 10, "hello"), Some(&secret)).await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    assert_eq!(
        deliver(
            &gw,
            &member_update(2, CHAT, "member", "kicked"),
            Some(&secret)
        )
        .await,
        200
    );
    let ev = ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["uid"].clone()),
        (json!("onUserDisable"), json!(uid(CHAT)))
    );
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(CHAT), "message": "hi?"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2006)), "{r}");
    assert!(
        fake.calls("sendMessage").await.is_empty(),
        "Telegram was not called"
    );
    assert_eq!(
        deliver(
            &gw,
            &member_update(3, CHAT, "kicked", "member"),
            Some(&secret)
        )
        .await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserEnable");
    // A message from a user who blocked the bot enables them again, first.
    assert_eq!(
        deliver(
            &gw,
            &member_update(4, CHAT, "member", "kicked"),
            Some(&secret)
        )
        .await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserDisable");
    assert_eq!(
        deliver(&gw, &text_update(5, CHAT, 11, "I'm back"), Some(&secret)).await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserEnable");
    // A 403 on send: disabled, 2006.
    assert_eq!(
        deliver(&gw, &text_update(6, BLOCKED_CHAT, 1, "hey"), Some(&secret)).await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(BLOCKED_CHAT), "message": "hi"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2006)), "{r}");
    let ev = ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["uid"].clone()),
        (json!("onUserDisable"), json!(uid(BLOCKED_CHAT)))
    );
}

#[tokio::test]
async fn sends_errors_and_limits() {
    let fake = FakeBotApi::start().await;
    let (gw, secret) = tg_gateway(&fake, |c| c.telegram_rate_limit = 3).await;
    for chat in [CHAT, MISSING_CHAT, FLOOD_CHAT] {
        assert_eq!(
            deliver(&gw, &text_update(chat, chat, 1, "hi"), Some(&secret)).await,
            200
        );
    }
    let receiver = receiver(200).await;
    // A send: sendMessage with the chat, ack 1 once accepted (no receipts).
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(CHAT), "message": "Your order shipped", "webhookURL": receiver.uri(), "idempotencyKey": "tg-1"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let sent = fake.calls("sendMessage").await;
    assert_eq!(
        sent[0],
        json!({"chat_id": CHAT, "text": "Your order shipped"})
    );
    let mid = r["mid"].as_str().unwrap();
    let (_, d) = gw.cmd("GetMessageDetails", json!({"mid": mid})).await;
    assert_eq!(d["ack"], 1, "{d}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.received_requests().await.unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cb: Value =
        serde_json::from_slice(&receiver.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        (cb["ack"].clone(), cb["mid"].clone()),
        (json!(1), json!(mid))
    );
    // The idempotency key replays; the reference's 2000 characters apply.
    let (s, r2) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(CHAT), "message": "Your order shipped", "webhookURL": receiver.uri(), "idempotencyKey": "tg-1"}),
        )
        .await;
    assert_eq!((s, &r2), (200, &r));
    let (_, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(CHAT), "message": "x".repeat(2001)}),
        )
        .await;
    assert_eq!(r["errorCode"], 1013);
    // 400 chat not found: 2004 with Telegram's code and description.
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(MISSING_CHAT), "message": "hi"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (500, json!(2004)), "{r}");
    assert_eq!(
        (
            r["telegramErrorCode"].clone(),
            r["telegramErrorDesc"].clone()
        ),
        (json!(400), json!("Bad Request: chat not found"))
    );
    // 429: waited for as asked (1 s, within the schedule's 1.2 s), then sent.
    let t0 = Instant::now();
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid(FLOOD_CHAT), "message": "hi"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        t0.elapsed()
    );
    // Per chat: one message a second (2007); per bot: telegram_rate_limit (2009).
    let gw = tg_gateway(&fake, |c| {
        c.phone_rate_limit = 1;
        c.telegram_rate_limit = 2;
    })
    .await
    .0;
    let secret = fake.calls("setWebhook").await.last().unwrap()["secret_token"]
        .as_str()
        .unwrap()
        .to_string();
    for chat in [CHAT, 5555501, 5555502] {
        assert_eq!(
            deliver(&gw, &text_update(chat, chat, 1, "hi"), Some(&secret)).await,
            200
        );
    }
    // Sent at once, so that a slow machine cannot let the budgets refill.
    let send = |chat: i64, text: &str| {
        gw.cmd(
            "SendTextMessage",
            json!({"uid": uid(chat), "message": text}),
        )
    };
    // One per second per chat (2007), two per second per bot (2009): of
    // these four, one of the two to CHAT is 2007 and one of the three that
    // reach the bot's budget is 2009.
    let (a, b, c, d) = tokio::join!(
        send(CHAT, "1"),
        send(CHAT, "2"),
        send(5555501, "1"),
        send(5555502, "1")
    );
    let mut codes: Vec<String> = [a, b, c, d]
        .iter()
        .map(|(_, r)| r["errorCode"].to_string())
        .collect();
    codes.sort();
    assert_eq!(codes, ["2007", "2009", "null", "null"]);
    // WhatsApp and SMS commands on a Telegram bot; UpsertUser stays 1016.
    let (_, r) = gw
        .cmd(
            "SendSMSMessage",
            json!({"botID": BOT, "phone": "+14155552671", "message": "x"}),
        )
        .await;
    assert_eq!(r["errorCode"], 1016, "{r}");
    let (_, r) = gw
        .cmd(
            "GetWhatsAppTemplate",
            json!({"botID": BOT, "templateName": "t", "language": "en"}),
        )
        .await;
    assert_eq!(r["errorCode"], 1016, "{r}");
    let (_, r) = gw
        .cmd("UpsertUser", json!({"botID": BOT, "phone": "+14155552671"}))
        .await;
    assert_eq!(r["errorCode"], 1016, "{r}");
}

#[tokio::test]
async fn end_to_end_telegram_user_to_crm_and_block() {
    let fake = FakeBotApi::start().await;
    let (gw, secret) = tg_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    assert_eq!(
        deliver(
            &gw,
            &text_update(20000, CHAT, 1400, "Where is my order?"),
            Some(&secret)
        )
        .await,
        200
    );
    let created = ws.event().await;
    assert_eq!(
        (created["cmd"].clone(), created["data"]["bot"].clone()),
        (json!("onUserCreate"), json!("Telegram"))
    );
    let reply = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": created["data"]["uid"], "message": "On its way!"}),
        )
        .await;
    assert_eq!(reply["ok"], 1, "{reply}");
    assert_eq!(fake.calls("sendMessage").await[0]["chat_id"], CHAT);
    assert_eq!(
        deliver(
            &gw,
            &member_update(20001, CHAT, "member", "kicked"),
            Some(&secret)
        )
        .await,
        200
    );
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserDisable");
    let r = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": created["data"]["uid"], "message": "Hello?"}),
        )
        .await;
    assert_eq!(r["errorCode"], 2006, "{r}");
}
