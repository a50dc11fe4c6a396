//! The SMS channel against a fake Twilio (wiremock on loopback) and real
//! form posts into `/channels/sms/{botID}`, signed as Twilio signs them.
//!
//! Payloads follow Twilio's documentation: the incoming message request
//! ("Twilio's request to your incoming message Webhook URL": `MessageSid`,
//! `SmsSid`, `AccountSid`, `From`, `To`, `Body`, `NumMedia`, geographic
//! fields, `ApiVersion`), the status callback ("Outbound Message Status in
//! Status Callbacks": `MessageSid`, `MessageStatus`, `SmsStatus`,
//! `ErrorCode`), the Message resource returned by "Create a Message" and
//! the REST error object (`code`, `message`, `more_info`, `status`) of
//! 21211 and 21610.

use crate::helpers::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const BOT: u64 = 4100;
const ACCOUNT_SID: &str = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
const AUTH_TOKEN: &str = "twilio-auth-token-f00d";
const FROM: &str = "+15557122661";
const PUBLIC: &str = "https://gw.example.com";
const CUSTOMER: &str = "+14155552671";
/// A recipient the fake refuses with 21610 (unsubscribed).
const UNSUBSCRIBED: &str = "+14155550101";
/// A recipient the fake refuses with 21211 (invalid `To`).
const INVALID_TO: &str = "+14155550102";
/// A recipient for whom the fake answers 503 twice, then accepts.
const FLAKY: &str = "+14155550103";
/// A recipient for whom the fake always answers 503.
const DOWN: &str = "+14155550104";

/// Twilio's signature: base64 HMAC-SHA1 over the URL, then each POST
/// parameter's name and value, sorted by name.
fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    twilio_signature_with(AUTH_TOKEN, url, params)
}

/// [`twilio_signature`] keyed with `auth_token`.
fn twilio_signature_with(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Twilio's documented incoming message request, from `from`.
fn incoming(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", "94105"),
        ("SmsSid", sid),
        ("FromState", "CA"),
        ("SmsStatus", "received"),
        ("FromCity", "SAN FRANCISCO"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", FROM),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Twilio's documented status callback; `ErrorCode` for failures.
fn status(sid: &str, status: &str, error: Option<&str>) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = [
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", CUSTOMER),
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT_SID),
        ("From", FROM),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(code) = error {
        p.push(("ErrorCode".into(), code.into()));
    }
    p
}

/// The fake Twilio: `Messages.json` answering with the documented Message
/// resource (a fresh `SM…` sid per request), and refusals for some numbers.
struct FakeTwilio {
    server: MockServer,
}

fn twilio_error(code: i64, message: &str, status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    }))
}

impl FakeTwilio {
    async fn start() -> FakeTwilio {
        let server = MockServer::start().await;
        let messages = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
        );
        Mock::given(method("POST"))
            .and(path(messages.clone()))
            .and(body_string_contains("To=%2B14155550101"))
            .respond_with(twilio_error(
                21610,
                "Attempt to send to unsubscribed recipient",
                400,
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(messages.clone()))
            .and(body_string_contains("To=%2B14155550102"))
            .respond_with(twilio_error(
                21211,
                "The 'To' number +14155550102 is not a valid phone number.",
                400,
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(messages.clone()))
            .and(body_string_contains("To=%2B14155550103"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(messages.clone()))
            .and(body_string_contains("To=%2B14155550104"))
            .respond_with(ResponseTemplate::new(503))
            .with_priority(1)
            .mount(&server)
            .await;
        let counter = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path(messages))
            .and(header("authorization", basic.as_str()))
            .respond_with(move |req: &Request| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(&req.body).into_owned().collect();
                let sid = format!("SM{n:032x}");
                ResponseTemplate::new(201).set_body_json(json!({
                    "account_sid": ACCOUNT_SID,
                    "api_version": "2010-04-01",
                    "body": form.get("Body"),
                    "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
                    "date_sent": null,
                    "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
                    "direction": "outbound-api",
                    "error_code": null,
                    "error_message": null,
                    "from": form.get("From"),
                    "messaging_service_sid": null,
                    "num_media": "0",
                    "num_segments": "1",
                    "price": null,
                    "price_unit": null,
                    "sid": sid,
                    "status": "queued",
                    "subresource_uris": {"media": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json")},
                    "to": form.get("To"),
                    "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json")
                }))
            })
            .with_priority(5)
            .mount(&server)
            .await;
        FakeTwilio { server }
    }

    /// The form bodies of the message creations received so far.
    async fn sends(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
            .collect()
    }
}

async fn sms_gateway(
    fake: &FakeTwilio,
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> TestGateway {
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.public_base_url = Some(PUBLIC.into());
        c.provider_retry_schedule = vec![0.02, 0.02];
        c.phone_rate_limit = 1000;
        c.send_rate_limit = 1000;
        c.webhook_retry_schedule = vec![0.0, 0.05, 0.05];
        tweak(c);
    })
    .await;
    let (s, r) = gw
        .cmd(
            "CreateBot",
            json!({"botID": BOT, "kind": "sms", "name": "Texts", "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN, "from": FROM, "twilio_base_url": fake.server.uri()}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    gw
}

fn inbound_url(gw: &TestGateway) -> String {
    format!("http://{}/channels/sms/{BOT}", gw.gw().addr)
}

/// POSTs `params` as a form to the bot's URL, signed over `PUBLIC` + path;
/// `host` overrides the `Host` header. Returns the status, content type and body.
async fn post_form(
    gw: &TestGateway,
    params: &[(String, String)],
    signature: Option<String>,
    host: Option<&str>,
) -> (u16, String, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut req = gw
        .http
        .post(inbound_url(gw))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("x-twilio-signature", sig);
    }
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

/// POSTs `params` signed as Twilio would (over the public URL).
async fn twilio_post(gw: &TestGateway, params: &[(String, String)]) -> u16 {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = twilio_signature(&format!("{PUBLIC}/channels/sms/{BOT}"), &pairs);
    post_form(gw, params, Some(sig), None).await.0
}

fn uid_of(phone: &str) -> String {
    format!("{BOT}-cms-{}", phone.trim_start_matches('+'))
}

async fn send_sms(gw: &TestGateway, phone: &str, extra: Value) -> (u16, Value) {
    let mut fields =
        json!({"botID": BOT, "phone": phone, "message": "Hello! Your order has been shipped."});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    gw.cmd("SendSMSMessage", fields).await
}

async fn ack_of(gw: &TestGateway, mid: &str) -> Value {
    let (s, r) = gw.cmd("GetMessageDetails", json!({"mid": mid})).await;
    assert_eq!(s, 200, "{r}");
    r
}

/// The `MessageSid` the fake gave the `n`th accepted message.
fn sid(n: usize) -> String {
    format!("SM{n:032x}")
}

async fn wait_requests(server: &MockServer, n: usize) -> Vec<Request> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.received_requests().await.unwrap_or_default();
        if got.len() >= n || Instant::now() > deadline {
            assert!(got.len() >= n, "expected {n} requests, got {}", got.len());
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_incoming_sms_creates_the_user_once_and_is_answered_with_twiml() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    let params = incoming(
        "SM1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
        CUSTOMER,
        "Hello from my phone",
    );
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = twilio_signature(&format!("{PUBLIC}/channels/sms/{BOT}"), &pairs);
    let (s, ct, body) = post_form(&gw, &params, Some(sig), None).await;
    assert_eq!((s, ct.as_str()), (200, "text/xml"));
    assert!(body.contains("<Response/>"), "{body}");
    let ev = ws.event().await;
    assert_eq!(ev["cmd"], "onUserCreate");
    assert_eq!(ev["data"]["uid"], uid_of(CUSTOMER));
    assert_eq!(ev["data"]["phone"], CUSTOMER);
    assert_eq!(ev["data"]["bot"], "CMS");
    // The same MessageSid again: no second message, no event.
    assert_eq!(twilio_post(&gw, &params).await, 200);
    // An MMS: an image with its media URL.
    let mut mms = incoming("MM0123456789abcdef0123456789abcdef", CUSTOMER, "look");
    mms.retain(|(k, _)| k != "NumMedia");
    mms.push(("NumMedia".into(), "1".into()));
    mms.push(("MediaContentType0".into(), "image/jpeg".into()));
    mms.push((
        "MediaUrl0".into(),
        format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM0123456789abcdef0123456789abcdef/Media/ME0123"),
    ));
    assert_eq!(twilio_post(&gw, &mms).await, 200);
    let (_, conv) = gw
        .cmd("GetConversation", json!({"uid": uid_of(CUSTOMER)}))
        .await;
    let rows = conv["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{conv}");
    assert_eq!(rows[0]["msg"], "Hello from my phone");
    assert_eq!(rows[0]["sender"], "client");
    assert_eq!(rows[1]["typ"], "image");
    assert!(rows[1]["mediaId"]
        .as_str()
        .unwrap()
        .contains("/Media/ME0123"));
    ws.silent_for(200).await;
}

#[tokio::test]
async fn signatures_are_checked_over_the_public_url_not_the_host() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let params = incoming("SM00000000000000000000000000000001", CUSTOMER, "hi");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let good = twilio_signature(&format!("{PUBLIC}/channels/sms/{BOT}"), &pairs);
    let over_host = twilio_signature(
        &format!("http://{}/channels/sms/{BOT}", gw.gw().addr),
        &pairs,
    );
    assert_eq!(post_form(&gw, &params, None, None).await.0, 403, "missing");
    assert_eq!(
        post_form(&gw, &params, Some("bm9wZQ==".into()), None)
            .await
            .0,
        403,
        "wrong"
    );
    assert_eq!(
        post_form(&gw, &params, Some(over_host), None).await.0,
        403,
        "over the Host"
    );
    let mut tampered = params.clone();
    tampered[10].1 = "changed".into();
    assert_eq!(
        post_form(&gw, &tampered, Some(good.clone()), None).await.0,
        403,
        "tampered body"
    );
    let (s, _, _) = post_form(&gw, &params, Some(good), Some("proxy.internal:8443")).await;
    assert_eq!(s, 200, "right, behind a proxy with another Host");
    let (_, users) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(
        users["data"].as_array().unwrap().len(),
        1,
        "only the signed post counted"
    );
    // Without public_base_url nothing can be verified: refused.
    let gw2 = sms_gateway(&fake, |c| c.public_base_url = None).await;
    let sig = twilio_signature(
        &format!("http://{}/channels/sms/{BOT}", gw2.gw().addr),
        &pairs,
    );
    assert_eq!(post_form(&gw2, &params, Some(sig), None).await.0, 403);
}

#[tokio::test]
async fn a_rotated_auth_token_signs_the_very_next_webhook() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    // The first webhook finds the bot (and caches it).
    assert_eq!(
        twilio_post(&gw, &incoming(&sid(1), CUSTOMER, "hi")).await,
        200
    );
    let (_, r) = gw
        .cmd(
            "UpdateBot",
            json!({"botID": BOT, "auth_token": "rotated-token"}),
        )
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    // Signed with the old token: refused at once, no stale bot.
    assert_eq!(
        twilio_post(&gw, &incoming(&sid(2), CUSTOMER, "again")).await,
        403
    );
    let params = incoming(&sid(3), CUSTOMER, "again");
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = twilio_signature_with(
        "rotated-token",
        &format!("{PUBLIC}/channels/sms/{BOT}"),
        &pairs,
    );
    assert_eq!(post_form(&gw, &params, Some(sig), None).await.0, 200);
}

#[tokio::test]
async fn stop_disables_and_start_enables_with_2006_in_between() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    let uid = uid_of(CUSTOMER);
    assert_eq!(
        twilio_post(
            &gw,
            &incoming("SM10000000000000000000000000000001", CUSTOMER, "hi")
        )
        .await,
        200
    );
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    assert_eq!(
        twilio_post(
            &gw,
            &incoming("SM10000000000000000000000000000002", CUSTOMER, " Stop ")
        )
        .await,
        200
    );
    let ev = ws.event().await;
    assert_eq!(
        ev,
        json!({"cmd": "onUserDisable", "ok": 1, "uid": uid, "seq": ev["seq"], "eventId": ev["eventId"],
            "actor": {"type": "channel", "id": BOT.to_string()}})
    );
    let (_, user) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert_eq!(user["data"]["disabled"], true);
    let (s, r) = send_sms(&gw, CUSTOMER, json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2006)), "{r}");
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid, "message": "still there?"}),
        )
        .await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2006)), "{r}");
    assert!(fake.sends().await.is_empty(), "nothing reached Twilio");
    // Twilio's Advanced Opt-Out reports the keyword it matched.
    let mut start = incoming("SM10000000000000000000000000000003", CUSTOMER, "go ahead");
    start.push(("OptOutType".into(), "START".into()));
    assert_eq!(twilio_post(&gw, &start).await, 200);
    assert_eq!(ws.event().await["cmd"], "onUserEnable");
    let (_, user) = gw.cmd("GetUser", json!({"uid": uid})).await;
    assert!(user["data"].get("disabled").is_none(), "{user}");
    let (s, r) = send_sms(&gw, CUSTOMER, json!({})).await;
    assert_eq!(s, 200, "{r}");
    // A keyword on a new number: created, then disabled at once.
    let other = "+14155552672";
    assert_eq!(
        twilio_post(
            &gw,
            &incoming("SM10000000000000000000000000000004", other, "UNSUBSCRIBE")
        )
        .await,
        200
    );
    let (_, user) = gw.cmd("GetUser", json!({"uid": uid_of(other)})).await;
    assert_eq!(user["data"]["disabled"], true, "{user}");
}

#[tokio::test]
async fn a_send_reaches_twilio_as_documented_and_follows_statuses() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let receiver = receiver(200).await;
    let mut ws = gw.socket().await;
    let (s, r) = send_sms(
        &gw,
        CUSTOMER,
        json!({"webhookURL": receiver.uri(), "webhookPayload": {"order": 7},
            "webhookHeaders": [{"name": "X-Key", "value": "k1"}]}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["phoneNumber"], CUSTOMER);
    assert_eq!(r["countryIso2"], "US");
    assert_eq!(r["uid"], uid_of(CUSTOMER));
    let mid = r["mid"].as_str().unwrap().to_string();
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    let sends = fake.sends().await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["To"], CUSTOMER);
    assert_eq!(sends[0]["From"], FROM);
    assert_eq!(sends[0]["Body"], "Hello! Your order has been shipped.");
    assert_eq!(
        sends[0]["StatusCallback"],
        format!("{PUBLIC}/channels/sms/{BOT}")
    );
    assert_eq!(ack_of(&gw, &mid).await["ack"], 0);
    for st in ["sent", "delivered", "sent", "delivered"] {
        assert_eq!(twilio_post(&gw, &status(&sid(0), st, None)).await, 200);
    }
    assert_eq!(
        ack_of(&gw, &mid).await["ack"],
        2,
        "late sent and duplicates change nothing"
    );
    assert_eq!(
        twilio_post(&gw, &status(&sid(0), "undelivered", Some("30003"))).await,
        200
    );
    assert_eq!(
        ack_of(&gw, &mid).await["ack"],
        2,
        "no failure after delivery"
    );
    let got = wait_requests(&receiver, 2).await;
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    for b in &bodies {
        validate("DeliveryCallback", b);
        assert_eq!(b["webhookPayload"], json!({"order": 7}));
    }
    let mut acks: Vec<i64> = bodies.iter().map(|b| b["ack"].as_i64().unwrap()).collect();
    acks.sort();
    assert_eq!(acks, vec![1, 2]);
    assert_eq!(got[0].headers["x-key"], "k1");
    // A failure before delivery: -1 with Twilio's code, in details and callback.
    let (s, r) = send_sms(&gw, "+14155552673", json!({"webhookURL": receiver.uri()})).await;
    assert_eq!(s, 200, "{r}");
    let mid2 = r["mid"].as_str().unwrap();
    assert_eq!(
        twilio_post(&gw, &status(&sid(1), "undelivered", Some("30003"))).await,
        200
    );
    let d = ack_of(&gw, mid2).await;
    assert_eq!(
        (d["ack"].clone(), d["smsErrorCode"].clone()),
        (json!(-1), json!(30003)),
        "{d}"
    );
    assert_eq!(d["smsErrorDesc"], "Unreachable destination handset");
    let got = wait_requests(&receiver, 3).await;
    let last: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(
        (last["ack"].clone(), last["smsErrorCode"].clone()),
        (json!(-1), json!(30003))
    );
    // SendTextMessage to an SMS user goes through Twilio too.
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid_of(CUSTOMER), "message": "Thanks!"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(fake.sends().await[2]["Body"], "Thanks!");
    let long = "x".repeat(1601);
    let (s, r) = gw
        .cmd(
            "SendTextMessage",
            json!({"uid": uid_of(CUSTOMER), "message": long}),
        )
        .await;
    assert_eq!(
        (s, r["errorCode"].clone()),
        (400, json!(1013)),
        "SMS limit: {r}"
    );
}

#[tokio::test]
async fn twilio_refusals_map_to_the_reference_codes() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    // 21610: the recipient unsubscribed: disabled, 2006.
    let (s, r) = send_sms(&gw, UNSUBSCRIBED, json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2006)), "{r}");
    assert_eq!(ws.event().await["cmd"], "onUserCreate");
    let ev = ws.event().await;
    assert_eq!(
        (ev["cmd"].clone(), ev["uid"].clone()),
        (json!("onUserDisable"), json!(uid_of(UNSUBSCRIBED)))
    );
    let before = fake.sends().await.len();
    let (s, _) = send_sms(&gw, UNSUBSCRIBED, json!({})).await;
    assert_eq!(s, 400);
    assert_eq!(
        fake.sends().await.len(),
        before,
        "a disabled user is not sent to"
    );
    // 21211: another refusal: 2005 with Twilio's code and message, never retried.
    let (s, r) = send_sms(&gw, INVALID_TO, json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (400, json!(2005)), "{r}");
    assert_eq!(r["smsErrorCode"], 21211);
    assert!(r["smsErrorDesc"]
        .as_str()
        .unwrap()
        .contains("not a valid phone number"));
    let tries = |to: &'static str| {
        let fake = &fake;
        async move { fake.sends().await.iter().filter(|f| f["To"] == to).count() }
    };
    assert_eq!(tries(INVALID_TO).await, 1);
    // 5xx: retried on the transient schedule.
    let (s, r) = send_sms(&gw, FLAKY, json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(tries(FLAKY).await, 3);
    let (s, r) = send_sms(&gw, DOWN, json!({})).await;
    assert_eq!((s, r["errorCode"].clone()), (500, json!(2003)), "{r}");
    assert_eq!(tries(DOWN).await, 3);
}

#[tokio::test]
async fn every_validation_code_of_send_sms_message() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    assert_eq!(
        gw.cmd("CreateBot", json!({"botID": 3941, "kind": "whatsapp"}))
            .await
            .0,
        200
    );
    let cases = [
        (json!({"phone": CUSTOMER, "message": "x"}), 1008),
        (
            json!({"botID": 999, "phone": CUSTOMER, "message": "x"}),
            1015,
        ),
        (
            json!({"botID": 3941, "phone": CUSTOMER, "message": "x"}),
            1016,
        ),
        (json!({"botID": BOT, "message": "x"}), 1009),
        (
            json!({"botID": BOT, "phone": "+1 415", "message": "x"}),
            1007,
        ),
        (
            json!({"botID": BOT, "phone": "call me", "message": "x"}),
            1006,
        ),
        (json!({"botID": BOT, "phone": CUSTOMER}), 1010),
        (
            json!({"botID": BOT, "phone": CUSTOMER, "message": "x".repeat(1601)}),
            1013,
        ),
        (
            json!({"botID": BOT, "phone": CUSTOMER, "message": "x", "agentEmail": "nobody@example.com"}),
            2002,
        ),
        (
            json!({"botID": BOT, "phone": CUSTOMER, "message": "x", "webhookURL": "ftp://x"}),
            1017,
        ),
    ];
    for (fields, code) in cases {
        let (_, r) = gw.cmd("SendSMSMessage", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields}: {r}");
    }
    // An SMS bot without credentials, and WhatsApp commands on an SMS bot.
    assert_eq!(
        gw.cmd("CreateBot", json!({"botID": 4101, "kind": "sms"}))
            .await
            .0,
        200
    );
    let (_, r) = gw
        .cmd(
            "SendSMSMessage",
            json!({"botID": 4101, "phone": CUSTOMER, "message": "x"}),
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
        .cmd(
            "SendWhatsAppTemplate",
            json!({"botID": BOT, "phone": CUSTOMER, "templateName": "t", "language": "en"}),
        )
        .await;
    assert_eq!(r["errorCode"], 1016, "{r}");
    assert!(fake.sends().await.is_empty());
    // Settings: sealed, shown as set; another kind's setting is 1016.
    let (_, bots) = gw.cmd("GetBots", json!({})).await;
    let sms = bots["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["botID"] == BOT)
        .unwrap()
        .clone();
    assert_eq!(sms["sms"]["auth_token_set"], true, "{sms}");
    assert_eq!(sms["sms"]["account_sid"], ACCOUNT_SID);
    assert!(!bots.to_string().contains(AUTH_TOKEN));
    let (_, r) = gw
        .cmd("UpdateBot", json!({"botID": BOT, "access_token": "EAAG"}))
        .await;
    assert_eq!(r["errorCode"], 1016, "{r}");
}

#[tokio::test]
async fn rate_limits_and_idempotent_retries() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |c| {
        c.phone_rate_limit = 1;
        c.send_rate_limit = 3;
    })
    .await;
    // Sent at once, so that a slow machine cannot let the budgets refill:
    // one per second to a number (2007), three per second per token (2008).
    let (a, b) = tokio::join!(
        send_sms(&gw, CUSTOMER, json!({})),
        send_sms(&gw, CUSTOMER, json!({}))
    );
    let mut codes = [a.1["errorCode"].clone(), b.1["errorCode"].clone()];
    codes.sort_by_key(|c| c.to_string());
    assert_eq!(codes, [json!(2007), Value::Null], "{a:?} {b:?}");
    let burst = [
        "+14155552674",
        "+14155552675",
        "+14155552677",
        "+14155552678",
    ]
    .map(|phone| send_sms(&gw, phone, json!({})));
    let replies = futures_util::future::join_all(burst).await;
    let refused: Vec<_> = replies.iter().filter(|(s, _)| *s != 200).collect();
    assert!(!refused.is_empty(), "{replies:?}");
    for (s, r) in refused {
        assert_eq!((*s, r["errorCode"].clone()), (429, json!(2008)), "{r}");
    }
    let gw = sms_gateway(&fake, |_| {}).await;
    let before = fake.sends().await.len();
    let key = [("idempotency-key", "sms-order-9")];
    let fields = json!({"botID": BOT, "phone": "+14155552676", "message": "Once only"});
    let (s1, _, r1) = gw.cmd_full("SendSMSMessage", fields.clone(), &key).await;
    assert_eq!(s1, 200, "{r1}");
    let (s2, h2, r2) = gw.cmd_full("SendSMSMessage", fields, &key).await;
    assert_eq!((s2, &r2), (200, &r1));
    assert_eq!(h2["idempotency-replayed"], "true");
    assert_eq!(
        fake.sends().await.len(),
        before + 1,
        "one message for two requests"
    );
}

#[tokio::test]
async fn end_to_end_sms_to_crm_and_back() {
    let fake = FakeTwilio::start().await;
    let gw = sms_gateway(&fake, |_| {}).await;
    let mut ws = gw.socket().await;
    assert_eq!(
        twilio_post(
            &gw,
            &incoming(
                "SM20000000000000000000000000000001",
                CUSTOMER,
                "Is my order on its way?"
            )
        )
        .await,
        200
    );
    let created = ws.event().await;
    assert_eq!(created["cmd"], "onUserCreate");
    let uid = created["data"]["uid"].as_str().unwrap().to_string();
    let reply = ws
        .cmd(
            "SendTextMessage",
            json!({"uid": uid, "message": "Yes, it ships today."}),
        )
        .await;
    assert_eq!(reply["ok"], 1, "{reply}");
    let mid = reply["mid"].as_str().unwrap().to_string();
    let sends = fake.sends().await;
    assert_eq!(
        (
            sends[0]["To"].as_str(),
            sends[0]["From"].as_str(),
            sends[0]["Body"].as_str()
        ),
        (CUSTOMER, FROM, "Yes, it ships today.")
    );
    assert_eq!(
        twilio_post(&gw, &status(&sid(0), "delivered", None)).await,
        200
    );
    let d = ws.cmd("GetMessageDetails", json!({"mid": mid})).await;
    assert_eq!(d["ack"], 2, "{d}");
}
