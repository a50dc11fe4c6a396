//! Every command's validations: each error code of the reference that the
//! user and tag commands can produce, over both transports.

use crate::helpers::*;
use serde_json::{json, Value};

const UID: &str = "3941-wa3-447922029419";

/// (command, fields, expected errorCode) on a gateway holding bot 3941 (whatsapp),
/// bot 73 (telegram), user UID and no tags.
fn error_cases() -> Vec<(&'static str, Value, u16)> {
    let long = "x".repeat(1025);
    vec![
        ("GetUser", json!({}), 1025),
        ("GetUser", json!({"uid": ""}), 1025),
        ("GetUser", json!({"uid": "73-tel-1"}), 1005),
        ("GetUsers", json!({"botID": 999}), 1015),
        ("GetUsers", json!({"botID": "abc"}), 1017),
        ("GetUsers", json!({"CreatedDate": "last tuesday"}), 1003),
        ("GetUsers", json!({"limit": 0}), 1017),
        ("SetUserData", json!({"uid": UID}), 1017),
        ("SetUserData", json!({"uid": UID, "data": [1, 2]}), 1017),
        (
            "SetUserData",
            json!({"uid": UID, "data": {"a": 1}, "route": "welcome"}),
            1012,
        ),
        ("SetUserData", json!({"data": {"a": 1}}), 1025),
        (
            "SetUserData",
            json!({"uid": "1-web-x", "data": {"a": 1}}),
            1005,
        ),
        ("SetUserName", json!({"uid": UID, "name": "Al"}), 1022),
        (
            "SetUserName",
            json!({"uid": UID, "name": "x".repeat(51)}),
            1022,
        ),
        ("SetUserName", json!({"uid": UID}), 1022),
        (
            "SetUserName",
            json!({"uid": "1-web-x", "name": "Alice Smith"}),
            1005,
        ),
        (
            "SetUserEmail",
            json!({"uid": UID, "email": "not-an-email"}),
            1024,
        ),
        ("SetUserEmail", json!({"uid": UID, "email": 7}), 1024),
        ("SetUserNotes", json!({"uid": UID, "notes": long}), 1023),
        ("SetUserNotes", json!({"uid": UID}), 1023),
        ("SetUserPhone", json!({"uid": UID}), 1009),
        ("SetUserPhone", json!({"uid": UID, "phone": "+44 12"}), 1007),
        (
            "SetUserPhone",
            json!({"uid": UID, "phone": "not a number"}),
            1006,
        ),
        ("GetUserTags", json!({}), 1025),
        ("SetUserTag", json!({"uid": UID, "tag": "ab"}), 3050),
        ("SetUserTag", json!({"uid": UID, "tag": "Customer"}), 3053),
        (
            "DeleteUserTag",
            json!({"uid": UID, "tag": "Customer"}),
            3053,
        ),
        ("CreateUserTag", json!({"tag": "x".repeat(51)}), 3050),
        (
            "CreateUserTag",
            json!({"tag": "Premium", "color": "gold"}),
            3051,
        ),
        (
            "CreateUserTag",
            json!({"tag": "Premium", "description": "d".repeat(101)}),
            3052,
        ),
        ("CreateBot", json!({"kind": "sms"}), 1008),
        ("CreateBot", json!({"botID": 5, "kind": "fax"}), 1016),
        ("CreateBot", json!({"botID": 3941, "kind": "sms"}), 1016),
        ("UpsertUser", json!({"phone": "+447922029419"}), 1008),
        (
            "UpsertUser",
            json!({"botID": 999, "phone": "+447922029419"}),
            1015,
        ),
        (
            "UpsertUser",
            json!({"botID": 73, "phone": "+447922029419"}),
            1016,
        ),
        ("UpsertUser", json!({"botID": 3941}), 1009),
        (
            "UpsertUser",
            json!({"botID": 3941, "phone": "+447922029419", "email": "x@"}),
            1024,
        ),
        ("DeleteUser", json!({}), 1025),
        ("DeleteUser", json!({"uid": "73-tel-404"}), 1005),
        ("GetUserData", json!({"uid": "73-tel-404"}), 1005),
        ("CreateOrganization", json!({"name": "Acme"}), 1001),
        ("NoSuchCommand", json!({}), 1004),
    ]
}

async fn seeded() -> TestGateway {
    let gw = spawn_gateway().await;
    assert_eq!(gw.seed_user(3941, "+447922029419", "Billy Bob").await, UID);
    let (s, _) = gw
        .cmd("CreateBot", json!({"botID": 73, "kind": "telegram"}))
        .await;
    assert_eq!(s, 200);
    gw
}

#[tokio::test]
async fn every_error_code_over_post() {
    let gw = seeded().await;
    for (cmd, fields, code) in error_cases() {
        let (_, reply) = gw.cmd(cmd, fields.clone()).await;
        assert_eq!(reply["errorCode"], code, "{cmd} {fields}: {reply}");
        assert_eq!(reply["cmd"], cmd);
    }
}

#[tokio::test]
async fn every_error_code_over_websocket() {
    let gw = seeded().await;
    let mut ws = gw.socket().await;
    for (cmd, fields, code) in error_cases() {
        let reply = ws.cmd(cmd, fields.clone()).await;
        assert_eq!(reply["errorCode"], code, "{cmd} {fields}: {reply}");
    }
    // Nothing was changed by a failing command.
    ws.silent_for(100).await;
}

#[tokio::test]
async fn envelope_errors_over_post() {
    let gw = spawn_gateway().await;
    let (s, r) = gw.post_raw("{not json").await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(1017)));
    let (s, r) = gw.post_raw("[1,2]").await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(1017)));
    let (s, r) = gw.post(&json!({"cmd": "GetUsers"})).await;
    assert_eq!((s, r["errorCode"].as_u64()), (401, Some(1000)));
    let (s, r) = gw
        .post(&json!({"cmd": "GetUsers", "token": "0".repeat(40)}))
        .await;
    assert_eq!((s, r["errorCode"].as_u64()), (401, Some(1001)));
    let (s, r) = gw.post(&json!({"token": gw.token})).await;
    assert_eq!((s, r["errorCode"].as_u64()), (400, Some(1004)));
    // Unknown extra fields are ignored.
    let (s, r) = gw
        .cmd("GetUsers", json!({"clientVersion": "9.1", "x": {"y": 1}}))
        .await;
    assert_eq!((s, r["ok"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn get_users_pages_with_cursor_and_filters() {
    let gw = spawn_gateway().await;
    for i in 0..7 {
        gw.seed_user(10, &format!("+4479220294{i:02}"), "Paged User")
            .await;
    }
    gw.seed_user(11, "+447922029500", "Other Bot").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut fields = json!({"botID": 10, "limit": 3});
        if let Some(c) = &cursor {
            fields["cursor"] = json!(c);
        }
        let (_, r) = gw.cmd("GetUsers", fields).await;
        let page = r["data"].as_array().unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|u| u["uid"].as_str().unwrap().to_string()));
        match r.get("nextCursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.iter().all(|u| u.starts_with("10-wa3-")));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "uid order, no duplicates");

    let (_, all) = gw.cmd("GetUsers", json!({})).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 8);
    assert!(all.get("nextCursor").is_none());
    let (_, future) = gw
        .cmd("GetUsers", json!({"CreatedDate": "2999-01-01T00:00:00"}))
        .await;
    assert_eq!(future["data"], json!([]));
    let (_, past) = gw
        .cmd(
            "GetUsers",
            json!({"CreatedDate": "2020-03-01T00:00:00", "botID": "11"}),
        )
        .await;
    assert_eq!(past["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tags_and_data_round_trip() {
    let gw = seeded().await;
    for (tag, color) in [
        ("Customer", "#FF5733"),
        ("VIP", "#FFF"),
        ("newsletter", "#00aa00"),
    ] {
        let (_, r) = gw
            .cmd("CreateUserTag", json!({"tag": tag, "color": color}))
            .await;
        assert_eq!(r["data"], 1);
    }
    let (_, again) = gw.cmd("CreateUserTag", json!({"tag": "customer"})).await;
    assert_eq!(again["data"], 0, "an existing tag is not created twice");
    for tag in ["customer", "VIP", "Newsletter", "VIP"] {
        let (s, _) = gw.cmd("SetUserTag", json!({"uid": UID, "tag": tag})).await;
        assert_eq!(s, 200);
    }
    let (_, tags) = gw.cmd("GetUserTags", json!({"uid": UID})).await;
    assert_eq!(tags["data"], json!(["Customer", "VIP", "newsletter"]));
    gw.cmd("DeleteUserTag", json!({"uid": UID, "tag": "vip"}))
        .await;
    let (_, tags) = gw.cmd("GetUserTags", json!({"uid": UID})).await;
    assert_eq!(tags["data"], json!(["Customer", "newsletter"]));

    gw.cmd(
        "SetUserData",
        json!({"uid": UID, "data": {"a": 1, "b": {"c": 2}}}),
    )
    .await;
    gw.cmd("SetUserData", json!({"uid": UID, "data": {"b": 3}}))
        .await;
    let (_, d) = gw.cmd("GetUserData", json!({"uid": UID})).await;
    assert_eq!(d["data"], json!({"a": 1, "b": 3}));
    gw.cmd(
        "SetUserData",
        json!({"uid": UID, "data": {"z": true}, "overwrite": 1}),
    )
    .await;
    let (_, d) = gw.cmd("GetUserData", json!({"uid": UID})).await;
    assert_eq!(d["data"], json!({"z": true}));
}

#[tokio::test]
async fn tenancy_create_organization_and_reset_token() {
    let gw = spawn_gateway().await;
    let (s, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Acme"}))
        .await;
    assert_eq!(s, 200, "{org}");
    let acme = org["data"]["token"].as_str().unwrap().to_string();
    // The admin token runs nothing else.
    let (s, r) = gw.cmd_as(ADMIN_TOKEN, "GetUsers", json!({})).await;
    assert_eq!((s, r["errorCode"].as_u64()), (401, Some(1001)));
    // Organizations do not see each other's users.
    gw.seed_user(1, "+447922029419", "Default Org").await;
    let (_, r) = gw.cmd_as(&acme, "GetUsers", json!({})).await;
    assert_eq!(r["data"], json!([]));
    let (_, r) = gw
        .cmd_as(&acme, "GetUser", json!({"uid": "1-wa3-447922029419"}))
        .await;
    assert_eq!(r["errorCode"], 1005);

    let mut ws = gw.socket_as(&acme).await;
    let (s, reset) = gw.cmd_as(&acme, "ResetToken", json!({})).await;
    assert_eq!(s, 200);
    let fresh = reset["data"]["token"].as_str().unwrap();
    assert_ne!(fresh, acme);
    let (s, r) = gw.cmd_as(&acme, "GetUsers", json!({})).await;
    assert_eq!(
        (s, r["errorCode"].as_u64()),
        (401, Some(1001)),
        "old token stops at once"
    );
    let (s, _) = gw.cmd_as(fresh, "GetUsers", json!({})).await;
    assert_eq!(s, 200);
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "token reset");
}

#[tokio::test]
async fn create_organization_without_admin_token_configured_is_refused() {
    let gw = spawn_with(|c| c.admin_token = None).await;
    let (s, r) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Acme"}))
        .await;
    assert_eq!((s, r["errorCode"].as_u64()), (401, Some(1001)));
}
