//! Commands: the one `Command` enum both transports parse into and dispatch.
//!
//! Flow: bytes → [`Envelope::parse`] (1017 invalid JSON) → authentication
//! (1000/1001, by the transport's rules) → [`Command::parse`] (1004 unknown
//! command, field codes) → [`Command::apply`] → [`Reply`]. One command per
//! file; `Command`'s own methods only delegate. [`execute`] is the single
//! entry point the transports call once they know the caller.

mod create_agent;
mod create_bot;
mod create_organization;
mod create_user_tag;
mod delete_user;
mod delete_user_tag;
mod delete_webhook;
mod disable_api;
mod enable_api;
mod envelope;
mod get_agents;
mod get_bots;
mod get_conversation;
mod get_deliveries;
mod get_message_details;
mod get_user;
mod get_user_data;
mod get_user_tags;
mod get_users;
mod get_webhook;
mod get_whatsapp_template;
mod heartbeat;
mod redeliver_events;
mod reset_token;
mod rotate_webhook_secret;
mod send_text_message;
mod send_whatsapp_template;
mod set_user_data;
mod set_user_email;
mod set_user_name;
mod set_user_notes;
mod set_user_phone;
mod set_user_tag;
mod set_webhook;
mod update_bot;
mod upsert_user;

pub use create_agent::CreateAgent;
pub use create_bot::CreateBot;
pub use create_organization::CreateOrganization;
pub use create_user_tag::CreateUserTag;
pub use delete_user::DeleteUser;
pub use delete_user_tag::DeleteUserTag;
pub use delete_webhook::DeleteWebhook;
pub use disable_api::DisableApi;
pub use enable_api::EnableApi;
pub use envelope::Envelope;
pub(crate) use envelope::Fields;
pub use get_agents::GetAgents;
pub use get_bots::GetBots;
pub use get_conversation::GetConversation;
pub use get_deliveries::GetDeliveries;
pub use get_message_details::GetMessageDetails;
pub use get_user::GetUser;
pub use get_user_data::GetUserData;
pub use get_user_tags::GetUserTags;
pub use get_users::GetUsers;
pub use get_webhook::GetWebhook;
pub use get_whatsapp_template::GetWhatsAppTemplate;
pub use heartbeat::Heartbeat;
pub use redeliver_events::RedeliverEvents;
pub use reset_token::ResetToken;
pub use rotate_webhook_secret::RotateWebhookSecret;
pub use send_text_message::SendTextMessage;
pub use send_whatsapp_template::SendWhatsAppTemplate;
pub use set_user_data::SetUserData;
pub use set_user_email::SetUserEmail;
pub use set_user_name::SetUserName;
pub use set_user_notes::SetUserNotes;
pub use set_user_phone::SetUserPhone;
pub use set_user_tag::SetUserTag;
pub use set_webhook::SetWebhook;
pub use update_bot::UpdateBot;
pub use upsert_user::UpsertUser;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Org, User, UserRecord};
use crate::reply::Reply;
use crate::Ctx;
use serde_json::{json, Map, Value};

/// Every command convgate understands (reference commands and extensions).
#[derive(Debug)]
pub enum Command {
    /// `heartbeat` (reference, "Heartbeat").
    Heartbeat(Heartbeat),
    /// `GetUser` (reference).
    GetUser(GetUser),
    /// `GetUsers` (reference; `limit`/`cursor` extension).
    GetUsers(GetUsers),
    /// `SetUserData` (reference).
    SetUserData(SetUserData),
    /// `SetUserName` (reference).
    SetUserName(SetUserName),
    /// `SetUserEmail` (reference).
    SetUserEmail(SetUserEmail),
    /// `SetUserNotes` (reference).
    SetUserNotes(SetUserNotes),
    /// `SetUserPhone` (reference).
    SetUserPhone(SetUserPhone),
    /// `GetUserTags` (reference).
    GetUserTags(GetUserTags),
    /// `SetUserTag` (reference).
    SetUserTag(SetUserTag),
    /// `DeleteUserTag` (reference).
    DeleteUserTag(DeleteUserTag),
    /// `CreateUserTag` (reference).
    CreateUserTag(CreateUserTag),
    /// `CreateBot` (extension).
    CreateBot(CreateBot),
    /// `GetBots` (extension).
    GetBots(GetBots),
    /// `UpsertUser` (extension).
    UpsertUser(UpsertUser),
    /// `DeleteUser` (extension).
    DeleteUser(DeleteUser),
    /// `GetUserData` (extension).
    GetUserData(GetUserData),
    /// `ResetToken` (extension; the reference's dashboard "Reset Token").
    ResetToken(ResetToken),
    /// `CreateOrganization` (extension; admin token only).
    CreateOrganization(CreateOrganization),
    /// `EnableApi` (extension; admin token only).
    EnableApi(EnableApi),
    /// `SetWebhook` (extension; "Configure Webhook").
    SetWebhook(SetWebhook),
    /// `GetWebhook` (extension).
    GetWebhook(GetWebhook),
    /// `DeleteWebhook` (extension).
    DeleteWebhook(DeleteWebhook),
    /// `RotateWebhookSecret` (extension).
    RotateWebhookSecret(RotateWebhookSecret),
    /// `DisableApi` (extension; "Disable API").
    DisableApi(DisableApi),
    /// `GetDeliveries` (extension).
    GetDeliveries(GetDeliveries),
    /// `RedeliverEvents` (extension).
    RedeliverEvents(RedeliverEvents),
    /// `UpdateBot` (extension).
    UpdateBot(UpdateBot),
    /// `SendWhatsAppTemplate` (reference, "Commands - Sending Messages").
    SendWhatsAppTemplate(SendWhatsAppTemplate),
    /// `GetWhatsAppTemplate` (reference).
    GetWhatsAppTemplate(GetWhatsAppTemplate),
    /// `SendTextMessage` (reference).
    SendTextMessage(SendTextMessage),
    /// `GetMessageDetails` (reference).
    GetMessageDetails(GetMessageDetails),
    /// `GetConversation` (reference, "Commands - Conversations").
    GetConversation(GetConversation),
    /// `CreateAgent` (extension).
    CreateAgent(CreateAgent),
    /// `GetAgents` (extension).
    GetAgents(GetAgents),
}

impl Command {
    /// Parses the envelope's command. Errors: 1004 unknown command, then each
    /// command's field codes.
    pub fn parse(env: &Envelope) -> Result<Command, ApiError> {
        let f = env.fields();
        Ok(match env.cmd.as_ref() {
            "heartbeat" => Command::Heartbeat(Heartbeat),
            "GetUser" => Command::GetUser(GetUser::parse(&f)?),
            "GetUsers" => Command::GetUsers(GetUsers::parse(&f)?),
            "SetUserData" => Command::SetUserData(SetUserData::parse(&f)?),
            "SetUserName" => Command::SetUserName(SetUserName::parse(&f)?),
            "SetUserEmail" => Command::SetUserEmail(SetUserEmail::parse(&f)?),
            "SetUserNotes" => Command::SetUserNotes(SetUserNotes::parse(&f)?),
            "SetUserPhone" => Command::SetUserPhone(SetUserPhone::parse(&f)?),
            "GetUserTags" => Command::GetUserTags(GetUserTags::parse(&f)?),
            "SetUserTag" => Command::SetUserTag(SetUserTag::parse(&f)?),
            "DeleteUserTag" => Command::DeleteUserTag(DeleteUserTag::parse(&f)?),
            "CreateUserTag" => Command::CreateUserTag(CreateUserTag::parse(&f)?),
            "CreateBot" => Command::CreateBot(CreateBot::parse(&f)?),
            "GetBots" => Command::GetBots(GetBots),
            "UpsertUser" => Command::UpsertUser(UpsertUser::parse(&f)?),
            "DeleteUser" => Command::DeleteUser(DeleteUser::parse(&f)?),
            "GetUserData" => Command::GetUserData(GetUserData::parse(&f)?),
            "ResetToken" => Command::ResetToken(ResetToken),
            "CreateOrganization" => Command::CreateOrganization(CreateOrganization::parse(&f)?),
            "EnableApi" => Command::EnableApi(EnableApi::parse(&f)?),
            "SetWebhook" => Command::SetWebhook(SetWebhook::parse(&f)?),
            "GetWebhook" => Command::GetWebhook(GetWebhook),
            "DeleteWebhook" => Command::DeleteWebhook(DeleteWebhook),
            "RotateWebhookSecret" => Command::RotateWebhookSecret(RotateWebhookSecret),
            "DisableApi" => Command::DisableApi(DisableApi),
            "GetDeliveries" => Command::GetDeliveries(GetDeliveries::parse(&f)?),
            "RedeliverEvents" => Command::RedeliverEvents(RedeliverEvents::parse(&f)?),
            "UpdateBot" => Command::UpdateBot(UpdateBot::parse(&f)?),
            "SendWhatsAppTemplate" => {
                Command::SendWhatsAppTemplate(SendWhatsAppTemplate::parse(&f)?)
            }
            "GetWhatsAppTemplate" => Command::GetWhatsAppTemplate(GetWhatsAppTemplate::parse(&f)?),
            "SendTextMessage" => Command::SendTextMessage(SendTextMessage::parse(&f)?),
            "GetMessageDetails" => Command::GetMessageDetails(GetMessageDetails::parse(&f)?),
            "GetConversation" => Command::GetConversation(GetConversation::parse(&f)?),
            "CreateAgent" => Command::CreateAgent(CreateAgent::parse(&f)?),
            "GetAgents" => Command::GetAgents(GetAgents),
            "" => return Err(ApiError::new(ErrorCode::UnknownCommand, "missing cmd")),
            other => {
                return Err(ApiError::new(
                    ErrorCode::UnknownCommand,
                    format!("unknown command {other:?}"),
                ))
            }
        })
    }

    /// Runs the command for `caller`. `CreateOrganization` and `EnableApi`
    /// need the admin token, `heartbeat` any token, every other command an
    /// organization's token (1001 otherwise).
    ///
    /// Commands that await (writes, provider calls) run boxed: their state
    /// machines would otherwise size every command's future, reads included
    /// (5 KiB rather than 1.2 KiB), and be copied on each move.
    pub async fn apply(self, ctx: &Ctx, caller: &Caller) -> Result<Reply, ApiError> {
        let org = match caller {
            Caller::Org(org) => Some(org),
            Caller::Admin => None,
        };
        let needs_org = || {
            org.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidToken,
                    "the admin token only runs CreateOrganization and EnableApi",
                )
            })
        };
        let needs_admin = |name: &str| match org {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidToken,
                format!("{name} needs the instance admin token"),
            )),
        };
        match self {
            Command::Heartbeat(c) => c.apply(),
            Command::CreateOrganization(c) => {
                needs_admin("CreateOrganization")?;
                Box::pin(c.apply(ctx)).await
            }
            Command::EnableApi(c) => {
                needs_admin("EnableApi")?;
                Box::pin(c.apply(ctx)).await
            }
            Command::GetUser(c) => c.apply(ctx, needs_org()?),
            Command::GetUsers(c) => c.apply(ctx, needs_org()?),
            Command::SetUserData(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SetUserName(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SetUserEmail(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SetUserNotes(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SetUserPhone(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetUserTags(c) => c.apply(ctx, needs_org()?),
            Command::SetUserTag(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::DeleteUserTag(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::CreateUserTag(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::CreateBot(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetBots(c) => c.apply(ctx, needs_org()?),
            Command::UpsertUser(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::DeleteUser(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetUserData(c) => c.apply(ctx, needs_org()?),
            Command::ResetToken(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SetWebhook(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetWebhook(c) => c.apply(ctx, needs_org()?),
            Command::DeleteWebhook(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::RotateWebhookSecret(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::DisableApi(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetDeliveries(c) => c.apply(ctx, needs_org()?),
            Command::RedeliverEvents(c) => c.apply(ctx, needs_org()?),
            Command::UpdateBot(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SendWhatsAppTemplate(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetWhatsAppTemplate(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::SendTextMessage(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetMessageDetails(c) => c.apply(ctx, needs_org()?),
            Command::GetConversation(c) => c.apply(ctx, needs_org()?),
            Command::CreateAgent(c) => Box::pin(c.apply(ctx, needs_org()?)).await,
            Command::GetAgents(c) => c.apply(ctx, needs_org()?),
        }
    }
}

/// Runs one envelope for an authenticated `caller` and always returns the
/// reply to send: the rate limit (2008), parsing and the command itself.
#[tracing::instrument(skip_all, fields(cmd = %env.cmd))]
pub async fn execute(ctx: &Ctx, caller: &Caller, env: &Envelope<'_>) -> Reply {
    let limited = |(wait, info)| {
        let e = ApiError::new(
            ErrorCode::TokenRateLimited,
            "rate limit reached for this token",
        )
        .with_retry_after(wait);
        let mut reply = Reply::error(&env.cmd, &e);
        reply.rate = Some(info);
        reply
    };
    // Heartbeats keep a socket alive; they never count against the budget.
    let mut rate = match env.cmd.as_ref() {
        "heartbeat" => None,
        _ => match ctx.check_rate(caller) {
            Ok(info) => info,
            Err(e) => return limited(e),
        },
    };
    // Messages have their own, smaller budget (reference: 10 per second).
    if matches!(env.cmd.as_ref(), "SendWhatsAppTemplate" | "SendTextMessage") {
        match ctx.check_send_rate(caller) {
            Ok(Some(info)) => rate = Some(info),
            Ok(None) => {}
            Err(e) => return limited(e),
        }
    }
    let result = match Command::parse(env) {
        Ok(cmd) => cmd.apply(ctx, caller).await,
        Err(e) => Err(e),
    };
    let mut reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            tracing::debug!(code = e.code.as_u16(), error = %e.message, "command failed");
            Reply::error(&env.cmd, &e)
        }
    };
    reply.rate = reply.rate.or(rate);
    reply
}

/// 1005 Unknown user.
pub(crate) fn unknown_user(uid: &str) -> ApiError {
    ApiError::new(ErrorCode::UnknownUser, format!("unknown user {uid:?}"))
}

/// Reads user `uid` of `org` (1005 when absent).
pub(crate) fn load_user(ctx: &Ctx, org: &Org, uid: &str) -> Result<UserRecord, ApiError> {
    ctx.store
        .user(&org.id, uid)?
        .ok_or_else(|| unknown_user(uid))
}

/// The event body `onUserCreate` (reference, "onUserCreate"): data = user.
pub(crate) fn on_user_create(user: &User) -> Map<String, Value> {
    obj(json!({"cmd": "onUserCreate", "ok": 1, "data": user}))
}

/// The event body `onUserUpdate`: data = `{user, update}`, `update` holding
/// only the changed fields (reference, "onUserUpdate").
pub(crate) fn on_user_update(user: &User, update: Map<String, Value>) -> Map<String, Value> {
    obj(json!({"cmd": "onUserUpdate", "ok": 1, "data": {"user": user, "update": update}}))
}

/// The event body `onUserDelete`: top-level `uid` (reference, "onUserDelete").
pub(crate) fn on_user_delete(uid: &str) -> Map<String, Value> {
    obj(json!({"cmd": "onUserDelete", "ok": 1, "uid": uid}))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

/// The fields of `after` whose values differ from `before`.
pub(crate) fn changed_fields(before: &User, after: &User) -> Map<String, Value> {
    let (Value::Object(b), Value::Object(a)) = (json!(before), json!(after)) else {
        unreachable!("users serialise to objects")
    };
    a.into_iter().filter(|(k, v)| b.get(k) != Some(v)).collect()
}

/// Changes user `uid` of `org` with `change`, durably; emits `onUserUpdate`
/// with the changed fields when anything changed. Errors: 1005.
pub(crate) async fn update_user(
    ctx: &Ctx,
    org: &Org,
    uid: &str,
    change: impl FnOnce(&mut User),
) -> Result<User, ApiError> {
    ctx.store
        .write(&org.id, |tx| {
            let mut rec = tx
                .store()
                .user(&org.id, uid)?
                .ok_or_else(|| unknown_user(uid))?;
            let before = rec.user.clone();
            change(&mut rec.user);
            let update = changed_fields(&before, &rec.user);
            if !update.is_empty() {
                tx.put_user(&rec);
                tx.emit(on_user_update(&rec.user, update))?;
            }
            Ok(rec.user)
        })
        .await
}

/// The idempotency key of a send (`idempotencyKey` field, or the POST
/// `Idempotency-Key` header the transport copies into it) and the hash of
/// the request it names: SHA-256 of the fields other than `token` and the
/// key, keys sorted. Errors: 1017 a key that is not 1–255 visible ASCII
/// characters.
pub(crate) fn idempotency(f: &Fields) -> Result<Option<crate::messages::Idempotency>, ApiError> {
    use sha2::{Digest, Sha256};
    let Some(key) = f.opt_str("idempotencyKey", ErrorCode::InvalidJson)? else {
        return Ok(None);
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "idempotencyKey must be 1-255 visible ASCII characters",
        ));
    }
    let mut h = Sha256::new();
    for (k, v) in f.canonical(&["token", "idempotencyKey"]) {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    Ok(Some(crate::messages::Idempotency {
        key: key.to_string(),
        request_sha256: hex::encode(h.finalize()),
    }))
}

/// While alive, marks an idempotency key as in progress in this process.
pub(crate) struct InFlight {
    ctx: Ctx,
    entry: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ctx
            .idempotency_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry);
    }
}

/// What a send under an idempotency key does: replay the stored reply, or
/// go ahead holding the key. Errors (HTTP 409, code 1017): the key is in
/// use by a request in progress, or was used with a different request
/// within 24 hours.
pub(crate) enum Idem {
    /// Send the stored reply again.
    Replay(Reply),
    /// Proceed; the guard releases the key when dropped.
    Proceed(Option<InFlight>),
}

/// How long a send's reply is kept under its idempotency key.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn idempotency_begin(
    ctx: &Ctx,
    org: &Org,
    idem: Option<&crate::messages::Idempotency>,
    cmd: &str,
) -> Result<Idem, ApiError> {
    let Some(i) = idem else {
        return Ok(Idem::Proceed(None));
    };
    let conflict = |m: &str| {
        let mut e = ApiError::new(ErrorCode::InvalidJson, m);
        e.status = Some(409);
        e
    };
    let entry = (org.id.clone(), i.key.clone());
    if !ctx
        .idempotency_in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(entry.clone())
    {
        return Err(conflict(
            "a request with this idempotency key is in progress; retry later",
        ));
    }
    let guard = InFlight {
        ctx: ctx.clone(),
        entry,
    };
    match ctx.store.idempotent(&org.id, &i.key)? {
        Some(rec) if rec.created_ms + IDEMPOTENCY_TTL_MS > crate::webhook::now_ms() => {
            if rec.request_sha256 != i.request_sha256 {
                return Err(conflict(
                    "this idempotency key was used with a different request",
                ));
            }
            Ok(Idem::Replay(Reply::replay(cmd, &rec.reply)))
        }
        _ => Ok(Idem::Proceed(Some(guard))),
    }
}

/// `webhookHeaders` (reference: "Array of headers for webhook callbacks"):
/// `[{"name":…,"value":…}]` (`key` for `name` also read), `["Name: value"]`,
/// or an object of names to values. At most 20; names and values must be
/// valid HTTP; `Host`, `Content-Length`, `Content-Type`, `Transfer-Encoding`
/// and `Connection` are refused. Error: 1017.
pub(crate) fn webhook_headers(f: &Fields) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::InvalidJson, format!("webhookHeaders: {m}"));
    let mut out = Vec::new();
    let pairs: Vec<(String, String)> = match f.value("webhookHeaders") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad(format!("{k} must have a string value"))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(a)) => a
            .iter()
            .map(|h| match h {
                Value::String(s) => s
                    .split_once(':')
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| bad(format!("{s:?} is not \"Name: value\""))),
                Value::Object(o) => {
                    let name = o
                        .get("name")
                        .or_else(|| o.get("key"))
                        .and_then(Value::as_str);
                    let value = o.get("value").and_then(Value::as_str);
                    match (name, value) {
                        (Some(n), Some(v)) => Ok((n.to_string(), v.to_string())),
                        _ => Err(bad("each header needs string name and value".into())),
                    }
                }
                _ => Err(bad(
                    "each header is an object or a \"Name: value\" string".into()
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("must be an array".into())),
    };
    if pairs.len() > 20 {
        return Err(bad("at most 20 headers".into()));
    }
    for (name, value) in pairs {
        let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("{name:?} is not a header name")))?;
        if matches!(
            n.as_str(),
            "host" | "content-length" | "content-type" | "transfer-encoding" | "connection"
        ) {
            return Err(bad(format!("{name} cannot be set")));
        }
        reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("the value of {name} is not a header value")))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The optional `agentEmail` of a send: must name an agent of the
/// organization (2002 otherwise; `CreateAgent` adds agents).
pub(crate) fn agent_of(
    ctx: &Ctx,
    org: &Org,
    email: Option<&str>,
) -> Result<Option<crate::model::Agent>, ApiError> {
    let Some(email) = email else {
        return Ok(None);
    };
    ctx.store
        .agent(&org.id, email.trim())?
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownAgent,
                format!("unable to assign to agent {email:?}: no such agent (CreateAgent)"),
            )
        })
}

/// Creates or updates the `[[bots]]` of the config file, at start.
/// Errors: an unknown organization or kind, or a bot the store refuses.
pub async fn apply_config_bots(ctx: &Ctx) -> Result<(), String> {
    for b in &ctx.config.bots {
        if ctx.store.org(&b.org).map_err(|e| e.to_string())?.is_none() {
            return Err(format!(
                "[[bots]] botID {}: no organization {:?}",
                b.bot_id, b.org
            ));
        }
        let kind = crate::domain::BotKind::parse(&b.kind).ok_or_else(|| {
            format!(
                "[[bots]] botID {}: kind must be whatsapp, sms, telegram or web",
                b.bot_id
            )
        })?;
        create_bot::create_or_update(
            ctx,
            &b.org,
            b.bot_id,
            kind,
            b.name.clone(),
            create_bot::WhatsAppFields::from_config(b),
        )
        .await
        .map_err(|e| format!("[[bots]] botID {}: {}", b.bot_id, e.message))?;
    }
    Ok(())
}
