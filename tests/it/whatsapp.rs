//! The WhatsApp Cloud API channel against a fake Graph API (wiremock on
//! loopback) and real, signed posts into `/channels/whatsapp/{botID}`.
//!
//! Payloads follow Meta's documented samples: the `messages` webhook
//! reference (text message from "Sheena Nelson", `wa_id` 16505551234,
//! business account 102290129340398, phone number id 106540352242922), the
//! status webhook reference (`sent`, `delivered`, `read`, `failed` with an
//! `errors[]` entry), the Cloud API send response (`messages[].id`,
//! `message_status: accepted`), the Graph error object (131047
//! "Re-engagement message"), and a `message_templates` page with
//! `paging.next`.

use crate::helpers::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub(crate) const BOT: u64 = 3941;
pub(crate) const WABA: &str = "102290129340398";
pub(crate) const PNID: &str = "106540352242922";
pub(crate) const ACCESS_TOKEN: &str = "EAAGm0PX4ZCpsBAtest-access-token";
pub(crate) const APP_SECRET: &str = "0f4c1b2a-app-secret";
pub(crate) const VERIFY_TOKEN: &str = "verify-me-7";
pub(crate) const CUSTOMER: &str = "16505551234";
pub(crate) const PHONE: &str = "+447922029419";

/// Meta's documented text message webhook.
pub(crate) fn text_webhook(wamid: &str, body: &str, context: Option<&str>) -> Value {
    text_webhook_from(CUSTOMER, wamid, body, context)
}

/// The same, from the WhatsApp user `from`.
pub(crate) fn text_webhook_from(
    from: &str,
    wamid: &str,
    body: &str,
    context: Option<&str>,
) -> Value {
    let mut msg = json!({
        "from": from,
        "id": wamid,
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": body}
    });
    if let Some(c) = context {
        msg["context"] = json!({"from": "15550783881", "id": c});
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": WABA,
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": from}],
                    "messages": [msg]
                },
                "field": "messages"
            }]
        }]
    })
}

/// Meta's documented image message webhook.
fn image_webhook(wamid: &str) -> Value {
    let mut v = text_webhook(wamid, "", None);
    v["entry"][0]["changes"][0]["value"]["messages"][0] = json!({
        "from": CUSTOMER,
        "id": wamid,
        "timestamp": "1749416390",
        "type": "image",
        "image": {
            "caption": "This is a caption",
            "mime_type": "image/jpeg",
            "sha256": "fwGbrzjMD5cXCDd6UUUjQpKzaVPMS1Zi3a5SXfaOpgQ=",
            "id": "1003383421387256"
        }
    });
    v
}

/// Meta's documented status webhook; `failed` carries an `errors[]` entry.
pub(crate) fn status_webhook(wamid: &str, status: &str, recipient: &str) -> Value {
    let mut st = json!({
        "id": wamid,
        "status": status,
        "timestamp": "1750263773",
        "recipient_id": recipient,
    });
    if status == "failed" {
        st["errors"] = json!([{
            "code": 131050,
            "title": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
            "message": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
            "error_data": {"details": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business"},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
        }]);
    } else if status != "read" {
        st["conversation"] =
            json!({"id": "a75d17ad06104c51166f948319b03c6a", "origin": {"type": "utility"}});
        st["pricing"] = json!({"billable": true, "pricing_model": "PMP", "category": "utility"});
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": WABA,
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
                    "statuses": [st]
                },
                "field": "messages"
            }]
        }]
    })
}

/// A Graph API error object (Cloud API "Error codes").
fn graph_error(code: i64, message: &str, details: &str) -> Value {
    json!({"error": {
        "message": format!("(#{code}) {message}"),
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "AazRqpNOq2bAnBDBmGKo1Ef"
    }})
}

fn template(name: &str, language: &str, status: &str, body: &str) -> Value {
    json!({
        "name": name,
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Our order update"},
            {"type": "BODY", "text": body},
            {"type": "FOOTER", "text": "Lucky Shrub"}
        ],
        "language": language,
        "status": status,
        "category": "UTILITY",
        "id": format!("{}", 594425479261596u64 + name.len() as u64)
    })
}

/// The fake Graph API: two pages of templates and a send endpoint that
/// answers with a fresh `wamid` per request.
pub(crate) struct FakeGraph {
    server: MockServer,
}

impl FakeGraph {
    pub(crate) async fn start() -> FakeGraph {
        let server = MockServer::start().await;
        let next = format!(
            "{}/v23.0/{WABA}/message_templates?limit=100&after=MQZDZD",
            server.uri()
        );
        Mock::given(method("GET"))
            .and(path(format!("/v23.0/{WABA}/message_templates")))
            .and(query_param("after", "MQZDZD"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [template("order_update", "en", "APPROVED", "Order {{1}} is on its way.")],
                "paging": {"cursors": {"before": "MAZDZD", "after": "MQZDZD"}}
            })))
            .with_priority(2)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v23.0/{WABA}/message_templates")))
            .and(header("authorization", format!("Bearer {ACCESS_TOKEN}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": [
                    template("order_confirmation", "en", "APPROVED", "Hi {{1}}, your order {{2}} is confirmed."),
                    template("followup_inquiry_request", "en", "APPROVED", "Any questions about your inquiry?"),
                    template("spring_sale", "en", "PAUSED", "Spring sale!")
                ],
                "paging": {"cursors": {"before": "MAZDZD", "after": "MQZDZD"}, "next": next}
            })))
            .with_priority(3)
            .mount(&server)
            .await;
        let counter = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path(format!("/v23.0/{PNID}/messages")))
            .and(header("authorization", format!("Bearer {ACCESS_TOKEN}").as_str()))
            .respond_with(move |req: &Request| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                ResponseTemplate::new(200).set_body_json(json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                    "messages": [{"id": format!("wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA{n}"), "message_status": "accepted"}]
                }))
            })
            .with_priority(5)
            .mount(&server)
            .await;
        FakeGraph { server }
    }

    pub(crate) fn base(&self) -> String {
        format!("{}/v23.0", self.server.uri())
    }

    /// From now on, refuses every free-form text as the Graph API does
    /// outside the 24-hour customer-service window (131047); templates
    /// still go out.
    pub(crate) async fn refuse_texts_outside_window(&self) {
        Mock::given(method("POST"))
            .and(path(format!("/v23.0/{PNID}/messages")))
            .and(body_partial_json(json!({"type": "text"})))
            .respond_with(ResponseTemplate::new(400).set_body_json(graph_error(
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            )))
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    /// The message sends received so far.
    pub(crate) async fn sends(&self) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

async fn wa_gateway(
    fake: &FakeGraph,
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> TestGateway {
    let base = fake.base();
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.graph_base_url = base;
        c.provider_retry_schedule = vec![0.02, 0.02];
        c.phone_rate_limit = 1000;
        c.send_rate_limit = 1000;
        c.webhook_retry_schedule = vec![0.0, 0.05, 0.05];
        tweak(c);
    })
    .await;
    create_bot(&gw).await;
    gw
}

/// Creates the WhatsApp bot `BOT` with the fake Graph's credentials.
pub(crate) async fn create_bot(gw: &TestGateway) {
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": BOT, "kind": "whatsapp", "name": "Support",
                "phone_number_id": PNID, "waba_id": WABA, "access_token": ACCESS_TOKEN,
                "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

pub(crate) fn channel_url(gw: &TestGateway, bot: u64) -> String {
    format!("http://{}/channels/whatsapp/{bot}", gw.gw().addr)
}

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `payload` to the bot's inbound URL, signed with the app secret.
pub(crate) async fn inbound(gw: &TestGateway, payload: &Value) -> u16 {
    let body = payload.to_string();
    gw.http
        .post(channel_url(gw, BOT))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn ack_of(gw: &TestGateway, mid: &str) -> Value {
    let (s, r) = gw.cmd("GetMessageDetails", json!({"mid": mid})).await;
    assert_eq!(s, 200, "{r}");
    r
}

pub(crate) async fn send_template(gw: &TestGateway, phone: &str, extra: Value) -> (u16, Value) {
    let mut fields = json!({"botID": BOT, "phone": phone, "templateName": "order_confirmation",
        "language": "en", "parameters": [{"type": "text", "text": "David"}, {"type": "text", "text": "ORD-12345"}]});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    gw.cmd("SendWhatsAppTemplate", fields).await
}

/// Waits until `server` has received `n` requests; returns their JSON bodies.
pub(crate) async fn callbacks(server: &MockServer, n: usize) -> Vec<Request> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.received_requests().await.unwrap_or_default();
        if got.len() >= n || Instant::now() > deadline {
            assert!(got.len() >= n, "expected {n} callbacks, got {}", got.len());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn handshake_echoes_the_challenge_only_for_the_verify_token() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let get = |q: String| {
        let url = format!("{}?{q}", channel_url(&gw, BOT));
        let http = gw.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(ok, (200, "1158201444".to_string()));
    assert_eq!(
        get("hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope".into())
            .await
            .0,
        403
    );
    assert_eq!(
        get(format!(
            "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token={VERIFY_TOKEN}"
        ))
        .await
        .0,
        403
    );
    let unknown = gw
        .http
        .get(format!("{}?hub.mode=subscribe", channel_url(&gw, 77)))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn signatures_are_checked_before_anything_is_parsed() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let body = text_webhook("wamid.sig", "hello", None).to_string();
    let post = |sig: Option<String>| {
        let mut req = gw.http.post(channel_url(&gw, BOT)).body(body.clone());
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some(sign("wrong-secret", body.as_bytes()))).await, 401);
    assert_eq!(post(Some("sha256=zz".into())).await, 401);
    let (_, users) = gw.cmd("GetUsers", json!({"botID": BOT})).await;
    assert_eq!(
        users["data"],
        json!([]),
        "nothing applied without a valid signature"
    );
    assert_eq!(post(Some(sign(APP_SECRET, body.as_bytes()))).await, 200);
    let (_, users) = gw.cmd("GetUsers", json!({"botID": BOT})).await;
    assert_eq!(users["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_inbound_message_creates_the_user_once_and_is_stored() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    let wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
    let msg = text_webhook(wamid, "Does it come in another color?", None);
    assert_eq!(inbound(&gw, &msg).await, 200);
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserCreate");
    let uid = format!("{BOT}-wa3-{CUSTOMER}");
    assert_eq!(ev["data"]["uid"], uid);
    assert_eq!(ev["data"]["name"], "Sheena Nelson");
    assert_eq!(
        ev["actor"],
        json!({"type": "channel", "id": BOT.to_string()}),
        "caused by Meta's webhook"
    );
    assert_eq!(ev["data"]["first_name"], "Sheena");
    assert_eq!(ev["data"]["phone"], "+16505551234");
    assert_eq!(ev["data"]["bot"], "WA3");
    // Meta redelivers: no second effect.
    assert_eq!(inbound(&gw, &msg).await, 200);
    assert_eq!(inbound(&gw, &image_webhook("wamid.image1")).await, 200);
    ws.silent_for(200).await;
    let (s, conv) = gw.cmd("GetConversation", json!({"uid": uid})).await;
    assert_eq!(s, 200, "{conv}");
    let rows = conv["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{conv}");
    assert_eq!(rows[0]["msg"], "Does it come in another color?");
    assert_eq!(rows[0]["typ"], "text");
    assert_eq!(rows[0]["sender"], "client");
    assert_eq!(rows[0]["dt"], "2025-06-08T20:59:43.000Z");
    assert_eq!(rows[0]["bot"], "WA3");
    assert_eq!(rows[0]["name"], "Sheena Nelson");
    assert_eq!(rows[1]["typ"], "image");
    assert_eq!(rows[1]["msg"], "This is a caption");
    assert_eq!(rows[1]["mediaId"], "1003383421387256");
}

#[tokio::test]
async fn a_template_send_reaches_the_graph_api_as_documented_and_follows_statuses() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let receiver = receiver(200).await;
    let (s, r) = send_template(
        &gw,
        "+44 7922 029419",
        json!({"webhookURL": format!("{}/whatsapp-callback", receiver.uri()),
            "webhookPayload": {"orderId": "ORD-12345"},
            "webhookHeaders": [{"name": "X-Api-Key", "value": "k-123"}, "X-Trace: t-9"]}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["phoneNumber"], PHONE);
    assert_eq!(r["countryIso2"], "GB");
    assert_eq!(r["uid"], "3941-wa3-447922029419");
    let mid = r["mid"].as_str().unwrap().to_string();
    let sends = fake.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0],
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "447922029419",
            "type": "template",
            "template": {
                "name": "order_confirmation",
                "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "David"}, {"type": "text", "text": "ORD-12345"}]}]
            },
            "biz_opaque_callback_data": mid
        })
    );
    assert_eq!(ack_of(&gw, &mid).await["ack"], 0);
    let (_, user) = gw
        .cmd("GetUser", json!({"uid": "3941-wa3-447922029419"}))
        .await;
    assert_eq!(
        user["data"]["phone"], PHONE,
        "a new recipient became a user"
    );
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "sent", "447922029419")).await,
        200
    );
    assert_eq!(ack_of(&gw, &mid).await["ack"], 1);
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "read", "447922029419")).await,
        200
    );
    // Out of order: a late delivered after read changes nothing; a failure after read neither.
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "delivered", "447922029419")).await,
        200
    );
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "failed", "447922029419")).await,
        200
    );
    let details = ack_of(&gw, &mid).await;
    assert_eq!(
        details,
        json!({"ok": 1, "cmd": "GetMessageDetails", "uid": "3941-wa3-447922029419", "botID": BOT, "ack": 3})
    );
    let got = callbacks(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_after = receiver.received_requests().await.unwrap();
    assert_eq!(got_after.len(), 2, "one callback per ack change");
    let mut acks: Vec<i64> = got
        .iter()
        .map(|r| {
            let b: Value = serde_json::from_slice(&r.body).unwrap();
            validate("DeliveryCallback", &b);
            assert_eq!(b["mid"], mid.as_str());
            assert_eq!(b["uid"], "3941-wa3-447922029419");
            assert_eq!(b["botID"], BOT);
            assert_eq!(b["webhookPayload"], json!({"orderId": "ORD-12345"}));
            assert_eq!(r.url.path(), "/whatsapp-callback");
            assert_eq!(r.headers.get("x-api-key").unwrap(), "k-123");
            assert_eq!(r.headers.get("x-trace").unwrap(), "t-9");
            b["ack"].as_i64().unwrap()
        })
        .collect();
    acks.sort();
    assert_eq!(acks, vec![1, 3]);
    // A reply to the template moves it to 10.
    assert_eq!(
        inbound(&gw, &text_webhook("wamid.reply1", "Thanks!", Some(wamid))).await,
        200
    );
    // The reply came from 16505551234, the template went to 447922029419:
    // context.id names the template, whoever replies.
    assert_eq!(ack_of(&gw, &mid).await["ack"], 10);
}

#[tokio::test]
async fn failures_surface_with_whatsapp_codes() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    // A failed status with errors[] → -1 and the provider's code.
    let (_, r) = send_template(&gw, PHONE, json!({})).await;
    let mid = r["mid"].as_str().unwrap();
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "failed", "447922029419")).await,
        200
    );
    let d = ack_of(&gw, mid).await;
    assert_eq!(d["ack"], -1);
    assert_eq!(d["whatsappErrorCode"], 131050);
    // The Graph API refuses a text outside the 24-hour window: 3002 with 131047.
    fake.refuse_texts_outside_window().await;
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": "3941-wa3-447922029419", "message": "Are you there?"}),
        )
        .await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["errorCode"], 3002);
    assert_eq!(r["whatsappErrorCode"], 131047);
    assert_eq!(r["whatsappErrorDesc"], "Re-engagement message");
    let (_, conv) = gw
        .cmd("GetConversation", json!({"uid": "3941-wa3-447922029419"}))
        .await;
    let rows = conv["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["msg"],
        "Hi David, your order ORD-12345 is confirmed."
    );
    assert_eq!(rows[1]["msg"], "Are you there?");
    let failed_mid = rows[1]["mid"].as_str().unwrap();
    assert_eq!(
        ack_of(&gw, failed_mid).await["ack"],
        -1,
        "stored before sending, failed after"
    );
}

#[tokio::test]
async fn transient_graph_failures_are_retried_before_reporting() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    Mock::given(method("POST"))
        .and(path(format!("/v23.0/{PNID}/messages")))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let (s, r) = send_template(&gw, PHONE, json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(fake.sends().await.len(), 3, "two 503s, then accepted");
    // Always failing: reported after the schedule (2 retries) as 3002.
    Mock::given(method("POST"))
        .and(path(format!("/v23.0/{PNID}/messages")))
        .respond_with(ResponseTemplate::new(500).set_body_json(graph_error(
            131000,
            "Something went wrong",
            "",
        )))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let (s, r) = send_template(&gw, "+447922029418", json!({})).await;
    assert_eq!(
        (s, r["errorCode"].clone(), r["whatsappErrorCode"].clone()),
        (400, json!(3002), json!(131000)),
        "{r}"
    );
    assert_eq!(fake.sends().await.len(), 6);
}

#[tokio::test]
async fn every_validation_code_of_the_sends() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    gw.cmd("CreateBot", json!({"botID": 55, "kind": "sms"}))
        .await;
    gw.cmd("CreateBot", json!({"botID": 56, "kind": "whatsapp"}))
        .await;
    let base = json!({"botID": BOT, "phone": PHONE, "templateName": "order_confirmation", "language": "en"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let cases = [
        (with("botID", Value::Null), 1008),
        (with("phone", Value::Null), 1009),
        (with("phone", json!("+44 79")), 1007),
        (with("phone", json!("hello")), 1006),
        (with("templateName", Value::Null), 3003),
        (with("language", Value::Null), 3004),
        (with("botID", json!(999)), 1015),
        (with("botID", json!(55)), 1016),
        (with("botID", json!(56)), 1016),
        (with("agentEmail", json!("nobody@example.com")), 2002),
        (with("templateName", json!("no_such_template")), 3001),
        (with("templateName", json!("spring_sale")), 3001),
        (with("language", json!("pt_BR")), 3001),
        (with("parameters", json!(["David"])), 1017),
        (with("webhookURL", json!("ftp://x")), 1017),
        (
            with("webhookHeaders", json!([{"name": "Host", "value": "x"}])),
            1017,
        ),
    ];
    for (fields, code) in cases {
        let (_, r) = gw.cmd("SendWhatsAppTemplate", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields} → {r}");
    }
    assert!(
        fake.sends().await.is_empty(),
        "no invalid request reached the Graph API"
    );
    for (fields, code) in [
        (json!({"message": "x"}), 1025),
        (json!({"uid": "3941-wa3-447922029419"}), 1010),
        (
            json!({"uid": "3941-wa3-447922029419", "message": "x".repeat(2001)}),
            1013,
        ),
        (
            json!({"uid": "3941-wa3-447922029419", "message": "hi"}),
            1005,
        ),
    ] {
        let (_, r) = gw.cmd("SendTextMessage", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields} → {r}");
    }
    for (fields, code) in [
        (json!({}), 1020),
        (json!({"mid": "000000000000000000000000"}), 1020),
    ] {
        let (s, r) = gw.cmd("GetMessageDetails", fields).await;
        assert_eq!((s, r["errorCode"].clone()), (404, json!(code)));
    }
    // 3000: a business account without templates.
    Mock::given(method("GET"))
        .and(path("/v23.0/999000/message_templates"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&fake.server)
        .await;
    gw.cmd(
        "UpdateBot",
        json!({"botID": 56, "phone_number_id": "1", "waba_id": "999000", "access_token": "t"}),
    )
    .await;
    let (_, r) = gw
        .cmd(
            "GetWhatsAppTemplate",
            json!({"botID": 56, "templateName": "x", "language": "en"}),
        )
        .await;
    assert_eq!(r["errorCode"], 3000, "{r}");
}

#[tokio::test]
async fn templates_come_from_every_page_and_refresh_on_a_miss() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let (s, r) = gw
        .cmd(
            "GetWhatsAppTemplate",
            json!({"botID": BOT, "templateName": "order_update", "language": "en"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["template"]["status"], "APPROVED");
    assert_eq!(
        r["template"]["name"], "order_update",
        "found on the second page"
    );
    // Extension `list`: every approved template, of every page.
    let (s, r) = gw
        .cmd("GetWhatsAppTemplate", json!({"botID": BOT, "list": true}))
        .await;
    assert_eq!(s, 200, "{r}");
    let mut names: Vec<&str> = r["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "followup_inquiry_request",
            "order_confirmation",
            "order_update"
        ],
        "not the paused one"
    );
    assert!(r.get("template").is_none(), "{r}");
    let (_, r) = gw
        .cmd(
            "GetWhatsAppTemplate",
            json!({"botID": BOT, "templateName": "shipping_delay", "language": "en"}),
        )
        .await;
    assert_eq!(r["errorCode"], 3001);
    Mock::given(method("GET"))
        .and(path(format!("/v23.0/{WABA}/message_templates")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [template("shipping_delay", "en", "APPROVED", "Sorry, {{1}} is delayed.")]})))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, r) = gw
        .cmd(
            "GetWhatsAppTemplate",
            json!({"botID": BOT, "templateName": "shipping_delay", "language": "en"}),
        )
        .await;
    assert_eq!(s, 200, "a miss re-syncs: {r}");
}

#[tokio::test]
async fn rate_limits_per_phone_and_per_token_with_headers() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |c| {
        c.phone_rate_limit = 1;
        c.send_rate_limit = 10;
    })
    .await;
    let fields = json!({"botID": BOT, "phone": PHONE, "templateName": "followup_inquiry_request", "language": "en"});
    let (s, h, r) = gw
        .cmd_full("SendWhatsAppTemplate", fields.clone(), &[])
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["x-ratelimit-limit"], "10");
    assert_eq!(h["x-ratelimit-remaining"], "9");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!(reset >= chrono::Utc::now().timestamp());
    // One per second per number: of two sends at once to one number, one
    // is refused (at once, so that a slow machine cannot let a second pass).
    let mut other = fields.clone();
    other["phone"] = json!("+447922029499");
    let (a, b) = tokio::join!(
        gw.cmd_full("SendWhatsAppTemplate", other.clone(), &[]),
        gw.cmd_full("SendWhatsAppTemplate", other.clone(), &[])
    );
    let (s, h, r) = if a.0 == 200 { b } else { a };
    assert_eq!((s, r["errorCode"].clone()), (429, json!(2007)), "{r}");
    assert!(h.contains_key("retry-after"));
    // Ten per second per token: a burst to distinct numbers runs out.
    let burst = (0..30).map(|i| {
        let mut f = fields.clone();
        f["phone"] = json!(format!("+4479220294{:02}", 20 + i));
        gw.cmd_full("SendWhatsAppTemplate", f, &[])
    });
    let replies = futures_util::future::join_all(burst).await;
    let (s, h, r) = replies
        .into_iter()
        .find(|(s, _, _)| *s != 200)
        .expect("the send budget runs out within 30 sends");
    assert_eq!((s, r["errorCode"].clone()), (429, json!(2008)), "{r}");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("retry-after"));
}

#[tokio::test]
async fn idempotent_retries_return_the_first_reply_without_sending_again() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let fields = json!({"botID": BOT, "phone": PHONE, "templateName": "followup_inquiry_request", "language": "en"});
    let key = [("idempotency-key", "order-1234-shipped")];
    let (s1, h1, r1) = gw
        .cmd_full("SendWhatsAppTemplate", fields.clone(), &key)
        .await;
    assert_eq!(s1, 200, "{r1}");
    assert!(!h1.contains_key("idempotency-replayed"));
    let (s2, h2, r2) = gw
        .cmd_full("SendWhatsAppTemplate", fields.clone(), &key)
        .await;
    assert_eq!((s2, &r2), (200, &r1));
    assert_eq!(h2["idempotency-replayed"], "true");
    // The field works on either transport; a different body under the key is refused.
    let mut ws = gw.socket().await;
    let mut f = fields.clone();
    f["idempotencyKey"] = json!("order-1234-shipped");
    assert_eq!(ws.cmd("SendWhatsAppTemplate", f).await, r1);
    let mut other = fields.clone();
    other["phone"] = json!("+447922029418");
    let (s3, _, r3) = gw.cmd_full("SendWhatsAppTemplate", other, &key).await;
    assert_eq!((s3, r3["errorCode"].clone()), (409, json!(1017)), "{r3}");
    assert_eq!(
        fake.sends().await.len(),
        1,
        "one message for three requests"
    );
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_never_returned() {
    let fake = FakeGraph::start().await;
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let mut gw = wa_gateway(&fake, |c| {
        c.secrets_key = Some(convgate::config::Secret::new(key))
    })
    .await;
    let (_, bots) = gw.cmd("GetBots", json!({})).await;
    let text = bots.to_string();
    assert!(
        !text.contains(ACCESS_TOKEN) && !text.contains(APP_SECRET) && !text.contains(VERIFY_TOKEN)
    );
    assert_eq!(bots["data"][0]["whatsapp"]["access_token_set"], true);
    assert_eq!(bots["data"][0]["whatsapp"]["phone_number_id"], PNID);
    let receiver = receiver(500).await;
    let (s, _) = send_template(
        &gw,
        PHONE,
        json!({"webhookURL": receiver.uri(),
        "webhookHeaders": {"Authorization": "Bearer callback-secret-42"}}),
    )
    .await;
    assert_eq!(s, 200);
    gw.stop().await;
    let mut found = Vec::new();
    let everything = stored(&gw._dir);
    assert!(!everything.is_empty());
    for (name, bytes) in everything {
        for secret in [ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, "callback-secret-42"] {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                found.push((name.clone(), secret));
            }
        }
    }
    assert!(found.is_empty(), "secrets in the clear on disk: {found:?}");
    gw.restart().await;
    let (s, r) = send_template(&gw, "+447922029418", json!({})).await;
    assert_eq!(s, 200, "the sealed token opens after a restart: {r}");
}

#[tokio::test]
async fn agents_are_named_in_sends_and_conversations() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let (s, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": "john@company.com", "name": "John Smith"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["aid"], 1);
    let (_, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": "ann@company.com", "name": "Ann Lee"}),
        )
        .await;
    assert_eq!(r["data"]["aid"], 2);
    let (_, r) = gw
        .cmd(
            "CreateAgent",
            json!({"email": "JOHN@company.com", "name": "John R. Smith"}),
        )
        .await;
    assert_eq!(r["data"]["aid"], 1, "renamed, same aid");
    assert_eq!(
        gw.cmd("CreateAgent", json!({"email": "nope", "name": "X"}))
            .await
            .1["errorCode"],
        1024
    );
    let (_, agents) = gw.cmd("GetAgents", json!({})).await;
    assert_eq!(agents["data"].as_array().unwrap().len(), 2);
    let (s, r) = send_template(&gw, PHONE, json!({"agentEmail": "john@company.com"})).await;
    assert_eq!(s, 200, "{r}");
    let (_, conv) = gw
        .cmd("GetConversation", json!({"uid": "3941-wa3-447922029419"}))
        .await;
    let row = &conv["data"][0];
    assert_eq!(
        (
            row["aid"].clone(),
            row["agent"].clone(),
            row["agentemail"].clone(),
            row["sender"].clone()
        ),
        (
            json!(1),
            json!("John R. Smith"),
            json!("john@company.com"),
            json!("agent")
        )
    );
    assert!(row.get("ack").is_none(), "the reference's row: {row}");
    // Extension `details`: outbound rows carry their ack, as `onMessage` does.
    let (_, conv) = gw
        .cmd(
            "GetConversation",
            json!({"uid": "3941-wa3-447922029419", "details": true}),
        )
        .await;
    assert_eq!(conv["data"][0]["ack"], 0, "{conv}");
    // And the open list its user, last message and time.
    let (_, open) = gw
        .cmd("GetOpenConversations", json!({"details": true}))
        .await;
    let c = &open["data"][0];
    assert_eq!(c["user"]["phone"], PHONE, "{open}");
    assert_eq!(c["last"]["sender"], "agent", "{open}");
    assert_eq!(c["ldt"], conv["data"][0]["dt"], "{open}");
}

/// The end-to-end path: a customer writes → the CRM socket sees the
/// user → it sends a template over the socket → the fake Graph API gets the
/// documented request → `delivered` arrives → GetMessageDetails says 2 and
/// the callback URL received ack 2.
#[tokio::test]
async fn end_to_end_customer_to_crm_and_back() {
    let fake = FakeGraph::start().await;
    let gw = wa_gateway(&fake, |_| {}).await;
    let receiver = receiver(204).await;
    let mut ws = gw.socket().await;
    assert_eq!(
        inbound(
            &gw,
            &text_webhook("wamid.e2e-in", "Hi, is my order ready?", None)
        )
        .await,
        200
    );
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserCreate");
    let phone = ev["data"]["phone"].as_str().unwrap().to_string();
    let reply = ws
        .cmd("SendWhatsAppTemplate", json!({"botID": BOT, "phone": phone, "language": "en",
            "templateName": "order_update", "parameters": [{"type": "text", "text": "ORD-12345"}],
            "webhookURL": format!("{}/cb", receiver.uri()), "webhookPayload": {"orderId": "ORD-12345"}}))
        .await;
    assert_eq!(reply["ok"], 1, "{reply}");
    assert_eq!(reply["uid"], ev["data"]["uid"], "the same user");
    let mid = reply["mid"].as_str().unwrap().to_string();
    let sends = fake.sends().await;
    assert_eq!(sends[0]["to"], CUSTOMER);
    assert_eq!(sends[0]["template"]["name"], "order_update");
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "delivered", CUSTOMER)).await,
        200
    );
    let d = ws.cmd("GetMessageDetails", json!({"mid": mid})).await;
    assert_eq!(d["ack"], 2);
    let got = callbacks(&receiver, 1).await;
    let b: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (
            b["ack"].clone(),
            b["mid"].clone(),
            b["webhookPayload"].clone()
        ),
        (json!(2), json!(mid), json!({"orderId": "ORD-12345"}))
    );
    let conv = ws
        .cmd("GetConversation", json!({"uid": ev["data"]["uid"]}))
        .await;
    assert_eq!(conv["data"][1]["msg"], "Order ORD-12345 is on its way.");
}

/// An ack's callback survives a restart: queued durably with the ack, it is
/// delivered once the receiver is back, after the gateway restarted.
#[tokio::test]
async fn callbacks_survive_a_restart() {
    let fake = FakeGraph::start().await;
    let mut gw = wa_gateway(&fake, |c| {
        c.webhook_retry_schedule = vec![0.0, 0.2, 0.2, 0.2, 0.2, 0.2]
    })
    .await;
    let receiver = receiver(503).await;
    let (s, r) = send_template(&gw, PHONE, json!({"webhookURL": receiver.uri()})).await;
    assert_eq!(s, 200, "{r}");
    let wamid = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA0";
    assert_eq!(
        inbound(&gw, &status_webhook(wamid, "delivered", "447922029419")).await,
        200
    );
    callbacks(&receiver, 1).await;
    gw.stop().await;
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    gw.restart().await;
    let got = callbacks(&receiver, 1).await;
    let b: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (b["ack"].clone(), b["mid"].clone()),
        (json!(2), r["mid"].clone())
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("convgate_callback_delivered_total 1"),
        "{metrics}"
    );
}
