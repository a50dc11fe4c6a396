//! Commands: the one `Command` enum both transports parse into and dispatch.
//!
//! Flow: bytes → [`Envelope::parse`] (1017 invalid JSON) → authentication
//! (1000/1001, by the transport's rules) → [`Command::parse`] (1004 unknown
//! command, field codes) → [`Command::apply`] → [`Reply`]. One command per
//! file; `Command`'s own methods only delegate. [`execute_now`] is the single
//! entry point the transports call once they know the caller.

mod add_conversation_note;
mod assign_conversation;
mod close_conversation;
mod create_agent;
mod create_api_key;
mod create_bot;
mod create_organization;
mod create_user_tag;
mod delete_agent;
mod delete_route;
mod delete_user;
mod delete_user_tag;
mod delete_webhook;
mod disable_api;
mod enable_api;
mod envelope;
mod fields;
mod get_agents;
mod get_api_keys;
mod get_bots;
mod get_conversation;
mod get_conversations_flat;
mod get_deliveries;
mod get_events;
mod get_message_details;
mod get_open_conversations;
mod get_routes;
mod get_user;
mod get_user_data;
mod get_user_tags;
mod get_users;
mod get_webhook;
mod get_whatsapp_template;
mod heartbeat;
mod redeliver_events;
mod reset_token;
mod revoke_api_key;
mod rotate_webhook_secret;
pub mod route_run;
mod send_message;
mod send_sms_message;
mod send_text_message;
mod send_whatsapp_template;
mod set_agent_password;
pub mod set_route;
mod set_user_data;
mod set_user_email;
mod set_user_name;
mod set_user_notes;
mod set_user_phone;
mod set_user_tag;
mod set_webhook;
mod simulate_inbound;
mod update_bot;
mod upsert_user;

pub use add_conversation_note::AddConversationNote;
pub use assign_conversation::AssignConversation;
pub use close_conversation::CloseConversation;
pub use create_agent::CreateAgent;
pub use create_api_key::CreateApiKey;
pub use create_bot::CreateBot;
pub use create_organization::CreateOrganization;
pub use create_user_tag::CreateUserTag;
pub use delete_agent::DeleteAgent;
pub use delete_route::DeleteRoute;
pub use delete_user::DeleteUser;
pub use delete_user_tag::DeleteUserTag;
pub use delete_webhook::DeleteWebhook;
pub use disable_api::DisableApi;
pub use enable_api::EnableApi;
pub use envelope::Envelope;
pub(crate) use envelope::Fields;
pub(crate) use fields::SendOptions;
pub use fields::{connect_events, connect_resume};
pub use get_agents::GetAgents;
pub use get_api_keys::GetApiKeys;
pub use get_bots::GetBots;
pub use get_conversation::GetConversation;
pub use get_conversations_flat::GetConversationsFlat;
pub use get_deliveries::GetDeliveries;
pub use get_events::{cannot_resume, GetEvents};
pub use get_message_details::GetMessageDetails;
pub use get_open_conversations::GetOpenConversations;
pub use get_routes::GetRoutes;
pub use get_user::GetUser;
pub use get_user_data::GetUserData;
pub use get_user_tags::GetUserTags;
pub use get_users::GetUsers;
pub use get_webhook::GetWebhook;
pub use get_whatsapp_template::GetWhatsAppTemplate;
pub use heartbeat::Heartbeat;
pub use redeliver_events::RedeliverEvents;
pub use reset_token::ResetToken;
pub use revoke_api_key::RevokeApiKey;
pub use rotate_webhook_secret::RotateWebhookSecret;
pub use send_message::SendMessage;
pub use send_sms_message::SendSMSMessage;
pub use send_text_message::SendTextMessage;
pub use send_whatsapp_template::SendWhatsAppTemplate;
pub use set_agent_password::SetAgentPassword;
pub use set_route::SetRoute;
pub use set_user_data::SetUserData;
pub use set_user_email::SetUserEmail;
pub use set_user_name::SetUserName;
pub use set_user_notes::SetUserNotes;
pub use set_user_phone::SetUserPhone;
pub use set_user_tag::SetUserTag;
pub use set_webhook::SetWebhook;
pub use simulate_inbound::SimulateInbound;
pub use update_bot::UpdateBot;
pub use upsert_user::UpsertUser;

use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::reply::{RateInfo, Reply};
use std::future::Future;

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
    UpsertUser(Box<UpsertUser>),
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
    SendWhatsAppTemplate(Box<SendWhatsAppTemplate>),
    /// `GetWhatsAppTemplate` (reference).
    GetWhatsAppTemplate(GetWhatsAppTemplate),
    /// `SendTextMessage` (reference).
    SendTextMessage(Box<SendTextMessage>),
    /// `SendSMSMessage` (reference, "Commands - Sending Messages").
    SendSMSMessage(Box<SendSMSMessage>),
    /// `GetMessageDetails` (reference).
    GetMessageDetails(GetMessageDetails),
    /// `GetConversation` (reference, "Commands - Conversations").
    GetConversation(GetConversation),
    /// `CreateAgent` (extension).
    CreateAgent(CreateAgent),
    /// `GetAgents` (extension).
    GetAgents(GetAgents),
    /// `RevokeApiKey` (extension: API keys).
    RevokeApiKey(RevokeApiKey),
    /// `SimulateInbound` (extension: sandbox).
    SimulateInbound(Box<SimulateInbound>),
    /// `SetRoute` (extension: routes).
    SetRoute(SetRoute),
    /// `GetRoutes` (extension: routes).
    GetRoutes(GetRoutes),
    /// `DeleteRoute` (extension: routes).
    DeleteRoute(DeleteRoute),
    /// `SendMessage` (reference: start a route for a phone number).
    SendMessage(Box<SendMessage>),
    /// `GetApiKeys` (extension: API keys).
    GetApiKeys(GetApiKeys),
    /// `CreateApiKey` (extension: API keys).
    CreateApiKey(CreateApiKey),
    /// `GetEvents` (extension: polling the event log).
    GetEvents(GetEvents),
    /// `GetOpenConversations` (reference, conversations).
    GetOpenConversations(GetOpenConversations),
    /// `GetConversationsFlat` (reference, conversations).
    GetConversationsFlat(GetConversationsFlat),
    /// `DeleteAgent` (extension, conversations).
    DeleteAgent(DeleteAgent),
    /// `SetAgentPassword` (extension, agent console).
    SetAgentPassword(SetAgentPassword),
    /// `CloseConversation` (extension, conversations).
    CloseConversation(CloseConversation),
    /// `AssignConversation` (extension, conversations).
    AssignConversation(AssignConversation),
    /// `AddConversationNote` (extension, conversations).
    AddConversationNote(AddConversationNote),
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
            "UpsertUser" => Command::UpsertUser(Box::new(UpsertUser::parse(&f)?)),
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
                Command::SendWhatsAppTemplate(Box::new(SendWhatsAppTemplate::parse(&f)?))
            }
            "GetWhatsAppTemplate" => Command::GetWhatsAppTemplate(GetWhatsAppTemplate::parse(&f)?),
            "SendTextMessage" => Command::SendTextMessage(Box::new(SendTextMessage::parse(&f)?)),
            "SendSMSMessage" => Command::SendSMSMessage(Box::new(SendSMSMessage::parse(&f)?)),
            "GetMessageDetails" => Command::GetMessageDetails(GetMessageDetails::parse(&f)?),
            "GetConversation" => Command::GetConversation(GetConversation::parse(&f)?),
            "CreateAgent" => Command::CreateAgent(CreateAgent::parse(&f)?),
            "GetAgents" => Command::GetAgents(GetAgents),
            "RevokeApiKey" => Command::RevokeApiKey(RevokeApiKey::parse(&f)?),
            "SimulateInbound" => Command::SimulateInbound(Box::new(SimulateInbound::parse(&f)?)),
            "SetRoute" => Command::SetRoute(SetRoute::parse(&f)?),
            "GetRoutes" => Command::GetRoutes(GetRoutes),
            "DeleteRoute" => Command::DeleteRoute(DeleteRoute::parse(&f)?),
            "SendMessage" => Command::SendMessage(Box::new(SendMessage::parse(&f)?)),
            "GetApiKeys" => Command::GetApiKeys(GetApiKeys),
            "CreateApiKey" => Command::CreateApiKey(CreateApiKey::parse(&f)?),
            "GetEvents" => Command::GetEvents(GetEvents::parse(&f)?),
            "GetOpenConversations" => {
                Command::GetOpenConversations(GetOpenConversations::parse(&f)?)
            }
            "GetConversationsFlat" => {
                Command::GetConversationsFlat(GetConversationsFlat::parse(&f)?)
            }
            "DeleteAgent" => Command::DeleteAgent(DeleteAgent::parse(&f)?),
            "SetAgentPassword" => Command::SetAgentPassword(SetAgentPassword::parse(&f)?),
            "CloseConversation" => Command::CloseConversation(CloseConversation::parse(&f)?),
            "AssignConversation" => Command::AssignConversation(AssignConversation::parse(&f)?),
            "AddConversationNote" => Command::AddConversationNote(AddConversationNote::parse(&f)?),
            "" => return Err(ApiError::new(ErrorCode::UnknownCommand, "missing cmd")),
            other => {
                return Err(ApiError::new(
                    ErrorCode::UnknownCommand,
                    format!(
                        "unknown command {:?}",
                        crate::reply::truncate(other, crate::reply::MAX_ECHO_CHARS)
                    ),
                ))
            }
        })
    }

    /// The command's name as the protocol spells it (the `cmd` field).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Heartbeat(_) => "heartbeat",
            Command::GetUser(_) => "GetUser",
            Command::GetUsers(_) => "GetUsers",
            Command::SetUserData(_) => "SetUserData",
            Command::SetUserName(_) => "SetUserName",
            Command::SetUserEmail(_) => "SetUserEmail",
            Command::SetUserNotes(_) => "SetUserNotes",
            Command::SetUserPhone(_) => "SetUserPhone",
            Command::GetUserTags(_) => "GetUserTags",
            Command::SetUserTag(_) => "SetUserTag",
            Command::DeleteUserTag(_) => "DeleteUserTag",
            Command::CreateUserTag(_) => "CreateUserTag",
            Command::CreateBot(_) => "CreateBot",
            Command::GetBots(_) => "GetBots",
            Command::UpsertUser(_) => "UpsertUser",
            Command::DeleteUser(_) => "DeleteUser",
            Command::GetUserData(_) => "GetUserData",
            Command::ResetToken(_) => "ResetToken",
            Command::CreateOrganization(_) => "CreateOrganization",
            Command::EnableApi(_) => "EnableApi",
            Command::SetWebhook(_) => "SetWebhook",
            Command::GetWebhook(_) => "GetWebhook",
            Command::DeleteWebhook(_) => "DeleteWebhook",
            Command::RotateWebhookSecret(_) => "RotateWebhookSecret",
            Command::DisableApi(_) => "DisableApi",
            Command::GetDeliveries(_) => "GetDeliveries",
            Command::RedeliverEvents(_) => "RedeliverEvents",
            Command::UpdateBot(_) => "UpdateBot",
            Command::GetWhatsAppTemplate(_) => "GetWhatsAppTemplate",
            Command::SendWhatsAppTemplate(_) => "SendWhatsAppTemplate",
            Command::SendTextMessage(_) => "SendTextMessage",
            Command::SendSMSMessage(_) => "SendSMSMessage",
            Command::GetMessageDetails(_) => "GetMessageDetails",
            Command::GetConversation(_) => "GetConversation",
            Command::CreateAgent(_) => "CreateAgent",
            Command::GetAgents(_) => "GetAgents",
            Command::RevokeApiKey(_) => "RevokeApiKey",
            Command::SimulateInbound(_) => "SimulateInbound",
            Command::SetRoute(_) => "SetRoute",
            Command::GetRoutes(_) => "GetRoutes",
            Command::DeleteRoute(_) => "DeleteRoute",
            Command::SendMessage(_) => "SendMessage",
            Command::GetApiKeys(_) => "GetApiKeys",
            Command::CreateApiKey(_) => "CreateApiKey",
            Command::GetEvents(_) => "GetEvents",
            Command::GetOpenConversations(_) => "GetOpenConversations",
            Command::GetConversationsFlat(_) => "GetConversationsFlat",
            Command::DeleteAgent(_) => "DeleteAgent",
            Command::SetAgentPassword(_) => "SetAgentPassword",
            Command::CloseConversation(_) => "CloseConversation",
            Command::AssignConversation(_) => "AssignConversation",
            Command::AddConversationNote(_) => "AddConversationNote",
        }
    }

    /// Whether the command only reads: it writes nothing and so causes no
    /// event, and runs without an actor scope (which costs an actor value
    /// and a task-local frame per command).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Command::Heartbeat(_)
                | Command::GetUser(_)
                | Command::GetUsers(_)
                | Command::GetUserTags(_)
                | Command::GetBots(_)
                | Command::GetUserData(_)
                | Command::GetWebhook(_)
                | Command::GetDeliveries(_)
                | Command::GetMessageDetails(_)
                | Command::GetConversation(_)
                | Command::GetAgents(_)
                | Command::GetRoutes(_)
                | Command::GetApiKeys(_)
                | Command::GetEvents(_)
                | Command::GetOpenConversations(_)
                | Command::GetConversationsFlat(_)
        )
    }

    /// Whether the command sends a message to a user: it then also spends
    /// the token's send budget (`send_rate_limit`, reference: 10 per
    /// second per token).
    pub fn sends_message(&self) -> bool {
        matches!(
            self,
            Command::SendWhatsAppTemplate(_)
                | Command::SendTextMessage(_)
                | Command::SendSMSMessage(_)
                | Command::SendMessage(_)
        )
    }

    /// Whether an agent's console session may run the command: what an
    /// agent works with — reading users and conversations, answering,
    /// notes, assignment, closing, and editing a user's details. Keys,
    /// bots, webhooks, routes, tag definitions and agents are the CRM's.
    pub fn open_to_agents(&self) -> bool {
        matches!(
            self,
            Command::Heartbeat(_)
                | Command::GetUser(_)
                | Command::SetUserData(_)
                | Command::SetUserName(_)
                | Command::SetUserEmail(_)
                | Command::SetUserNotes(_)
                | Command::SetUserPhone(_)
                | Command::GetUserTags(_)
                | Command::SetUserTag(_)
                | Command::DeleteUserTag(_)
                | Command::GetUserData(_)
                | Command::GetWhatsAppTemplate(_)
                | Command::SendWhatsAppTemplate(_)
                | Command::SendTextMessage(_)
                | Command::SendSMSMessage(_)
                | Command::GetMessageDetails(_)
                | Command::GetConversation(_)
                | Command::GetAgents(_)
                | Command::GetOpenConversations(_)
                | Command::CloseConversation(_)
                | Command::AssignConversation(_)
                | Command::AddConversationNote(_)
        )
    }

    /// Whether the command's `agentEmail` names who acts (sends, notes,
    /// closes), rather than a target or a filter: an agent's session must
    /// name itself there.
    pub fn names_actor(&self) -> bool {
        matches!(
            self,
            Command::SendWhatsAppTemplate(_)
                | Command::SendTextMessage(_)
                | Command::SendSMSMessage(_)
                | Command::CloseConversation(_)
                | Command::AddConversationNote(_)
        )
    }

    /// Runs the command for `caller`. `CreateOrganization` and `EnableApi`
    /// need the admin token, `heartbeat` any token, every other command an
    /// organization's token (1001 otherwise).
    pub async fn apply(self, ctx: &Ctx, caller: &Caller) -> Result<Reply, ApiError> {
        match self.start(ctx, caller) {
            Started::Done(result) => result,
            Started::Later(work) => work.await,
        }
    }

    /// Begins the command for `caller` (see [`Command::apply`]): commands
    /// the store answers at once (reads, `heartbeat`, and a few writes that
    /// never wait) are run now; the others, which await (writes, provider
    /// calls), are returned as boxed work. A read thus costs no future at
    /// all, and the largest state machines are never moved.
    pub fn start<'a>(self, ctx: &'a Ctx, caller: &'a Caller) -> Started<'a> {
        self.begin(ctx, caller)
            .unwrap_or_else(|e| Started::Done(Err(e)))
    }

    fn begin<'a>(self, ctx: &'a Ctx, caller: &'a Caller) -> Result<Started<'a>, ApiError> {
        fn now<'a>(result: Result<Reply, ApiError>) -> Result<Started<'a>, ApiError> {
            Ok(Started::Done(result))
        }
        fn later<'a>(
            work: impl Future<Output = Result<Reply, ApiError>> + Send + 'a,
        ) -> Result<Started<'a>, ApiError> {
            Ok(Started::Later(Box::pin(work)))
        }
        let org = match caller {
            Caller::Org(org) | Caller::Agent(org, _) => Some(org),
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
        // Keys, the token and the organization's API state are the live
        // organization's: a test key cannot change them.
        let needs_live = || match needs_org()? {
            o if o.sandbox => Err(ApiError::new(
                ErrorCode::InvalidToken,
                "a test key cannot manage keys, the token or the organization: use a live key",
            )),
            o => Ok(o),
        };
        let needs_admin = |name: &str| match org {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidToken,
                format!("{name} needs the instance admin token"),
            )),
        };
        match self {
            Command::Heartbeat(c) => now(c.apply()),
            Command::CreateOrganization(c) => {
                needs_admin("CreateOrganization")?;
                later(c.apply(ctx))
            }
            Command::EnableApi(c) => {
                needs_admin("EnableApi")?;
                later(c.apply(ctx))
            }
            Command::GetUser(c) => now(c.apply(ctx, needs_org()?)),
            Command::GetUsers(c) => now(c.apply(ctx, needs_org()?)),
            Command::SetUserData(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetUserName(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetUserEmail(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetUserNotes(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetUserPhone(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetUserTags(c) => now(c.apply(ctx, needs_org()?)),
            Command::SetUserTag(c) => later(c.apply(ctx, needs_org()?)),
            Command::DeleteUserTag(c) => later(c.apply(ctx, needs_org()?)),
            Command::CreateUserTag(c) => later(c.apply(ctx, needs_org()?)),
            Command::CreateBot(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetBots(c) => now(c.apply(ctx, needs_org()?)),
            Command::UpsertUser(c) => later(c.apply(ctx, needs_org()?)),
            Command::DeleteUser(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetUserData(c) => now(c.apply(ctx, needs_org()?)),
            Command::ResetToken(c) => later(c.apply(ctx, needs_live()?)),
            Command::SetWebhook(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetWebhook(c) => now(c.apply(ctx, needs_org()?)),
            Command::DeleteWebhook(c) => later(c.apply(ctx, needs_org()?)),
            Command::RotateWebhookSecret(c) => later(c.apply(ctx, needs_org()?)),
            Command::DisableApi(c) => later(c.apply(ctx, needs_live()?)),
            Command::GetDeliveries(c) => now(c.apply(ctx, needs_org()?)),
            Command::RedeliverEvents(c) => now(c.apply(ctx, needs_org()?)),
            Command::UpdateBot(c) => later(c.apply(ctx, needs_org()?)),
            Command::SendWhatsAppTemplate(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetWhatsAppTemplate(c) => later(c.apply(ctx, needs_org()?)),
            Command::SendTextMessage(c) => later(c.apply(ctx, needs_org()?)),
            Command::SendSMSMessage(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetMessageDetails(c) => now(c.apply(ctx, needs_org()?)),
            Command::GetConversation(c) => now(c.apply(ctx, needs_org()?)),
            Command::CreateAgent(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetAgents(c) => now(c.apply(ctx, needs_org()?)),
            Command::RevokeApiKey(c) => later(c.apply(ctx, needs_live()?)),
            Command::SimulateInbound(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetRoute(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetRoutes(c) => now(c.apply(ctx, needs_org()?)),
            Command::DeleteRoute(c) => later(c.apply(ctx, needs_org()?)),
            Command::SendMessage(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetApiKeys(c) => now(c.apply(ctx, needs_live()?)),
            Command::CreateApiKey(c) => later(c.apply(ctx, needs_live()?)),
            Command::GetEvents(c) => later(c.apply(ctx, needs_org()?)),
            Command::GetOpenConversations(c) => now(c.apply(ctx, needs_org()?)),
            Command::GetConversationsFlat(c) => now(c.apply(ctx, needs_org()?)),
            Command::DeleteAgent(c) => later(c.apply(ctx, needs_org()?)),
            Command::SetAgentPassword(c) => later(c.apply(ctx, needs_live()?)),
            Command::CloseConversation(c) => later(c.apply(ctx, needs_org()?)),
            Command::AssignConversation(c) => later(c.apply(ctx, needs_org()?)),
            Command::AddConversationNote(c) => later(c.apply(ctx, needs_org()?)),
        }
    }
}

/// Whether an agent's console session (`email`) may run `cmd`. Errors:
/// 4102 for a command outside [`Command::open_to_agents`], or one whose
/// `agentEmail` is not the agent itself.
fn agent_may(cmd: &Command, email: &str, env: &Envelope<'_>) -> Result<(), ApiError> {
    let forbidden = |m: String| Err(ApiError::new(ErrorCode::AgentForbidden, m));
    if !cmd.open_to_agents() {
        return forbidden(format!("{} is not open to an agent's session", cmd.name()));
    }
    if cmd.names_actor() {
        let named = env
            .fields()
            .opt_str("agentEmail", ErrorCode::AgentForbidden)?;
        if !named.is_some_and(|n| n.trim().eq_ignore_ascii_case(email)) {
            return forbidden(format!(
                "an agent's session acts as itself: agentEmail must be {email}"
            ));
        }
    }
    Ok(())
}

/// A command begun by [`Command::start`].
pub enum Started<'a> {
    /// The command's result: it had nothing to wait for.
    Done(Result<Reply, ApiError>),
    /// The command's work, boxed: it awaits the store's group commit or a
    /// provider.
    Later(futures_util::future::BoxFuture<'a, Result<Reply, ApiError>>),
}

/// A command admitted by [`execute_now`] that still has work to await.
pub struct Pending<'a> {
    work: futures_util::future::BoxFuture<'a, Result<Reply, ApiError>>,
    /// Who the events it causes name (`None` for a read).
    actor: Option<crate::model::Actor>,
    admitted: Admitted<'a>,
    span: tracing::Span,
}

/// What an admitted command's reply is finished with.
struct Admitted<'a> {
    caller: &'a Caller,
    /// The `cmd` sent, for an error reply.
    cmd: &'a str,
    rate: Option<RateInfo>,
}

impl Admitted<'_> {
    /// The reply to send for `result`: its rate headers, and the sandbox's
    /// `test` flag.
    fn reply(self, result: Result<Reply, ApiError>) -> Reply {
        let mut reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(code = e.code.as_u16(), error = %e.message, "command failed");
                Reply::error(self.cmd, &e)
            }
        };
        reply.rate = reply.rate.or(self.rate);
        if self.caller.sandbox() {
            // Every reply to a test key says so.
            reply.set_field("test", true);
        }
        reply
    }
}

impl Pending<'_> {
    /// Awaits the command's work and returns the reply to send.
    pub async fn finish(self: Box<Self>) -> Reply {
        use tracing::Instrument;
        let Pending {
            work,
            actor,
            admitted,
            span,
        } = *self;
        let result = match actor {
            // Events this command causes name its caller as their actor.
            Some(actor) => {
                crate::model::ACTOR
                    .scope(actor, work)
                    .instrument(span)
                    .await
            }
            None => work.instrument(span).await,
        };
        admitted.reply(result)
    }
}

/// Runs one envelope for an authenticated `caller`: the rate limit (2008),
/// parsing and the command itself, as far as they go without waiting.
/// `Ok` with the reply to send when the command was refused or answered
/// at once (reads, `heartbeat`); `Err` with the work left to await
/// otherwise, whose [`Pending::finish`] gives the reply. A read thus costs
/// no future.
#[tracing::instrument(skip_all, fields(cmd = %env.cmd))]
pub fn execute_now<'a>(
    ctx: &'a Ctx,
    caller: &'a Caller,
    env: &Envelope<'_>,
) -> Result<Reply, Box<Pending<'a>>> {
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
    let mut parsed = Command::parse(env);
    if let (Caller::Agent(_, email), Ok(cmd)) = (caller, &parsed) {
        if let Err(e) = agent_may(cmd, email, env) {
            parsed = Err(e);
        }
    }
    // Heartbeats keep a socket alive; they never count against the budget.
    let heartbeat = matches!(parsed, Ok(Command::Heartbeat(_)));
    let mut rate = match heartbeat {
        true => None,
        false => match ctx.check_rate(caller) {
            Ok(info) => info,
            Err(e) => return Ok(limited(e)),
        },
    };
    // Messages have their own, smaller budget (reference: 10 per second).
    if parsed.as_ref().is_ok_and(Command::sends_message) {
        match ctx.check_send_rate(caller) {
            Ok(Some(info)) => rate = Some(info),
            Ok(None) => {}
            Err(e) => return Ok(limited(e)),
        }
    }
    let name = parsed.as_ref().map_or("", Command::name);
    let (started, actor) = match parsed {
        // Reads write nothing, so cause no event: no actor to name.
        Ok(cmd) if cmd.reads_only() => (cmd.start(ctx, caller), None),
        Ok(cmd) => {
            let actor = caller.actor();
            let started = crate::model::ACTOR.sync_scope(actor.clone(), || cmd.start(ctx, caller));
            (started, Some(actor))
        }
        Err(e) => (Started::Done(Err(e)), None),
    };
    match started {
        Started::Done(result) => Ok(Admitted {
            caller,
            cmd: &env.cmd,
            rate,
        }
        .reply(result)),
        // Boxed: only commands that wait get here, and the reply of those
        // that did not stays the only large value returned. The work does
        // not borrow the request: an error names the command by its own
        // name (the one sent: names are case sensitive).
        Started::Later(work) => Err(Box::new(Pending {
            work,
            actor,
            admitted: Admitted {
                caller,
                cmd: name,
                rate,
            },
            span: tracing::Span::current(),
        })),
    }
}
