//! Commands: the one `Command` enum both transports parse into and dispatch.
//!
//! Flow: bytes → [`Envelope::parse`] (1017 invalid JSON) → authentication
//! (1000/1001, by the transport's rules) → [`Command::parse`] (1004 unknown
//! command, field codes) → [`Command::apply`] → [`Reply`]. One command per
//! file; `Command`'s own methods only delegate. [`execute`] is the single
//! entry point the transports call once they know the caller.

mod create_bot;
mod create_organization;
mod create_user_tag;
mod delete_user;
mod delete_user_tag;
mod delete_webhook;
mod disable_api;
mod enable_api;
mod get_bots;
mod get_deliveries;
mod get_user;
mod get_user_data;
mod get_user_tags;
mod get_users;
mod get_webhook;
mod heartbeat;
mod redeliver_events;
mod reset_token;
mod rotate_webhook_secret;
mod set_user_data;
mod set_user_email;
mod set_user_name;
mod set_user_notes;
mod set_user_phone;
mod set_user_tag;
mod set_webhook;
mod upsert_user;

pub use create_bot::CreateBot;
pub use create_organization::CreateOrganization;
pub use create_user_tag::CreateUserTag;
pub use delete_user::DeleteUser;
pub use delete_user_tag::DeleteUserTag;
pub use delete_webhook::DeleteWebhook;
pub use disable_api::DisableApi;
pub use enable_api::EnableApi;
pub use get_bots::GetBots;
pub use get_deliveries::GetDeliveries;
pub use get_user::GetUser;
pub use get_user_data::GetUserData;
pub use get_user_tags::GetUserTags;
pub use get_users::GetUsers;
pub use get_webhook::GetWebhook;
pub use heartbeat::Heartbeat;
pub use redeliver_events::RedeliverEvents;
pub use reset_token::ResetToken;
pub use rotate_webhook_secret::RotateWebhookSecret;
pub use set_user_data::SetUserData;
pub use set_user_email::SetUserEmail;
pub use set_user_name::SetUserName;
pub use set_user_notes::SetUserNotes;
pub use set_user_phone::SetUserPhone;
pub use set_user_tag::SetUserTag;
pub use set_webhook::SetWebhook;
pub use upsert_user::UpsertUser;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Org, User, UserRecord};
use crate::reply::Reply;
use crate::Ctx;
use serde_json::{json, Map, Value};

/// A parsed request object: its `cmd`, its `token` (if any), and all fields.
#[derive(Debug)]
pub struct Envelope {
    /// The command name as sent (empty when absent).
    pub cmd: String,
    /// The `token` field, when present and a string.
    pub token: Option<String>,
    /// Every field of the object, `cmd` and `token` included.
    pub fields: Map<String, Value>,
}

impl Envelope {
    /// Parses one JSON object. Errors: 1017 when `bytes` is not a JSON object
    /// or `cmd` is not a string; 1001 when `token` is not a string.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, ApiError> {
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidJson, m);
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(&format!("invalid JSON object: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(invalid("invalid JSON object: expected an object"));
        };
        let cmd = match fields.get("cmd") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("invalid JSON object: cmd must be a string")),
        };
        let token = match fields.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::new(ErrorCode::InvalidToken, "invalid API token")),
        };
        Ok(Envelope { cmd, token, fields })
    }
}

/// Typed access to an envelope's fields, each failure with its field's code.
pub(crate) struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// An optional string; `null` counts as absent; another type → `invalid`.
    pub fn opt_str(&self, name: &str, invalid: ErrorCode) -> Result<Option<&'a str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::new(invalid, format!("{name} must be a string"))),
        }
    }

    /// A required string: absent or empty → `missing`, another type → `invalid`.
    pub fn req_str(
        &self,
        name: &str,
        missing: ErrorCode,
        invalid: ErrorCode,
    ) -> Result<&'a str, ApiError> {
        match self.opt_str(name, invalid)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(ApiError::new(missing, format!("missing {name}"))),
        }
    }

    /// The required `uid` (1025 when missing).
    pub fn uid(&self) -> Result<&'a str, ApiError> {
        self.req_str("uid", ErrorCode::MissingUid, ErrorCode::MissingUid)
    }

    /// An optional non-negative integer, also accepted as a numeric string
    /// (the reference's `botID` is an integer; clients send both).
    pub fn opt_u64(&self, name: &str, invalid: ErrorCode) -> Result<Option<u64>, ApiError> {
        let bad = || ApiError::new(invalid, format!("{name} must be a non-negative integer"));
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// The required `botID` (1008 missing, 1015 not a bot id).
    pub fn bot_id(&self) -> Result<u64, ApiError> {
        self.opt_u64("botID", ErrorCode::UnknownBot)?
            .ok_or_else(|| ApiError::new(ErrorCode::MissingBotId, "missing botID"))
    }

    /// An optional 0/1 flag (`overwrite`); `true`/`false` accepted too.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!("{name} must be 0 or 1"),
            )),
        }
    }
}

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
}

impl Command {
    /// Parses the envelope's command. Errors: 1004 unknown command, then each
    /// command's field codes.
    pub fn parse(env: &Envelope) -> Result<Command, ApiError> {
        let f = Fields(&env.fields);
        Ok(match env.cmd.as_str() {
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
                c.apply(ctx).await
            }
            Command::EnableApi(c) => {
                needs_admin("EnableApi")?;
                c.apply(ctx).await
            }
            Command::GetUser(c) => c.apply(ctx, needs_org()?),
            Command::GetUsers(c) => c.apply(ctx, needs_org()?),
            Command::SetUserData(c) => c.apply(ctx, needs_org()?).await,
            Command::SetUserName(c) => c.apply(ctx, needs_org()?).await,
            Command::SetUserEmail(c) => c.apply(ctx, needs_org()?).await,
            Command::SetUserNotes(c) => c.apply(ctx, needs_org()?).await,
            Command::SetUserPhone(c) => c.apply(ctx, needs_org()?).await,
            Command::GetUserTags(c) => c.apply(ctx, needs_org()?),
            Command::SetUserTag(c) => c.apply(ctx, needs_org()?).await,
            Command::DeleteUserTag(c) => c.apply(ctx, needs_org()?).await,
            Command::CreateUserTag(c) => c.apply(ctx, needs_org()?).await,
            Command::CreateBot(c) => c.apply(ctx, needs_org()?).await,
            Command::GetBots(c) => c.apply(ctx, needs_org()?),
            Command::UpsertUser(c) => c.apply(ctx, needs_org()?).await,
            Command::DeleteUser(c) => c.apply(ctx, needs_org()?).await,
            Command::GetUserData(c) => c.apply(ctx, needs_org()?),
            Command::ResetToken(c) => c.apply(ctx, needs_org()?).await,
            Command::SetWebhook(c) => c.apply(ctx, needs_org()?).await,
            Command::GetWebhook(c) => c.apply(ctx, needs_org()?),
            Command::DeleteWebhook(c) => c.apply(ctx, needs_org()?).await,
            Command::RotateWebhookSecret(c) => c.apply(ctx, needs_org()?).await,
            Command::DisableApi(c) => c.apply(ctx, needs_org()?).await,
            Command::GetDeliveries(c) => c.apply(ctx, needs_org()?),
            Command::RedeliverEvents(c) => c.apply(ctx, needs_org()?),
        }
    }
}

/// Runs one envelope for an authenticated `caller` and always returns the
/// reply to send: the rate limit (2008), parsing and the command itself.
#[tracing::instrument(skip_all, fields(cmd = %env.cmd))]
pub async fn execute(ctx: &Ctx, caller: &Caller, env: &Envelope) -> Reply {
    // Heartbeats keep a socket alive; they never count against the budget.
    let rate = match env.cmd.as_str() {
        "heartbeat" => Ok(()),
        _ => ctx.check_rate(caller),
    };
    if let Err(wait) = rate {
        let e = ApiError::new(
            ErrorCode::TokenRateLimited,
            "rate limit reached for this token",
        );
        let mut reply = Reply::error(&env.cmd, &e);
        reply.retry_after = Some(wait);
        return reply;
    }
    let result = match Command::parse(env) {
        Ok(cmd) => cmd.apply(ctx, caller).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => reply,
        Err(e) => {
            tracing::debug!(code = e.code.as_u16(), error = %e.message, "command failed");
            Reply::error(&env.cmd, &e)
        }
    }
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
