//! Events: onUser* reach every socket of the organization, in seq order,
//! never another organization's; a socket that cannot keep up is closed.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn both_sockets_of_an_org_get_every_event_with_consecutive_seq() {
    let gw = spawn_with(|c| c.max_sockets_per_token = 2).await;
    let (_, org) = gw
        .cmd_as(ADMIN_TOKEN, "CreateOrganization", json!({"name": "Other"}))
        .await;
    let other_token = org["data"]["token"].as_str().unwrap().to_string();
    let mut a = gw.socket().await;
    let mut b = gw.socket().await;
    let mut other = gw.socket_as(&other_token).await;

    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    gw.cmd(
        "SetUserEmail",
        json!({"uid": uid, "email": "billy@example.com"}),
    )
    .await;
    // Setting the same value again changes nothing and emits nothing.
    gw.cmd(
        "SetUserEmail",
        json!({"uid": uid, "email": "billy@example.com"}),
    )
    .await;
    gw.cmd("DeleteUser", json!({"uid": uid})).await;

    for ws in [&mut a, &mut b] {
        let created = ws.event().await;
        assert_eq!(created["cmd"], "onUserCreate");
        assert_eq!(created["data"]["uid"], uid.as_str());
        assert_eq!(created["data"]["name"], "Billy Bob");
        let updated = ws.event().await;
        assert_eq!(updated["cmd"], "onUserUpdate");
        assert_eq!(
            updated["data"]["update"],
            json!({"email": "billy@example.com"})
        );
        assert_eq!(updated["data"]["user"]["email"], "billy@example.com");
        let deleted = ws.event().await;
        assert_eq!(deleted["cmd"], "onUserDelete");
        assert_eq!(deleted["uid"], uid.as_str());
        let seqs: Vec<u64> = [&created, &updated, &deleted]
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs[1], seqs[0] + 1);
        assert_eq!(seqs[2], seqs[1] + 1);
        let ids: std::collections::HashSet<_> = [&created, &updated, &deleted]
            .iter()
            .map(|e| e["eventId"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 3);
    }
    other.silent_for(200).await;
    a.silent_for(50).await;
}

#[tokio::test]
async fn a_command_on_the_socket_gets_its_reply_and_its_event() {
    let gw = spawn_gateway().await;
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let mut ws = gw.socket().await;
    let r = ws
        .cmd(
            "SetUserName",
            json!({"uid": uid, "name": "John Ronald Doe"}),
        )
        .await;
    assert_eq!(r, json!({"cmd": "SetUserName", "ok": 1}));
    let ev = ws.event().await;
    assert_eq!(
        ev["data"]["update"],
        json!({"name": "John Ronald Doe", "first_name": "John", "last_name": "Ronald Doe"})
    );
    // CreateBot emits nothing; the user's creation was seq 1.
    assert_eq!(ev["seq"], 2);
}

#[tokio::test]
async fn a_socket_that_falls_behind_is_closed_with_4001() {
    let gw = spawn_with(|c| c.socket_queue = 1).await;
    let uid = gw.seed_user(3941, "+447922029419", "Billy Bob").await;
    let mut slow = gw.socket().await;
    // Many concurrent writes share flushes: each flush publishes a burst of
    // events faster than a one-event queue can hold.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = gw.http.clone();
        let url = gw.api_url();
        let body = json!({"token": gw.token, "cmd": "SetUserNotes", "uid": uid, "notes": format!("note {i}")});
        tasks.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let frame = slow.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4001);
}
