//! Routes (issue 17): `SetRoute`/`GetRoutes`/`DeleteRoute`, the
//! reference's `SendMessage` and `SetUserData` `route`, every step kind,
//! waits both ways, the replace policy, the loop guard, a restart while a
//! run waits, and `onRouteEnd`. Sends go through the sandbox (a test key:
//! the full send path, no provider) and a fake webhook target on loopback.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SMS_BOT: u64 = 8101;
const TG_BOT: u64 = 8102;

/// A gateway with an SMS and a Telegram bot, an agent, the tag `Lead`, and
/// a test key (returned).
async fn routes_gateway(
    tweak: impl FnOnce(&mut convgate::config::Config),
) -> (TestGateway, String) {
    let gw = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.sandbox_ack_delays = vec![];
        c.phone_rate_limit = 1000;
        c.send_rate_limit = 1000;
        tweak(c);
    })
    .await;
    let (_, r) = gw
        .cmd("CreateApiKey", json!({"name": "dev", "mode": "test"}))
        .await;
    let key = r["data"]["key"].as_str().unwrap().to_string();
    let setup = [
        ("CreateBot", json!({"botID": SMS_BOT, "kind": "sms"})),
        ("CreateBot", json!({"botID": TG_BOT, "kind": "telegram"})),
        (
            "CreateAgent",
            json!({"email": "ann@example.com", "name": "Ann"}),
        ),
        (
            "CreateAgent",
            json!({"email": "bob@example.com", "name": "Bob"}),
        ),
    ];
    for (cmd, fields) in setup {
        let (s, r) = gw.cmd(cmd, fields).await;
        assert_eq!(s, 200, "{r}");
    }
    let (s, r) = gw
        .cmd_as(&key, "CreateUserTag", json!({"tag": "Lead"}))
        .await;
    assert_eq!(s, 200, "{r}");
    (gw, key)
}

async fn set_route(gw: &TestGateway, key: &str, name: &str, bot: u64, steps: Value) {
    let (s, r) = gw
        .cmd_as(
            key,
            "SetRoute",
            json!({"name": name, "botID": bot, "steps": steps}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
}

/// A socket of `key` that opted in to `onRouteEnd`.
async fn route_socket(gw: &TestGateway, key: &str) -> Ws {
    let mut ws = gw.raw_socket().await;
    ws.send(&json!({"cmd": "connect", "token": key, "events": ["onRouteEnd"]}))
        .await;
    assert_eq!(ws.recv().await["cmd"], "connected");
    ws
}

/// The next `onRouteEnd` on `ws` (other events are skipped).
async fn route_end(ws: &mut Ws) -> Value {
    loop {
        let e = ws.event().await;
        if e["cmd"] == "onRouteEnd" {
            return e;
        }
    }
}

/// Starts route `route` for `phone` with `SendMessage` as `key`; returns the uid.
async fn start_route(gw: &TestGateway, key: &str, phone: &str, route: &str) -> String {
    let (s, r) = gw
        .cmd_as(key, "SendMessage", json!({"phone": phone, "route": route}))
        .await;
    assert_eq!(s, 200, "{r}");
    r["uid"].as_str().unwrap().to_string()
}

/// The texts of the user's conversation rows sent by the system (the route).
async fn sent_texts(gw: &TestGateway, key: &str, uid: &str) -> Vec<String> {
    let (_, r) = gw.cmd_as(key, "GetConversation", json!({"uid": uid})).await;
    r["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|row| row["sender"] != "client")
        .filter_map(|row| row["msg"].as_str().map(str::to_string))
        .collect()
}

async fn user_data(gw: &TestGateway, key: &str, uid: &str) -> Value {
    gw.cmd_as(key, "GetUserData", json!({"uid": uid})).await.1["data"].clone()
}

#[tokio::test]
async fn routes_are_validated_as_a_whole_listed_and_deleted() {
    let (gw, key) = routes_gateway(|_| {}).await;
    let ok = json!([{"send_text": {"text": "Hi"}}]);
    let long = "r".repeat(257);
    let cases = [
        (json!({"botID": SMS_BOT, "steps": ok}), 1011, ""),
        (
            json!({"name": long, "botID": SMS_BOT, "steps": ok}),
            1014,
            "",
        ),
        (json!({"name": "w", "steps": ok}), 1008, ""),
        (json!({"name": "w", "botID": 999, "steps": ok}), 1015, ""),
        (json!({"name": "w", "botID": SMS_BOT}), 1017, "steps"),
        (
            json!({"name": "w", "botID": SMS_BOT, "steps": [{"send_text": {"text": "{{user.age}}"}}]}),
            1017,
            "step 0: unknown placeholder",
        ),
        (
            json!({"name": "w", "botID": SMS_BOT, "steps": [{"end": {}}, {"add_tag": "Nope"}]}),
            1017,
            "step 1: no tag",
        ),
        (
            json!({"name": "w", "botID": SMS_BOT, "steps": [{"assign_agent": "zed@example.com"}]}),
            1017,
            "step 0: no agent",
        ),
        (
            json!({"name": "w", "botID": SMS_BOT, "steps": [{"wait_for_reply": {"timeout": 5, "on_reply": "x"}}]}),
            1017,
            "no step is labelled",
        ),
        (
            json!({"name": "w", "botID": SMS_BOT, "steps": [{"send_template": {"templateName": "t", "language": "en"}}]}),
            1016,
            "no templates",
        ),
    ];
    for (fields, code, needle) in cases {
        let (_, r) = gw.cmd_as(&key, "SetRoute", fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{fields}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains(needle),
            "{fields}: {r}"
        );
    }
    set_route(&gw, &key, "welcome", SMS_BOT, ok.clone()).await;
    set_route(&gw, &key, "tg", TG_BOT, ok.clone()).await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552001", "route": "tg"}),
        )
        .await;
    assert_eq!(r["errorCode"], 1016, "a Telegram route has no phone: {r}");
    gw.cmd_as(&key, "DeleteRoute", json!({"name": "tg"})).await;
    // Routes are shared by the organization and its sandbox, like bots.
    let (_, r) = gw.cmd("GetRoutes", json!({})).await;
    assert_eq!(r["data"][0]["name"], "welcome", "{r}");
    assert_eq!(r["data"][0]["steps"], ok);
    for (cmd, fields, code) in [
        (
            "SendMessage",
            json!({"phone": "+14155552001", "route": "nope"}),
            1012,
        ),
        ("SendMessage", json!({"phone": "+14155552001"}), 1011),
        ("SendMessage", json!({"route": "welcome"}), 1009),
        (
            "SendMessage",
            json!({"phone": "+14155552001", "route": long}),
            1014,
        ),
        (
            "SendMessage",
            json!({"phone": "+14155552001", "route": "welcome", "message": "x".repeat(2001)}),
            1013,
        ),
        (
            "SendMessage",
            json!({"phone": "+14155552001", "route": "welcome", "userdata": [1]}),
            1017,
        ),
        ("DeleteRoute", json!({"name": "nope"}), 1012),
    ] {
        let (_, r) = gw.cmd_as(&key, cmd, fields.clone()).await;
        assert_eq!(r["errorCode"], code, "{cmd} {fields}: {r}");
    }
    let (s, _) = gw
        .cmd_as(&key, "DeleteRoute", json!({"name": "welcome"}))
        .await;
    assert_eq!(s, 200);
    let (_, r) = gw.cmd("GetRoutes", json!({})).await;
    assert_eq!(r["data"], json!([]));
}

#[tokio::test]
async fn the_worked_example_runs_end_to_end_over_a_crm_socket() {
    let (gw, key) = routes_gateway(|_| {}).await;
    set_route(
        &gw,
        &key,
        "welcome",
        SMS_BOT,
        json!([
            {"send_text": {"text": "Hi {{user.first_name}}! {{message}} Your plan: {{data.plan}}. What is your email?"}},
            {"set_data": {"stage": "asked"}},
            {"wait_for_reply": {"timeout": 30, "save_as": "email", "on_timeout": "bye"}},
            {"branch": {"if": {"key": "email", "exists": true}, "then": "lead", "else": "bye"}},
            {"label": "lead", "add_tag": "Lead"},
            {"send_text": {"text": "Thanks, we will write to {{data.email}}."}},
            {"assign_agent": "round_robin"},
            {"end": {}},
            {"label": "bye", "send_text": {"text": "Bye"}}
        ]),
    )
    .await;
    let mut ws = route_socket(&gw, &key).await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "UpsertUser",
            json!({"botID": SMS_BOT, "phone": "+14155552002", "name": "Ada Lovelace"}),
        )
        .await;
    let uid = r["uid"].as_str().unwrap().to_string();
    let (s, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552002", "route": "welcome", "message": "Welcome to our service!", "userdata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let mid = r["mid"].as_str().expect("the first send's mid").to_string();
    let (_, d) = gw
        .cmd_as(&key, "GetMessageDetails", json!({"mid": mid}))
        .await;
    assert_eq!(d["uid"], json!(uid));
    assert_eq!(
        sent_texts(&gw, &key, &uid).await,
        vec!["Hi Ada! Welcome to our service! Your plan: pro. What is your email?"]
    );
    // The run waits: data set so far, nothing more sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while user_data(&gw, &key, &uid).await["stage"] != "asked" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The customer answers through the inbound path: the run resumes.
    let (_, r) = gw
        .cmd_as(
            &key,
            "SimulateInbound",
            json!({"botID": SMS_BOT, "phone": "+14155552002", "message": "ada@example.com"}),
        )
        .await;
    assert_eq!(r["ok"], 1, "{r}");
    let end = route_end(&mut ws).await;
    assert_eq!(
        (
            end["data"]["uid"].clone(),
            end["data"]["route"].clone(),
            end["data"]["outcome"].clone()
        ),
        (json!(uid), json!("welcome"), json!("completed")),
        "{end}"
    );
    assert_eq!(end["actor"], json!({"type": "route", "id": "welcome"}));
    let data = user_data(&gw, &key, &uid).await;
    assert_eq!(
        (data["email"].clone(), data["plan"].clone()),
        (json!("ada@example.com"), json!("pro"))
    );
    let (_, tags) = gw.cmd_as(&key, "GetUserTags", json!({"uid": uid})).await;
    assert!(tags.to_string().contains("Lead"), "{tags}");
    assert_eq!(
        sent_texts(&gw, &key, &uid).await[1..],
        ["Thanks, we will write to ada@example.com.".to_string()]
    );
    let (_, open) = gw.cmd_as(&key, "GetOpenConversations", json!({})).await;
    assert_eq!(
        open["data"][0]["agent"], "Ann",
        "round robin starts at the first agent: {open}"
    );
    // Handed over to an agent: automatic sends now answer 2001.
    let (_, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552002", "route": "welcome"}),
        )
        .await;
    assert_eq!(r["errorCode"], 2001, "{r}");
    // A plain socket never sees onRouteEnd.
    let mut plain = gw.socket_as(&key).await;
    gw.cmd_as(
        &key,
        "SetUserData",
        json!({"uid": uid, "data": {"x": 1}, "route": "welcome"}),
    )
    .await;
    plain.silent_for(300).await;
}

#[tokio::test]
async fn waits_time_out_to_their_label_or_end_the_run() {
    let (gw, key) = routes_gateway(|_| {}).await;
    set_route(
        &gw,
        &key,
        "ask",
        SMS_BOT,
        json!([
            {"wait_for_reply": {"timeout": 0.3, "save_as": "answer", "on_timeout": "late"}},
            {"send_text": {"text": "got {{data.answer}}"}},
            {"end": {}},
            {"label": "late", "send_text": {"text": "Still there?"}}
        ]),
    )
    .await;
    set_route(
        &gw,
        &key,
        "quiet",
        SMS_BOT,
        json!([{"wait_for_reply": {"timeout": 0.2}}, {"send_text": {"text": "never"}}]),
    )
    .await;
    let mut ws = route_socket(&gw, &key).await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552003", "route": "ask"}),
        )
        .await;
    assert!(r.get("mid").is_none(), "nothing sent before the wait: {r}");
    let uid = r["uid"].as_str().unwrap().to_string();
    let end = route_end(&mut ws).await;
    assert_eq!(end["data"]["outcome"], "completed", "{end}");
    assert_eq!(sent_texts(&gw, &key, &uid).await, vec!["Still there?"]);

    let quiet = start_route(&gw, &key, "+14155552004", "quiet").await;
    let end = route_end(&mut ws).await;
    assert_eq!(
        (end["data"]["outcome"].clone(), end["data"]["uid"].clone()),
        (json!("timed_out"), json!(quiet))
    );
    assert!(sent_texts(&gw, &key, &quiet).await.is_empty());

    // Answered in time: on to the next step with the answer saved.
    let uid = start_route(&gw, &key, "+14155552005", "ask").await;
    gw.cmd_as(
        &key,
        "SimulateInbound",
        json!({"botID": SMS_BOT, "phone": "+14155552005", "message": "42"}),
    )
    .await;
    let end = route_end(&mut ws).await;
    assert_eq!(end["data"]["outcome"], "completed", "{end}");
    assert_eq!(sent_texts(&gw, &key, &uid).await, vec!["got 42"]);
}

#[tokio::test]
async fn webhook_steps_data_tags_and_closing() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"tier": "gold", "score": 7})))
        .mount(&target)
        .await;
    let (gw, key) = routes_gateway(|_| {}).await;
    set_route(
        &gw,
        &key,
        "enrich",
        SMS_BOT,
        json!([
            {"set_data": {"source": "ad {{message}}"}},
            {"webhook": {"url": target.uri(), "save_as": "crm"}},
            {"add_tag": "Lead"},
            {"branch": {"if": {"key": "source", "equals": "ad summer"}, "then": "summer"}},
            {"send_text": {"text": "not summer"}},
            {"label": "summer", "remove_tag": "Lead"},
            {"send_text": {"text": "summer {{data.crm}}"}},
            {"close_conversation": {}}
        ]),
    )
    .await;
    let mut ws = route_socket(&gw, &key).await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552006", "route": "enrich", "message": "summer"}),
        )
        .await;
    let uid = r["uid"].as_str().unwrap().to_string();
    assert!(r["mid"].is_string(), "{r}");
    let end = route_end(&mut ws).await;
    assert_eq!(end["data"]["outcome"], "completed", "{end}");
    // The webhook got {user, data, route}; its reply was saved.
    let posts = target.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["route"], "enrich");
    assert_eq!(body["user"]["uid"], json!(uid));
    assert_eq!(body["data"]["source"], "ad summer");
    let data = user_data(&gw, &key, &uid).await;
    assert_eq!(data["crm"], json!({"tier": "gold", "score": 7}));
    assert_eq!(
        sent_texts(&gw, &key, &uid).await,
        vec![r#"summer {"score":7,"tier":"gold"}"#]
    );
    let (_, tags) = gw.cmd_as(&key, "GetUserTags", json!({"uid": uid})).await;
    assert!(!tags.to_string().contains("Lead"), "{tags}");
    let (_, open) = gw.cmd_as(&key, "GetOpenConversations", json!({})).await;
    assert_eq!(open["data"], json!([]), "closed by the route");
}

#[tokio::test]
async fn failures_replacement_and_the_loop_guard() {
    let (gw, key) = routes_gateway(|_| {}).await;
    let mut ws = route_socket(&gw, &key).await;
    // A blocked Telegram user: the first send fails with 2006.
    set_route(
        &gw,
        &key,
        "hello",
        TG_BOT,
        json!([{"send_text": {"text": "hello"}}]),
    )
    .await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "SimulateInbound",
            json!({"botID": TG_BOT, "chatId": 5550000, "message": "/start"}),
        )
        .await;
    let blocked = r["uid"].as_str().unwrap().to_string();
    let (s, r) = gw
        .cmd_as(
            &key,
            "SetUserData",
            json!({"uid": blocked, "data": {"a": 1}, "route": "hello"}),
        )
        .await;
    assert_eq!(s, 200, "the reply does not wait for the run: {r}");
    let end = route_end(&mut ws).await;
    assert_eq!(
        (
            end["data"]["outcome"].clone(),
            end["data"]["errorCode"].clone()
        ),
        (json!("failed"), json!(2006)),
        "{end}"
    );
    // Starting a route again replaces the waiting run.
    set_route(
        &gw,
        &key,
        "wait",
        SMS_BOT,
        json!([{"wait_for_reply": {"timeout": 30}}]),
    )
    .await;
    let (_, first) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552007", "route": "wait"}),
        )
        .await;
    let (_, second) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552007", "route": "wait"}),
        )
        .await;
    let end = route_end(&mut ws).await;
    assert_eq!(
        (end["data"]["outcome"].clone(), end["data"]["runId"].clone()),
        (json!("replaced"), first["runId"].clone()),
        "{end}"
    );
    assert_ne!(first["runId"], second["runId"]);
    // A route that loops stops after 100 steps.
    set_route(
        &gw,
        &key,
        "loop",
        SMS_BOT,
        json!([
            {"label": "top", "set_data": {"n": 1}},
            {"branch": {"if": {"key": "n", "exists": true}, "then": "top"}}
        ]),
    )
    .await;
    gw.cmd_as(
        &key,
        "SendMessage",
        json!({"phone": "+14155552008", "route": "loop"}),
    )
    .await;
    let end = route_end(&mut ws).await;
    assert_eq!(
        (end["data"]["route"].clone(), end["data"]["outcome"].clone()),
        (json!("loop"), json!("failed")),
        "{end}"
    );
    assert!(
        end["data"]["error"].as_str().unwrap().contains("100 steps"),
        "{end}"
    );
}

#[tokio::test]
async fn a_waiting_run_survives_a_restart_and_sends_nothing_twice() {
    let (mut gw, key) = routes_gateway(|_| {}).await;
    set_route(
        &gw,
        &key,
        "two",
        SMS_BOT,
        json!([
            {"send_text": {"text": "one"}},
            {"wait_for_reply": {"timeout": 60, "save_as": "answer"}},
            {"send_text": {"text": "two: {{data.answer}}"}}
        ]),
    )
    .await;
    let (_, r) = gw
        .cmd_as(
            &key,
            "SendMessage",
            json!({"phone": "+14155552009", "route": "two"}),
        )
        .await;
    let uid = r["uid"].as_str().unwrap().to_string();
    assert!(r["mid"].is_string(), "{r}");
    gw.stop().await;
    gw.restart().await;
    let mut ws = route_socket(&gw, &key).await;
    gw.cmd_as(
        &key,
        "SimulateInbound",
        json!({"botID": SMS_BOT, "phone": "+14155552009", "message": "yes"}),
    )
    .await;
    let end = route_end(&mut ws).await;
    assert_eq!(end["data"]["outcome"], "completed", "{end}");
    assert_eq!(sent_texts(&gw, &key, &uid).await, vec!["one", "two: yes"]);
}

#[tokio::test]
async fn a_live_route_sends_a_template_through_the_provider_once() {
    use crate::whatsapp::{FakeGraph, BOT};
    let fake = FakeGraph::start().await;
    let base = fake.base();
    let mut gw = spawn_with(|c| {
        c.graph_base_url = base;
        c.phone_rate_limit = 1000;
    })
    .await;
    crate::whatsapp::create_bot(&gw).await;
    gw.cmd(
        "CreateAgent",
        json!({"email": "ann@example.com", "name": "Ann"}),
    )
    .await;
    set_route(
        &gw,
        &gw.token.clone(),
        "confirm",
        BOT,
        json!([
            {"send_template": {"templateName": "order_confirmation", "language": "en",
                "parameters": ["{{user.name}}", "{{data.order}}"]}},
            {"assign_agent": "ann@example.com"}
        ]),
    )
    .await;
    let (_, r) = gw
        .cmd(
            "UpsertUser",
            json!({"botID": BOT, "phone": "+16505551234", "name": "Grace Hopper"}),
        )
        .await;
    let uid = r["uid"].as_str().unwrap().to_string();
    let (s, r) = gw
        .cmd(
            "SendMessage",
            json!({"phone": "+1 650 555 1234", "route": "confirm", "userdata": {"order": "A-17"}}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["uid"], json!(uid));
    assert!(r["mid"].is_string(), "{r}");
    let sends = fake.sends().await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0]["type"], "template");
    assert_eq!(sends[0]["to"], "16505551234");
    let params = &sends[0]["template"]["components"][0]["parameters"];
    assert_eq!(
        (params[0]["text"].clone(), params[1]["text"].clone()),
        (json!("Grace Hopper"), json!("A-17")),
        "{}",
        sends[0]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, open) = gw.cmd("GetOpenConversations", json!({})).await;
        if open["data"][0]["agent"] == "Ann" {
            break;
        }
        assert!(Instant::now() < deadline, "{open}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After a restart nothing is sent again: the run ended.
    gw.stop().await;
    gw.restart().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.sends().await.len(), 1);
}

#[tokio::test]
async fn config_file_routes_are_set_at_start_and_bad_ones_stop_it() {
    use convgate::config::{BotConfig, RouteConfig};
    let bot = BotConfig {
        org: "default".into(),
        bot_id: 8201,
        kind: "sms".into(),
        name: Some("Texts".into()),
        settings: Default::default(),
    };
    let route = |steps: Value| RouteConfig {
        org: "default".into(),
        name: "from-config".into(),
        bot_id: 8201,
        steps: steps.as_array().unwrap().clone(),
    };
    let good = route(json!([{"send_text": {"text": "Hi {{user.name}}"}}]));
    let (b, g) = (bot.clone(), good.clone());
    let gw = spawn_with(move |c| {
        c.bots = vec![b];
        c.routes = vec![g];
    })
    .await;
    let (_, r) = gw.cmd("GetRoutes", json!({})).await;
    assert_eq!(r["data"][0]["name"], "from-config", "{r}");
    assert_eq!(r["data"][0]["botID"], 8201);

    let dir = TestDir::new();
    let mut config = dir.config();
    config.bots = vec![bot];
    config.routes = vec![route(json!([{"send_text": {"text": "{{user.age}}"}}]))];
    let err = convgate::server::start(config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("[[routes]] \"from-config\": step 0: unknown placeholder"),
        "{err}"
    );
}

#[tokio::test]
async fn consecutive_sends_are_paced_by_the_phone_rate_limit_not_failed() {
    let (gw, key) = routes_gateway(|c| c.phone_rate_limit = 1).await;
    set_route(
        &gw,
        &key,
        "pair",
        SMS_BOT,
        json!([{"send_text": {"text": "first"}}, {"send_text": {"text": "second"}}]),
    )
    .await;
    let mut ws = route_socket(&gw, &key).await;
    let uid = start_route(&gw, &key, "+14155552010", "pair").await;
    let end = route_end(&mut ws).await;
    assert_eq!(end["data"]["outcome"], "completed", "{end}");
    assert_eq!(sent_texts(&gw, &key, &uid).await, vec!["first", "second"]);
}
