//! The message lifecycle: what sends and provider webhooks mean for users,
//! messages, acks and delivery callbacks, for every channel alike.
//!
//! # Acks (reference, "Message Acknowledgement Codes")
//! 0 at the server, 1 sent, 2 delivered, 3 read, 10 replied (templates),
//! -1 failed, -2 not on the channel. An ack only moves forward along
//! 0 → 1 → 2 → 3 → 10; a failure is accepted only before delivery (0 or 1)
//! and is final. So a late `delivered` after `read`, or a duplicate status,
//! changes nothing and calls back nothing.
//!
//! # Invariants
//! - An outbound message is stored (ack 0) before the provider is called,
//!   and its `mid` travels with the send as the channel's reference:
//!   statuses find it even when a crash lost the provider's id.
//! - Every ack change and the callback it causes are one atomic write.
//! - An inbound message is recognised by its provider id: a redelivery has
//!   no second effect.
//! - Provider errors are stored neutrally and named after the channel only
//!   in replies and callbacks ([`Channel::error_fields`]).

pub mod templates;

use crate::channel::{
    Channel, Content, Inbound, Profile, Recipient, Refusal, SendError, Settings, StatusUpdate,
};
use crate::ctx::Ctx;
use crate::domain::make_uid;
use crate::error::{ApiError, ErrorCode};
use crate::events::{
    changed_fields, on_user_create, on_user_disable, on_user_enable, on_user_update,
};
use crate::idempotency::Key;
use crate::model::{
    new_mid, Bot, CallbackJob, CallbackSpec, IdempotentReply, Message, Org, Sealed, Sender,
};
use crate::reply::Reply;
use crate::store::{StoreError, WriteTx};
use crate::time::{iso_of_ms, ms_of_iso, now_ms};
use crate::users::new_user;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

fn rank(ack: i8) -> i8 {
    match ack {
        10 => 4,
        a => a,
    }
}

/// Whether the bot of `settings` is over its channel's per-bot rate
/// ([`crate::channel::Channel::per_bot_rate`]) across the cluster (only with
/// a shared store; one node's own budget is the channel's to check).
fn flooded(
    ctx: &Ctx,
    org: &str,
    settings: &crate::channel::Settings,
    channel: &dyn crate::channel::Channel,
) -> bool {
    let per_second = channel.per_bot_rate();
    let key = format!("bot/{}/{}", crate::model::live_id(org), settings.bot_id());
    per_second > 0 && matches!(ctx.shared_rate(&key, per_second), Some(Err(_)))
}

/// Whether a message at ack `from` moves to `to` (see the module docs).
pub fn ack_advances(from: i8, to: i8) -> bool {
    match (from, to) {
        (f, _) if f < 0 => false,
        (f, t) if t < 0 => f < 2,
        (f, t) => rank(t) > rank(f),
    }
}

/// Moves `msg` to `ack` if that advances it, staging the message and, when
/// the send asked for one, its callback (the provider error named by
/// `error_fields`). Returns whether it changed.
fn set_ack(
    tx: &mut WriteTx<'_>,
    org: &str,
    msg: &mut Message,
    ack: i8,
    error: Option<(i64, String)>,
    at_ms: i64,
    error_fields: (&str, &str),
) -> bool {
    if !ack_advances(msg.ack, ack) {
        return false;
    }
    msg.ack = ack;
    if let Some((code, desc)) = error {
        msg.error_code = Some(code);
        msg.error_desc = Some(desc);
    }
    tx.put_message(msg, ms_of_iso(&msg.dt));
    if let Err(e) = crate::conversations::emit_message(tx, org, msg) {
        tracing::error!(error = %e, "staging onMessage failed");
    }
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
        if let (Some(code), Some(desc)) = (msg.error_code, &msg.error_desc) {
            body[error_fields.0] = code.into();
            body[error_fields.1] = desc.clone().into();
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

/// 2006: the user opted out of (or blocked) this channel's messages.
pub fn unsubscribed(uid: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unsubscribed,
        format!("user {uid} has been unsubscribed from automatic content"),
    )
}

/// The reply for a failed send: 2006 for a recipient who opted out, the
/// channel's error for another refusal, 2003 when the provider did not
/// answer.
pub fn send_error(channel: &dyn Channel, uid: &str, e: &SendError) -> ApiError {
    match e {
        SendError::Rejected {
            refusal: Refusal::Unsubscribed,
            ..
        } => unsubscribed(uid),
        SendError::Rejected {
            refusal: Refusal::Busy,
            desc,
            ..
        } => ApiError::new(
            ErrorCode::ProviderBusy,
            format!(
                "{} is too busy to send more messages: {desc}",
                channel.provider()
            ),
        ),
        SendError::Rejected { code, desc, .. } => channel.rejected(*code, desc),
        SendError::Unreachable(why) => ApiError::new(
            ErrorCode::Timeout,
            format!("{} did not answer: {why}", channel.provider()),
        ),
    }
}

/// An outbound message to send.
#[derive(Debug)]
pub struct Outbound {
    /// The recipient's uid.
    pub uid: String,
    /// Where the channel delivers it.
    pub to: Recipient,
    /// `typ` of the conversation row.
    pub typ: String,
    /// Text of the conversation row.
    pub msg: String,
    /// What the channel sends.
    pub content: Content,
    /// Delivery callback of the send.
    pub callback: Option<CallbackSpec>,
    /// Agent the chat is assigned to.
    pub agent_email: Option<String>,
    /// The send's idempotency key, if any.
    pub idem: Option<Key>,
    /// The command name, for replies.
    pub cmd: &'static str,
}

/// Sends `out` through `bot`'s `channel`: stores the message at ack 0
/// (creating the user, `onUserCreate`, when new; 2006 and nothing stored
/// when the user is disabled), calls the provider (transient failures
/// retried by the channel), and records the provider id or the failure
/// (ack -1/-2, with its callback; a recipient who opted out is disabled,
/// `onUserDisable`, and the reply is 2006); with a callback, 1017 and nothing
/// stored when the organization has `max_pending_callbacks_per_org` queued.
/// `ok_reply(mid)` is the
/// reply on success; under an idempotency key it is stored with the message,
/// so a retry after a crash replays it rather than sending twice.
pub async fn send(
    ctx: &Ctx,
    org: &Org,
    bot: &Bot,
    (channel, settings): (&dyn Channel, &Settings),
    mut out: Outbound,
    ok_reply: impl Fn(&str) -> Reply,
) -> Result<Reply, ApiError> {
    let max = ctx.config.max_pending_callbacks_per_org;
    if out.callback.is_some() && ctx.store.pending_callbacks(&org.id) >= max {
        return Err(ApiError::over_cap(
            "queued delivery callbacks",
            max,
            "max_pending_callbacks_per_org",
        ));
    }
    let idem = out.idem.take();
    let idem = idem.as_ref();
    let cmd = out.cmd;
    let mid = new_mid();
    let now = now_ms();
    let reply = ok_reply(&mid);
    let template = match &out.content {
        Content::Template { name, language, .. } => Some((name.clone(), language.clone())),
        Content::Text { .. } => None,
    };
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
        provider_id: None,
        template,
        error_code: None,
        error_desc: None,
        callback: out.callback.take(),
        agent_email: out.agent_email.clone(),
        cid: None,
    };
    ctx.store
        .write(&org.id, |tx| {
            tx.track_users();
            match tx.store().user(&org.id, &out.uid)? {
                Some(rec) if rec.user.disabled => return Err(unsubscribed(&out.uid)),
                Some(_) => {}
                None => {
                    let phone = out.to.phone.as_ref().map_or("", |p| p.as_str());
                    let mut rec = new_user(bot, &out.uid, phone, "");
                    tx.put_new_user(&mut rec);
                    tx.emit(on_user_create(&rec.user))?;
                }
            }
            let mut msg = msg.clone();
            crate::conversations::Staged::default().attach(tx, &org.id, &mut msg, now)?;
            tx.put_message(&msg, now);
            if channel.keeps_state() {
                let before = tx.store().channel_state(&org.id, &out.uid)?;
                let mut state = before.clone();
                channel.note_send(&mut state, &mid, &out.content);
                if state != before {
                    tx.put_channel_state(&out.uid, &state);
                }
            }
            if let Some(i) = idem {
                tx.put_idempotent(
                    &i.key,
                    &IdempotentReply {
                        request_sha256: i.request_sha256.clone(),
                        reply: reply.to_json(),
                        created_ms: now,
                    },
                );
            }
            Ok::<_, ApiError>(())
        })
        .await?;
    let result = if org.sandbox {
        // A test key: no provider is ever called (issue 20).
        if crate::channel::sandbox_fails(&out.to) {
            Err(channel.sandbox_refusal())
        } else {
            Ok(channel.sandbox_id(&out.to, &mid))
        }
    } else if flooded(ctx, &org.id, settings, channel) {
        Err(crate::channel::SendError::Rejected {
            code: 429,
            desc: format!("{} (cluster-wide)", crate::channel::telegram::FLOODED),
            refusal: crate::channel::Refusal::Busy,
        })
    } else {
        channel.send(settings, &out.to, &out.content, &mid).await
    };
    let failure = ctx
        .store
        .write(&org.id, |tx| {
            let Some(mut m) = tx.store().message(&org.id, &mid)? else {
                return Ok::<_, ApiError>(None);
            };
            match &result {
                Ok(provider_id) => {
                    m.provider_id = Some(provider_id.clone());
                    tx.put_message(&m, now);
                    let ack = channel.ack_on_accept();
                    if ack != 0 {
                        set_ack(
                            tx,
                            &org.id,
                            &mut m,
                            ack,
                            None,
                            now_ms(),
                            channel.error_fields(),
                        );
                    }
                    Ok(None)
                }
                Err(e) => {
                    let err = send_error(channel, &out.uid, e);
                    if let SendError::Rejected {
                        code,
                        desc,
                        refusal,
                    } = e
                    {
                        let ack = if *refusal == Refusal::RecipientGone {
                            -2
                        } else {
                            -1
                        };
                        let error = Some((*code, desc.clone()));
                        let fields = channel.error_fields();
                        set_ack(tx, &org.id, &mut m, ack, error, now_ms(), fields);
                        if *refusal == Refusal::Unsubscribed {
                            set_disabled(tx, &org.id, &out.uid, true)?;
                        }
                    }
                    if let Some(i) = idem {
                        match e {
                            // No answer, or too busy: the send may be
                            // retried under the same key.
                            SendError::Unreachable(_)
                            | SendError::Rejected {
                                refusal: Refusal::Busy,
                                ..
                            } => tx.forget_idempotent(&i.key),
                            SendError::Rejected { .. } => tx.put_idempotent(
                                &i.key,
                                &IdempotentReply {
                                    request_sha256: i.request_sha256.clone(),
                                    reply: Reply::error(cmd, &err).to_json(),
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
    if let (true, Ok(provider_id)) = (org.sandbox, &result) {
        simulate_acks(ctx, &org.id, bot, provider_id, &mid);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(reply),
    }
}

/// Sandbox: moves a simulated send through its channel's acks
/// ([`Channel::sandbox_acks`]) at `sandbox_ack_delays` seconds after now,
/// each as a provider status through [`apply_inbound`], so events, acks
/// and callbacks are exactly as live. Not durable: a restart ends the
/// simulation of messages in flight.
fn simulate_acks(ctx: &Ctx, org: &str, bot: &Bot, provider_id: &str, mid: &str) {
    let Some(channel) = ctx.channels.get(bot.kind).cloned() else {
        return;
    };
    let steps: Vec<(i8, f64)> = channel
        .sandbox_acks()
        .iter()
        .copied()
        .zip(ctx.config.sandbox_ack_delays.iter().copied())
        .collect();
    if steps.is_empty() {
        return;
    }
    let (ctx, org, bot) = (ctx.clone(), org.to_string(), bot.clone());
    let (provider_id, mid) = (provider_id.to_string(), mid.to_string());
    let start = tokio::time::Instant::now();
    ctx.tasks.clone().spawn(async move {
        for (ack, secs) in steps {
            tokio::select! {
                _ = tokio::time::sleep_until(start + crate::config::Config::secs(secs)) => {}
                _ = ctx.shutdown.cancelled() => return,
            }
            let status = Inbound::Status(StatusUpdate {
                provider_id: provider_id.clone(),
                reference: Some(mid.clone()),
                ack,
                error: None,
                at_ms: Some(now_ms()),
            });
            if let Err(e) = apply_inbound(&ctx, &org, &bot, &*channel, &[status]).await {
                tracing::warn!(org = %org, mid = %mid, error = %e, "sandbox ack not applied");
                return;
            }
        }
    });
}

/// What a provider webhook changed, for logs and tests.
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
    /// Users disabled or enabled.
    pub users: usize,
    /// `(uid, text)` of each new inbound message, in order: what waiting
    /// route runs resume with.
    pub replies: Vec<(String, String)>,
}

/// Applies the `events` of one provider webhook to the organization of
/// `bot`, in one durable write: new users (`onUserCreate`; a user first
/// reached by a send gets the profile name, `onUserUpdate`), inbound
/// messages (noted in the user's channel state; a reply moves the message
/// it answers to ack 10 when that was a template), and statuses (acks
/// forward only, with callbacks).
pub async fn apply_inbound(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    channel: &dyn Channel,
    events: &[Inbound],
) -> Result<Applied, StoreError> {
    let fields = channel.error_fields();
    let applied = ctx
        .store
        .write(org, |tx| {
            tx.track_users();
            let mut convs = crate::conversations::Staged::default();
            let mut a = Applied::default();
            // Staged state, so that one payload may touch a message twice.
            let mut msgs: HashMap<String, Message> = HashMap::new();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut users: HashSet<String> = HashSet::new();
            let load = |tx: &WriteTx<'_>,
                        msgs: &HashMap<String, Message>,
                        mid: &str|
             -> Result<Option<Message>, StoreError> {
                match msgs.get(mid) {
                    Some(m) => Ok(Some(m.clone())),
                    None => tx.store().message(org, mid),
                }
            };
            for event in events {
                match event {
                    Inbound::Message(m) => {
                        if !seen.insert(&m.provider_id)
                            || tx.store().mid_of_provider_id(org, &m.provider_id)?.is_some()
                        {
                            a.duplicates += 1;
                            continue;
                        }
                        let uid = make_uid(bot.id, bot.kind, &m.from);
                        if users.insert(uid.clone()) {
                            meet_user(tx, org, bot, &uid, m.phone.as_deref(), &m.profile)?;
                        }
                        let at_ms = m.at_ms.unwrap_or_else(now_ms);
                        let mut msg = Message {
                            mid: new_mid(),
                            uid: uid.clone(),
                            bot_id: bot.id,
                            sender: Sender::Client,
                            typ: m.typ.clone(),
                            msg: m.text.clone(),
                            media_id: m.media_id.clone(),
                            dt: iso_of_ms(at_ms),
                            ack: 0,
                            provider_id: Some(m.provider_id.clone()),
                            template: None,
                            error_code: None,
                            error_desc: None,
                            callback: None,
                            agent_email: None,
                            cid: None,
                        };
                        convs.attach(tx, org, &mut msg, at_ms)?;
                        tx.put_message(&msg, at_ms);
                        a.messages += 1;
                        a.replies.push((uid.clone(), m.text.clone()));
                        let mut last = None;
                        if channel.keeps_state() {
                            let before = tx.store().channel_state(org, &uid)?;
                            let mut state = before.clone();
                            last = channel.note_inbound(&mut state, at_ms);
                            if state != before {
                                tx.put_channel_state(&uid, &state);
                            }
                        }
                        // A reply: to the message it quotes, else to the
                        // one the channel's state names.
                        let replied = match &m.reply_to {
                            Some(p) => tx.store().mid_of_provider_id(org, p)?,
                            None => last,
                        };
                        if let Some(mid) = replied {
                            if let Some(mut t) = load(tx, &msgs, &mid)? {
                                if t.template.is_some()
                                    && set_ack(tx, org, &mut t, 10, None, at_ms, fields)
                                {
                                    a.acks += 1;
                                    msgs.insert(mid, t);
                                }
                            }
                        }
                    }
                    Inbound::OptOut(u) | Inbound::OptIn(u) => {
                        let uid = make_uid(bot.id, bot.kind, &u.from);
                        if users.insert(uid.clone()) {
                            meet_user(tx, org, bot, &uid, u.phone.as_deref(), &u.profile)?;
                        }
                        let disable = matches!(event, Inbound::OptOut(_));
                        if set_disabled(tx, org, &uid, disable)? {
                            a.users += 1;
                        }
                    }
                    Inbound::Status(s) => {
                        let by_reference = match s.reference.as_deref() {
                            Some(mid) => load(tx, &msgs, mid)?.filter(|m| m.bot_id == bot.id),
                            None => None,
                        };
                        let found = match by_reference {
                            Some(m) => Some(m),
                            None => match tx.store().mid_of_provider_id(org, &s.provider_id)? {
                                Some(mid) => load(tx, &msgs, &mid)?,
                                None => None,
                            },
                        };
                        let Some(mut msg) = found else {
                            tracing::debug!(provider_id = %s.provider_id, "status of an unknown message");
                            a.ignored += 1;
                            continue;
                        };
                        if msg.provider_id.is_none() {
                            msg.provider_id = Some(s.provider_id.clone());
                            tx.put_message(&msg, ms_of_iso(&msg.dt));
                        }
                        let at_ms = s.at_ms.unwrap_or_else(now_ms);
                        if set_ack(tx, org, &mut msg, s.ack, s.error.clone(), at_ms, fields) {
                            a.acks += 1;
                        } else {
                            a.ignored += 1;
                        }
                        msgs.insert(msg.mid.clone(), msg);
                    }
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

/// Stages the user `uid` a webhook names: created when new
/// (`onUserCreate`); otherwise updated (`onUserUpdate`) when the provider
/// reports its current profile and it changed, or when a send reached the
/// user first and the profile names it.
fn meet_user(
    tx: &mut WriteTx<'_>,
    org: &str,
    bot: &Bot,
    uid: &str,
    phone: Option<&str>,
    profile: &Profile,
) -> Result<(), StoreError> {
    let named = |rec: &mut crate::model::UserRecord| {
        let fresh = new_user(bot, uid, "", &profile.name).user;
        rec.user.name = fresh.name;
        rec.user.first_name = profile.first_name.clone().unwrap_or(fresh.first_name);
        rec.user.last_name = profile.last_name.clone().unwrap_or(fresh.last_name);
        if let Some(lang) = &profile.lang {
            rec.user.lang = lang.clone();
        }
    };
    match tx.staged_user(org, uid)? {
        None => {
            let mut rec = new_user(bot, uid, phone.unwrap_or(""), "");
            named(&mut rec);
            tx.put_new_user(&mut rec);
            tx.emit(on_user_create(&rec.user))?;
        }
        Some(mut rec)
            if (profile.current || rec.user.name.is_empty()) && !profile.name.is_empty() =>
        {
            let before = rec.user.clone();
            named(&mut rec);
            let update = changed_fields(&before, &rec.user);
            if !update.is_empty() {
                tx.put_user(&rec);
                tx.emit(on_user_update(&rec.user, update))?;
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// Stages user `uid` of `org` as `disabled` (`onUserDisable`) or enabled
/// (`onUserEnable`) when that changes it; returns whether it did. Reads
/// what this write staged first, so that a user created in the same write
/// is found.
fn set_disabled(
    tx: &mut WriteTx<'_>,
    org: &str,
    uid: &str,
    disabled: bool,
) -> Result<bool, StoreError> {
    let Some(mut rec) = tx.staged_user(org, uid)? else {
        return Ok(false);
    };
    if rec.user.disabled == disabled {
        return Ok(false);
    }
    rec.user.disabled = disabled;
    tx.put_user(&rec);
    tx.emit(if disabled {
        on_user_disable(uid)
    } else {
        on_user_enable(uid)
    })?;
    Ok(true)
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
    fn mids_are_24_hex() {
        let m = new_mid();
        assert_eq!(m.len(), 24);
        assert!(m.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(m, new_mid());
    }
}
