//! The message lifecycle: what sends and provider webhooks mean for users,
//! messages, acks and delivery callbacks.
//!
//! # Acks (reference, "Message Acknowledgement Codes")
//! 0 at the server, 1 sent, 2 delivered, 3 read, 10 replied (templates),
//! -1 failed, -2 not on WhatsApp. An ack only moves forward along
//! 0 → 1 → 2 → 3 → 10; a failure is accepted only before delivery (0 or 1)
//! and is final. So a late `delivered` after `read`, or a duplicate status,
//! changes nothing and calls back nothing.
//!
//! # Invariants
//! - An outbound message is stored (ack 0) before the provider is called,
//!   and its `mid` travels as the send's `biz_opaque_callback_data`: statuses
//!   find it even when a crash lost the provider's id.
//! - Every ack change and the callback it causes are one atomic write.
//! - An inbound message is recognised by its provider id: a redelivery has
//!   no second effect.

use crate::channel::whatsapp::{self, ack_of_status, Creds, GraphError, Notification};
use crate::cmd::{changed_fields, on_user_create, on_user_update};
use crate::domain::{make_uid, split_name, BotKind, E164};
use crate::error::{ApiError, ErrorCode};
use crate::model::{
    Bot, CallbackJob, CallbackSpec, IdempotentReply, Message, Org, Sealed, Sender, TemplateCache,
    User, UserRecord,
};
use crate::reply::Reply;
use crate::store::{StoreError, WriteTx};
use crate::webhook::{iso_of_ms, now_ms};
use crate::Ctx;
use rand::RngCore;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A new message id: 24 hex characters, like the reference's `mid`s
/// (4 bytes of Unix seconds, then 8 random bytes).
pub fn new_mid() -> String {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&(chrono::Utc::now().timestamp() as u32).to_be_bytes());
    rand::rngs::OsRng.fill_bytes(&mut b[4..]);
    hex::encode(b)
}

fn rank(ack: i8) -> i8 {
    match ack {
        10 => 4,
        a => a,
    }
}

/// Whether a message at ack `from` moves to `to` (see the module docs).
pub fn ack_advances(from: i8, to: i8) -> bool {
    match (from, to) {
        (f, _) if f < 0 => false,
        (f, t) if t < 0 => f < 2,
        (f, t) => rank(t) > rank(f),
    }
}

fn ms_of_iso(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// Moves `msg` to `ack` if that advances it, staging the message and, when
/// the send asked for one, its callback. Returns whether it changed.
fn set_ack(
    tx: &mut WriteTx<'_>,
    org: &str,
    msg: &mut Message,
    ack: i8,
    error: Option<(i64, String)>,
    at_ms: i64,
) -> bool {
    if !ack_advances(msg.ack, ack) {
        return false;
    }
    msg.ack = ack;
    if let Some((code, desc)) = error {
        msg.whatsapp_error_code = Some(code);
        msg.whatsapp_error_desc = Some(desc);
    }
    tx.put_message(msg, ms_of_iso(&msg.dt));
    if let Some(cb) = &msg.callback {
        let mut body = json!({
            "ok": 1,
            "mid": msg.mid,
            "uid": msg.uid,
            "botID": msg.bot_id,
            "ack": ack,
            "timestamp": iso_of_ms(at_ms),
            "webhookPayload": cb.payload.clone().unwrap_or(Value::Null),
        });
        if let (Some(code), Some(desc)) = (msg.whatsapp_error_code, &msg.whatsapp_error_desc) {
            body["whatsappErrorCode"] = code.into();
            body["whatsappErrorDesc"] = desc.clone().into();
        }
        tx.queue_callback(
            &CallbackJob {
                org: org.to_string(),
                mid: msg.mid.clone(),
                url: cb.url.clone(),
                headers: cb.headers.clone(),
                body: body.to_string(),
                attempts: 0,
                queued_ms: now_ms(),
                last_error: None,
            },
            now_ms(),
        );
    }
    true
}

/// A new user of `bot` reached at `phone`.
fn new_user(bot: &Bot, uid: &str, phone: &str, name: &str) -> UserRecord {
    let (first, last) = split_name(name);
    UserRecord {
        user: User {
            uid: uid.to_string(),
            name: name.to_string(),
            first_name: first,
            last_name: last,
            email: String::new(),
            phone: phone.to_string(),
            bot: bot.kind.display().to_string(),
            bot_id: bot.id,
            lang: String::new(),
            created: crate::domain::now_iso(),
            notes: String::new(),
            url: String::new(),
        },
        tags: Vec::new(),
    }
}

/// The Graph API settings of `bot`, opened. Errors: 1016 when the bot is
/// not a WhatsApp bot or has no access token.
pub fn creds(ctx: &Ctx, bot: &Bot) -> Result<Creds, ApiError> {
    let wrong = |m: String| ApiError::new(ErrorCode::WrongBotKind, m);
    if bot.kind != BotKind::Whatsapp {
        return Err(wrong(format!(
            "bot {} is {}: this command needs a whatsapp bot",
            bot.id,
            bot.kind.as_str()
        )));
    }
    let w = bot.whatsapp.as_ref();
    let (Some(w), Some(token)) = (w, w.and_then(|w| w.access_token.as_ref())) else {
        return Err(wrong(format!(
            "whatsapp bot {} has no Cloud API credentials (UpdateBot phone_number_id, waba_id, access_token)",
            bot.id
        )));
    };
    let token = ctx.sealer.open(&token.0).map_err(|e| {
        tracing::error!(bot = bot.id, error = %e, "cannot open a bot's access token");
        ApiError::internal()
    })?;
    Ok(Creds {
        base: w
            .graph_base_url
            .clone()
            .unwrap_or_else(|| ctx.config.graph_base_url.clone()),
        phone_number_id: w.phone_number_id.clone(),
        waba_id: w.waba_id.clone(),
        token,
    })
}

/// The reply for a Graph API failure: 3002 with `whatsappErrorCode` and
/// `whatsappErrorDesc`, or 2003 when the Graph API did not answer.
pub fn graph_error(e: &GraphError) -> ApiError {
    match e {
        GraphError::Api { code, desc, .. } => {
            ApiError::new(ErrorCode::WhatsAppError, "WhatsApp error")
                .with_field("whatsappErrorCode", *code)
                .with_field("whatsappErrorDesc", desc.clone())
        }
        GraphError::Unreachable(why) => ApiError::new(
            ErrorCode::Timeout,
            format!("the WhatsApp Cloud API did not answer: {why}"),
        ),
    }
}

/// An outbound message to send.
#[derive(Debug)]
pub struct Outbound {
    /// The recipient's uid.
    pub uid: String,
    /// The recipient's number (a new user is created with it).
    pub phone: String,
    /// `typ` of the conversation row.
    pub typ: String,
    /// Text of the conversation row.
    pub msg: String,
    /// Template name and language, for template sends.
    pub template: Option<(String, String)>,
    /// The Graph API request body (`messaging_product`, `to`, `type`, …).
    pub body: Value,
    /// Delivery callback of the send.
    pub callback: Option<CallbackSpec>,
    /// Agent the chat is assigned to.
    pub agent_email: Option<String>,
    /// The send's idempotency key, if any.
    pub idem: Option<Idempotency>,
    /// The command name, for replies.
    pub cmd: &'static str,
}

/// An idempotency key of a send: the key and the hash of the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Hex SHA-256 of the request's fields.
    pub request_sha256: String,
}

/// Sends `out` through `bot`: stores the message at ack 0 (creating the
/// user, `onUserCreate`, when new), calls the Graph API (transient failures
/// retried), and records the provider id or the failure (ack -1/-2, with
/// its callback). `ok_reply(mid)` is the reply on success; under an
/// idempotency key it is stored with the message, so a retry after a crash
/// replays it rather than sending twice.
pub async fn send(
    ctx: &Ctx,
    org: &Org,
    bot: &Bot,
    creds: &Creds,
    mut out: Outbound,
    ok_reply: impl Fn(&str) -> Reply,
) -> Result<Reply, ApiError> {
    let idem = out.idem.take();
    let idem = idem.as_ref();
    let cmd = out.cmd;
    let mid = new_mid();
    let now = now_ms();
    let reply = ok_reply(&mid);
    let msg = Message {
        mid: mid.clone(),
        uid: out.uid.clone(),
        bot_id: bot.id,
        sender: if out.agent_email.is_some() {
            Sender::Agent
        } else {
            Sender::System
        },
        typ: out.typ.clone(),
        msg: out.msg.clone(),
        media_id: None,
        dt: iso_of_ms(now),
        ack: 0,
        wamid: None,
        template: out.template.clone(),
        whatsapp_error_code: None,
        whatsapp_error_desc: None,
        callback: out.callback.take(),
        agent_email: out.agent_email.clone(),
    };
    ctx.store
        .write(&org.id, |tx| {
            if tx.store().user(&org.id, &out.uid)?.is_none() {
                let rec = new_user(bot, &out.uid, &out.phone, "");
                tx.put_user(&rec);
                tx.emit(on_user_create(&rec.user))?;
            }
            tx.put_message(&msg, now);
            if msg.template.is_some() {
                let mut st = tx.store().wa_state(&org.id, &out.uid)?;
                st.last_template_mid = Some(mid.clone());
                tx.put_wa_state(&out.uid, &st);
            }
            if let Some(i) = idem {
                tx.put_idempotent(
                    &i.key,
                    &IdempotentReply {
                        request_sha256: i.request_sha256.clone(),
                        reply: String::from_utf8_lossy(&reply.to_json()).into_owned(),
                        created_ms: now,
                    },
                );
            }
            Ok::<_, ApiError>(())
        })
        .await?;
    out.body["biz_opaque_callback_data"] = Value::String(mid.clone());
    let result = ctx.graph.send(creds, &out.body).await;
    let failure = ctx
        .store
        .write(&org.id, |tx| {
            let Some(mut m) = tx.store().message(&org.id, &mid)? else {
                return Ok::<_, ApiError>(None);
            };
            match &result {
                Ok(wamid) => {
                    m.wamid = Some(wamid.clone());
                    tx.put_message(&m, now);
                    Ok(None)
                }
                Err(e) => {
                    let err = graph_error(e);
                    if let GraphError::Api { code, desc, .. } = e {
                        let ack = if whatsapp::not_on_whatsapp(*code) {
                            -2
                        } else {
                            -1
                        };
                        set_ack(
                            tx,
                            &org.id,
                            &mut m,
                            ack,
                            Some((*code, desc.clone())),
                            now_ms(),
                        );
                    }
                    if let Some(i) = idem {
                        match e {
                            // No answer: the send may be retried under the same key.
                            GraphError::Unreachable(_) => tx.forget_idempotent(&i.key),
                            GraphError::Api { .. } => tx.put_idempotent(
                                &i.key,
                                &IdempotentReply {
                                    request_sha256: i.request_sha256.clone(),
                                    reply: String::from_utf8_lossy(
                                        &Reply::error(cmd, &err).to_json(),
                                    )
                                    .into_owned(),
                                    created_ms: now,
                                },
                            ),
                        }
                    }
                    Ok(Some(err))
                }
            }
        })
        .await?;
    ctx.callbacks.wake();
    match failure {
        Some(e) => Err(e),
        None => Ok(reply),
    }
}

/// What a webhook POST changed, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// New inbound messages stored.
    pub messages: usize,
    /// Inbound messages already known (redeliveries).
    pub duplicates: usize,
    /// Ack changes made.
    pub acks: usize,
    /// Statuses about unknown messages or without effect.
    pub ignored: usize,
}

/// Applies a Cloud API `messages` webhook to the organization of `bot`, in
/// one durable write: new users (`onUserCreate`), inbound messages (the
/// customer-service window opens; a reply moves its template to ack 10),
/// and statuses (acks forward only, with callbacks).
pub async fn apply_notification(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    n: &Notification,
) -> Result<Applied, StoreError> {
    let applied = ctx
        .store
        .write(org, |tx| {
            let mut a = Applied::default();
            // Staged state, so that one payload may touch a message twice.
            let mut msgs: HashMap<String, Message> = HashMap::new();
            let mut seen: std::collections::HashSet<String> = Default::default();
            let mut users: std::collections::HashSet<String> = Default::default();
            let load = |tx: &WriteTx<'_>,
                        msgs: &mut HashMap<String, Message>,
                        mid: &str|
             -> Result<Option<Message>, StoreError> {
                if let Some(m) = msgs.get(mid) {
                    return Ok(Some(m.clone()));
                }
                tx.store().message(org, mid)
            };
            for change in n.entry.iter().flat_map(|e| &e.changes) {
                if !change.field.is_empty() && change.field != "messages" {
                    continue;
                }
                let v = &change.value;
                for m in &v.messages {
                    if !seen.insert(m.id.clone()) || tx.store().mid_of_wamid(org, &m.id)?.is_some()
                    {
                        a.duplicates += 1;
                        continue;
                    }
                    let uid = make_uid(bot.id, BotKind::Whatsapp, &m.from);
                    let name = v
                        .contacts
                        .iter()
                        .find(|c| c.wa_id == m.from)
                        .and_then(|c| c.profile.as_ref())
                        .map(|p| p.name.trim().to_string())
                        .unwrap_or_default();
                    if !users.contains(&uid) {
                        match tx.store().user(org, &uid)? {
                            None => {
                                let phone = E164::parse(&m.from)
                                    .map(|p| p.as_str().to_string())
                                    .unwrap_or_else(|_| format!("+{}", m.from));
                                let rec = new_user(bot, &uid, &phone, &name);
                                tx.put_user(&rec);
                                tx.emit(on_user_create(&rec.user))?;
                            }
                            // A user first reached by a send has no name yet:
                            // the profile name fills it (onUserUpdate).
                            Some(mut rec) if rec.user.name.is_empty() && !name.is_empty() => {
                                let before = rec.user.clone();
                                let named = new_user(bot, &uid, &rec.user.phone, &name).user;
                                rec.user.name = named.name;
                                rec.user.first_name = named.first_name;
                                rec.user.last_name = named.last_name;
                                let update = changed_fields(&before, &rec.user);
                                tx.put_user(&rec);
                                tx.emit(on_user_update(&rec.user, update))?;
                            }
                            Some(_) => {}
                        }
                    }
                    users.insert(uid.clone());
                    let at_ms = m
                        .timestamp
                        .parse::<i64>()
                        .map(|s| s * 1000)
                        .unwrap_or_else(|_| now_ms());
                    let (typ, text, media_id) = m.content();
                    let msg = Message {
                        mid: new_mid(),
                        uid: uid.clone(),
                        bot_id: bot.id,
                        sender: Sender::Client,
                        typ,
                        msg: text,
                        media_id,
                        dt: iso_of_ms(at_ms),
                        ack: 0,
                        wamid: Some(m.id.clone()),
                        template: None,
                        whatsapp_error_code: None,
                        whatsapp_error_desc: None,
                        callback: None,
                        agent_email: None,
                    };
                    tx.put_message(&msg, at_ms);
                    a.messages += 1;
                    let mut st = tx.store().wa_state(org, &uid)?;
                    st.last_inbound_ms = Some(st.last_inbound_ms.unwrap_or(0).max(at_ms));
                    // A reply: to the message it quotes, else to the last template.
                    let replied = match m.context.as_ref().and_then(|c| c.id.as_deref()) {
                        Some(w) => tx.store().mid_of_wamid(org, w)?,
                        None => st.last_template_mid.clone(),
                    };
                    tx.put_wa_state(&uid, &st);
                    if let Some(mid) = replied {
                        if let Some(mut t) = load(tx, &mut msgs, &mid)? {
                            if t.template.is_some() && set_ack(tx, org, &mut t, 10, None, at_ms) {
                                a.acks += 1;
                                msgs.insert(mid, t);
                            }
                        }
                    }
                }
                for s in &v.statuses {
                    let Some(ack) = ack_of_status(&s.status) else {
                        a.ignored += 1;
                        continue;
                    };
                    let by_opaque = match s.biz_opaque_callback_data.as_deref() {
                        Some(mid) => load(tx, &mut msgs, mid)?.filter(|m| m.bot_id == bot.id),
                        None => None,
                    };
                    let found = match by_opaque {
                        Some(m) => Some(m),
                        None => match tx.store().mid_of_wamid(org, &s.id)? {
                            Some(mid) => load(tx, &mut msgs, &mid)?,
                            None => None,
                        },
                    };
                    let Some(mut msg) = found else {
                        tracing::debug!(wamid = %s.id, "status of an unknown message");
                        a.ignored += 1;
                        continue;
                    };
                    if msg.wamid.is_none() {
                        msg.wamid = Some(s.id.clone());
                        tx.put_message(&msg, ms_of_iso(&msg.dt));
                    }
                    let at_ms = s
                        .timestamp
                        .parse::<i64>()
                        .map(|t| t * 1000)
                        .unwrap_or_else(|_| now_ms());
                    let error = s.errors.first().map(|e| (e.code, e.desc()));
                    let ack = match &error {
                        Some((code, _)) if ack < 0 && whatsapp::not_on_whatsapp(*code) => -2,
                        _ => ack,
                    };
                    if set_ack(tx, org, &mut msg, ack, error, at_ms) {
                        a.acks += 1;
                    } else {
                        a.ignored += 1;
                    }
                    msgs.insert(msg.mid.clone(), msg);
                }
            }
            Ok::<_, StoreError>(a)
        })
        .await?;
    if applied.acks > 0 {
        ctx.callbacks.wake();
    }
    Ok(applied)
}

/// Shortest time between two syncs of one bot's templates caused by a
/// cache miss (periodic syncs are `template_refresh` apart).
pub const TEMPLATE_MISS_RESYNC_MS: i64 = 1000;

/// Syncs the template cache of `bot` from the Graph API (all pages).
/// Errors: 3002/2003 when the Graph API refuses or does not answer.
pub async fn sync_templates(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    creds: &Creds,
) -> Result<TemplateCache, ApiError> {
    let templates = ctx
        .graph
        .templates(creds)
        .await
        .map_err(|e| graph_error(&e))?;
    let cache = TemplateCache {
        synced_ms: now_ms(),
        templates,
    };
    ctx.store.put_templates(org, bot.id, &cache)?;
    Ok(cache)
}

fn template_matches(t: &Value, name: &str, language: &str) -> bool {
    t.get("name").and_then(Value::as_str) == Some(name)
        && t.get("language")
            .and_then(Value::as_str)
            .is_some_and(|l| l.eq_ignore_ascii_case(language))
}

/// The cached template `name` in `language` of `bot`, syncing the cache
/// when it is empty or misses (at most once a second per bot). Errors:
/// 3000 the bot has no templates, 3001 none with this name and language,
/// 3002/2003 the sync failed.
pub async fn find_template(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    creds: &Creds,
    name: &str,
    language: &str,
) -> Result<Value, ApiError> {
    let mut cache = match ctx.store.templates(org, bot.id)? {
        Some(c) => c,
        None => sync_templates(ctx, org, bot, creds).await?,
    };
    let found = |c: &TemplateCache| {
        c.templates
            .iter()
            .find(|t| template_matches(t, name, language))
            .cloned()
    };
    if found(&cache).is_none() && now_ms() - cache.synced_ms >= TEMPLATE_MISS_RESYNC_MS {
        cache = sync_templates(ctx, org, bot, creds).await?;
    }
    if cache.templates.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NoTemplates,
            format!("no WhatsApp templates exist for bot {}", bot.id),
        ));
    }
    found(&cache).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTemplate,
            format!("no WhatsApp template {name:?} in language {language:?}"),
        )
    })
}

/// The body text of `template` with `parameters` filled in: `{{1}}` … by
/// position, `{{name}}` by `parameter_name` (Meta's positional and named
/// parameter formats).
pub fn render_template(template: &Value, parameters: &[Value]) -> String {
    let body = template
        .get("components")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case("body"))
            })
        })
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = body.to_string();
    for (i, p) in parameters.iter().enumerate() {
        let Some(text) = p.get("text").and_then(Value::as_str) else {
            continue;
        };
        out = out.replace(&format!("{{{{{}}}}}", i + 1), text);
        if let Some(n) = p.get("parameter_name").and_then(Value::as_str) {
            out = out.replace(&format!("{{{{{n}}}}}"), text);
        }
    }
    out
}

/// Runs the channel housekeeping on `tracker` until `shutdown`, once a
/// minute (or every `template_refresh` when shorter): syncs the templates of
/// WhatsApp bots whose cache is older than `template_refresh`, drops
/// idempotency records older than 24 hours, and shrinks the rate limiters.
pub fn spawn_maintenance(
    ctx: Ctx,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let period = std::time::Duration::from_secs_f64(ctx.config.template_refresh.min(60.0));
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let refresh_ms = (ctx.config.template_refresh * 1000.0) as i64;
            match ctx.store.whatsapp_bots() {
                Ok(bots) => {
                    for (org, bot) in bots {
                        let Ok(creds) = creds(&ctx, &bot) else { continue };
                        let stale = ctx
                            .store
                            .templates(&org, bot.id)
                            .ok()
                            .flatten()
                            .is_none_or(|c| now_ms() - c.synced_ms >= refresh_ms);
                        if stale {
                            if let Err(e) = sync_templates(&ctx, &org, &bot, &creds).await {
                                tracing::warn!(bot = bot.id, error = %e.message, "template sync failed");
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "listing WhatsApp bots failed"),
            }
            if let Err(e) = ctx
                .store
                .expire_idempotent(now_ms() - crate::cmd::IDEMPOTENCY_TTL_MS)
            {
                tracing::error!(error = %e, "expiring idempotency keys failed");
            }
            ctx.shrink_limiters();
        }
    });
}

/// Seals `webhookHeaders` pairs for storage.
pub fn seal_headers(ctx: &Ctx, headers: &[(String, String)]) -> Sealed {
    Sealed(
        ctx.sealer
            .seal(&serde_json::to_string(headers).expect("header pairs serialise")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_only_move_forward() {
        assert!(ack_advances(0, 1));
        assert!(ack_advances(1, 3));
        assert!(ack_advances(3, 10));
        assert!(!ack_advances(3, 2), "late delivered after read");
        assert!(!ack_advances(2, 2), "duplicate");
        assert!(ack_advances(1, -1));
        assert!(!ack_advances(2, -1), "failure after delivery");
        assert!(!ack_advances(-1, 3), "failure is final");
        assert!(!ack_advances(10, 3));
    }

    #[test]
    fn templates_render_positional_and_named_parameters() {
        let t = json!({"components":[{"type":"HEADER","text":"x"},
            {"type":"BODY","text":"Hi {{1}}, order {{2}} ({{ref}})"}]});
        let p = [
            json!({"type":"text","text":"David"}),
            json!({"type":"text","text":"ORD-1"}),
            json!({"type":"text","text":"r9","parameter_name":"ref"}),
        ];
        assert_eq!(render_template(&t, &p), "Hi David, order ORD-1 (r9)");
    }

    #[test]
    fn mids_are_24_hex() {
        let m = new_mid();
        assert_eq!(m.len(), 24);
        assert!(m.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(m, new_mid());
    }
}
