//! Conversations between users and agents (reference, "Commands -
//! Conversations" and `onUserConversation`; `protocol/conversations.md`).
//!
//! A conversation is one user's span of messages from open to close. It
//! opens with the first message stored for a user who has none open
//! (inbound, or a send — assigned to the send's agent when it names one);
//! every stored message belongs to it (`cid`). A send naming an agent
//! assigns it (a change from one agent to another adds a `transfer` row);
//! a send without one goes out as the assigned agent's, if any. It closes
//! by `CloseConversation` or after `conversation_idle_timeout` without a
//! message, in one durable write emitting `onUserConversation` with its
//! rows; it never changes again, and the user's next message opens a new
//! one.
//!
//! Extension events, for subscribers only ([`crate::events::OPT_IN`]):
//! `onMessage` (every stored row, and every ack change of an outbound one)
//! and `onConversationUpdate` (open, assigned, closed).

use crate::error::{ApiError, ErrorCode};
use crate::events::{on_conversation_update, on_message, on_user_conversation};
use crate::model::{Agent, ClosedConversation, Conversation, Message, Sender, User};
use crate::store::{StoreError, WriteTx};
use crate::time::{iso_of_ms, now_ms};
use serde_json::{json, Value};

/// Longest note, in characters (error 1023 above).
pub const MAX_NOTE_CHARS: usize = 1024;

/// A conversation's status as `onConversationUpdate` reports it.
fn status(c: &Conversation) -> &'static str {
    if c.agent.is_some() {
        "assigned"
    } else {
        "open"
    }
}

/// A message row in `GetConversation`'s shape (reference), with `cid` and
/// `mediaId` (extensions) when known: the user's current fields, the agent
/// of the row (`aid` 0 and empty when none).
pub fn row(user: &User, m: &Message, agent: Option<&Agent>) -> Value {
    let mut row = json!({
        "uid": user.uid,
        "email": user.email,
        "name": user.name,
        "phone": user.phone,
        "url": user.url,
        "aid": agent.map_or(0, |a| a.aid),
        "agent": agent.map_or("", |a| a.name.as_str()),
        "agentemail": agent.map_or("", |a| a.email.as_str()),
        "mid": m.mid,
        "msg": m.msg,
        "typ": m.typ,
        "sender": match m.sender {
            Sender::Client => "client",
            Sender::Agent => "agent",
            Sender::System => "system",
        },
        "dt": m.dt,
        "bot": user.bot,
    });
    if let Some(id) = &m.media_id {
        row["mediaId"] = id.clone().into();
    }
    if let Some(cid) = &m.cid {
        row["cid"] = cid.clone().into();
    }
    row
}

/// The `onUserConversation` row of `m` (reference: `uid`, `mid`, `msg`,
/// `typ`, `sender`, `dt`, `agent`, `bot`; extension `cid`).
fn event_row(full: &Value) -> Value {
    let mut r = serde_json::Map::new();
    for k in [
        "uid", "mid", "msg", "typ", "sender", "dt", "agent", "bot", "cid",
    ] {
        if let Some(v) = full.get(k) {
            r.insert(k.into(), v.clone());
        }
    }
    Value::Object(r)
}

/// The agent named by `email` in `org`, if it exists.
fn agent_of(tx: &WriteTx<'_>, org: &str, email: Option<&str>) -> Result<Option<Agent>, StoreError> {
    match email {
        Some(e) => tx.store().agent(org, e),
        None => Ok(None),
    }
}

/// Stages `m`'s `onMessage` (extension, opt-in): its row with `ack` for
/// outbound messages.
pub fn emit_message(tx: &mut WriteTx<'_>, org: &str, m: &Message) -> Result<(), StoreError> {
    let Some(user) = tx.staged_user(org, &m.uid)? else {
        return Ok(());
    };
    let agent = agent_of(tx, org, m.agent_email.as_deref())?;
    let mut r = row(&user.user, m, agent.as_ref());
    if m.sender != Sender::Client {
        r["ack"] = m.ack.into();
    }
    tx.emit(on_message(r))
}

/// Stages `c` as open and its `onConversationUpdate`.
fn put_and_announce(
    tx: &mut WriteTx<'_>,
    org: &str,
    c: &Conversation,
    status: &str,
) -> Result<(), StoreError> {
    tx.put_open_conversation(c);
    let agent = agent_of(tx, org, c.agent.as_deref())?;
    tx.emit(on_conversation_update(c, status, agent.as_ref()))
}

/// Staged conversations of one write (it may touch a user's twice).
#[derive(Default)]
pub struct Staged {
    open: std::collections::HashMap<String, Conversation>,
}

impl Staged {
    /// The open conversation of `uid` as this write left it.
    fn current(
        &mut self,
        tx: &WriteTx<'_>,
        org: &str,
        uid: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        if let Some(c) = self.open.get(uid) {
            return Ok(Some(c.clone()));
        }
        tx.store().open_conversation(org, uid)
    }

    /// Attaches a new message `m` of user `m.uid` to its open conversation,
    /// opening one when there is none, and stages everything: `m` gets its
    /// `cid`, its sender (`agent` when the conversation has an agent and
    /// `m` was a system send) and its agent; the counts move; an agent
    /// named by a send assigns the conversation (a `transfer` row when it
    /// had another). Emits `onConversationUpdate` on open or assignment,
    /// and `onMessage` for the rows. The caller stages `m` itself after.
    pub fn attach(
        &mut self,
        tx: &mut WriteTx<'_>,
        org: &str,
        m: &mut Message,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut c = match self.current(tx, org, &m.uid)? {
            Some(c) => c,
            None => {
                let c = Conversation {
                    cid: crate::model::new_mid(),
                    uid: m.uid.clone(),
                    bot_id: m.bot_id,
                    started_ms: at_ms,
                    agent: m.agent_email.clone(),
                    aco: 0,
                    uco: 0,
                    last_ms: at_ms,
                };
                put_and_announce(tx, org, &c, status(&c))?;
                c
            }
        };
        match (&m.sender, &m.agent_email, &c.agent) {
            (Sender::Client, _, _) => c.uco += 1,
            (_, Some(named), current) => {
                if current.as_deref().map(str::to_lowercase) != Some(named.to_lowercase()) {
                    let previous = current.clone();
                    c.agent = Some(named.clone());
                    if let Some(prev) = previous {
                        self.transfer(tx, org, &c, &prev, named, at_ms)?;
                    }
                    put_and_announce(tx, org, &c, "assigned")?;
                }
                m.sender = Sender::Agent;
                c.aco += 1;
            }
            (_, None, Some(assigned)) => {
                m.sender = Sender::Agent;
                m.agent_email = Some(assigned.clone());
                c.aco += 1;
            }
            (_, None, None) => {}
        }
        c.last_ms = c.last_ms.max(at_ms);
        m.cid = Some(c.cid.clone());
        tx.put_open_conversation(&c);
        self.open.insert(c.uid.clone(), c);
        emit_message(tx, org, m)
    }

    /// Stages a `transfer` row (`sender` system) in `c`.
    fn transfer(
        &mut self,
        tx: &mut WriteTx<'_>,
        org: &str,
        c: &Conversation,
        from: &str,
        to: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let row = Message {
            mid: crate::model::new_mid(),
            uid: c.uid.clone(),
            bot_id: c.bot_id,
            sender: Sender::System,
            typ: "transfer".into(),
            msg: format!("Transferred from {from} to {to}"),
            media_id: None,
            dt: iso_of_ms(at_ms),
            ack: 0,
            provider_id: None,
            template: None,
            error_code: None,
            error_desc: None,
            callback: None,
            agent_email: Some(to.to_string()),
            cid: Some(c.cid.clone()),
        };
        tx.put_message(&row, at_ms);
        emit_message(tx, org, &row)
    }

    /// Assigns the open conversation of `uid` to `agent` (`None`:
    /// unassigns), with a `transfer` row when it moves from one agent to
    /// another. Errors: none open (1005 with a clear message).
    pub fn assign(
        &mut self,
        tx: &mut WriteTx<'_>,
        org: &str,
        uid: &str,
        agent: Option<&Agent>,
    ) -> Result<Conversation, ApiError> {
        let mut c = self.current(tx, org, uid)?.ok_or_else(|| no_open(uid))?;
        let to = agent.map(|a| a.email.clone());
        if c.agent.as_deref().map(str::to_lowercase) == to.as_deref().map(str::to_lowercase) {
            return Ok(c);
        }
        let now = now_ms();
        if let (Some(from), Some(to)) = (&c.agent, &to) {
            self.transfer(tx, org, &c, from, to, now)?;
        }
        c.agent = to;
        put_and_announce(tx, org, &c, status(&c))?;
        self.open.insert(c.uid.clone(), c.clone());
        Ok(c)
    }

    /// Adds a `note` row by `agent` to the open conversation of `uid`
    /// (never sent). Errors: none open.
    pub fn note(
        &mut self,
        tx: &mut WriteTx<'_>,
        org: &str,
        uid: &str,
        agent: &Agent,
        text: &str,
    ) -> Result<Message, ApiError> {
        let c = self.current(tx, org, uid)?.ok_or_else(|| no_open(uid))?;
        let now = now_ms();
        let m = Message {
            mid: crate::model::new_mid(),
            uid: uid.to_string(),
            bot_id: c.bot_id,
            sender: Sender::Agent,
            typ: "note".into(),
            msg: text.to_string(),
            media_id: None,
            dt: iso_of_ms(now),
            ack: 0,
            provider_id: None,
            template: None,
            error_code: None,
            error_desc: None,
            callback: None,
            agent_email: Some(agent.email.clone()),
            cid: Some(c.cid.clone()),
        };
        tx.put_message(&m, now);
        emit_message(tx, org, &m)?;
        Ok(m)
    }
}

/// There is no open conversation for `uid`.
pub fn no_open(uid: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownUser,
        format!("user {uid:?} has no open conversation"),
    )
}

/// Closes `c` (open, of user `c.uid`) in `tx`: its rows as they are, the
/// close sequence, `onConversationUpdate` closed and `onUserConversation`
/// with the rows (reference). Messages of this write are not yet readable:
/// close in a write of its own.
pub fn close(
    tx: &mut WriteTx<'_>,
    org: &str,
    c: &Conversation,
    closed_by: Option<&str>,
) -> Result<(), StoreError> {
    let user = tx.staged_user(org, &c.uid)?;
    let mut rows = Vec::new();
    if let Some(user) = &user {
        for m in tx
            .store()
            .conversation_messages(org, &c.uid, &c.cid, c.started_ms)?
        {
            let agent = agent_of(tx, org, m.agent_email.as_deref())?;
            rows.push(row(&user.user, &m, agent.as_ref()));
        }
    }
    let closed = ClosedConversation {
        conversation: c.clone(),
        closed_ms: now_ms(),
        closed_by: closed_by.map(str::to_string),
        rows: Value::Array(rows.clone()).to_string(),
    };
    tx.close_conversation(&closed)?;
    let agent = agent_of(tx, org, c.agent.as_deref())?;
    tx.emit(on_conversation_update(c, "closed", agent.as_ref()))?;
    tx.emit(on_user_conversation(
        &c.uid,
        rows.iter().map(event_row).collect(),
    ))
}

/// 2001: automatic sends (routes, `SendMessage`) may not reach a user whose
/// open conversation is assigned to an agent.
pub fn check_not_with_agent(open: Option<&Conversation>, uid: &str) -> Result<(), ApiError> {
    match open.and_then(|c| c.agent.as_ref()) {
        Some(agent) => Err(ApiError::new(
            ErrorCode::ChattingToAgent,
            format!("user {uid} is chatting to an agent ({agent}): message cannot be sent"),
        )),
        None => Ok(()),
    }
}

/// The `GetOpenConversations` object of `c` (reference fields `id`, `uid`,
/// `aid`, `agent`, `bid`, `sdt`, `aco`, `uco`).
pub fn open_view(c: &Conversation, agent: Option<&Agent>) -> Value {
    json!({
        "id": c.cid,
        "uid": c.uid,
        "aid": agent.map_or(0, |a| a.aid),
        "agent": agent.map_or("", |a| a.name.as_str()),
        "bid": c.bot_id,
        "sdt": iso_of_ms(c.started_ms),
        "aco": c.aco,
        "uco": c.uco,
    })
}
