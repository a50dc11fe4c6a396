//! `SimulateInbound` (extension, sandbox only): a customer message arrives
//! at a bot as if its provider had posted it, through the same path a
//! provider webhook takes ([`crate::messages::apply_inbound`]): the user is
//! created (`onUserCreate`), the message stored and its conversation
//! opened, events and callbacks exactly as live.
//!
//! # Format
//! `{"cmd":"SimulateInbound","botID":3941,"phone":"+14155552301","message":"Hi!","name":"Ada"}`
//! (`chatId` instead of `phone` for a Telegram bot) →
//! `{"ok":1,"cmd":"SimulateInbound","uid":"3941-wa3-14155552301","providerMessageId":"wamid.…","test":true}`.
//!
//! # Errors
//! 1001 with a live key (the sandbox only: a live bot's users are real
//! customers), 1008/1015 botID, 1016 a bot kind no channel serves,
//! 1009/1007/1006 phone, 1017 `chatId` not an integer or missing for a
//! Telegram bot, 1010 missing message, 1013 over 4096 characters.

use super::Fields;
use crate::channel::{Inbound, InboundMessage, Profile, Recipient};
use crate::ctx::Ctx;
use crate::domain::{make_uid, BotKind, E164};
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use serde_json::Value;

/// The longest simulated message, in characters (Telegram's limit, the
/// largest of the channels').
pub const MAX_CHARS: usize = 4096;

/// Where the simulated message comes from.
#[derive(Debug)]
enum From {
    Phone(E164),
    Chat(i64),
}

/// Simulate a customer message (sandbox).
#[derive(Debug)]
pub struct SimulateInbound {
    bot_id: u64,
    from: From,
    message: String,
    name: String,
}

impl SimulateInbound {
    pub(crate) fn parse(f: &Fields) -> Result<SimulateInbound, ApiError> {
        let bot_id = f.bot_id()?;
        let from = match f.value("chatId") {
            Some(v) => {
                let chat = match &v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                };
                From::Chat(chat.ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidJson, "chatId must be an integer")
                })?)
            }
            None => From::Phone(E164::parse(
                f.opt_str("phone", ErrorCode::InvalidPhone)?
                    .unwrap_or_default(),
            )?),
        };
        let message = f.req_str(
            "message",
            ErrorCode::MissingMessage,
            ErrorCode::MissingMessage,
        )?;
        if message.chars().count() > MAX_CHARS {
            return Err(ApiError::new(
                ErrorCode::MessageTooLong,
                format!("message max characters reached ({MAX_CHARS})"),
            ));
        }
        let name = f
            .opt_str("name", ErrorCode::InvalidJson)?
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(SimulateInbound {
            bot_id,
            from,
            message: message.to_string(),
            name,
        })
    }

    /// Applies the message durably through the inbound path.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        if !org.sandbox {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "SimulateInbound needs a test key (CreateApiKey with mode test)",
            ));
        }
        let bot = ctx.bot(org, self.bot_id)?;
        let (channel, _) = ctx.channel_for(true, &bot)?;
        let (from, phone) = match (bot.kind, &self.from) {
            (BotKind::Telegram, From::Chat(chat)) => (chat.to_string(), None),
            (BotKind::Telegram, From::Phone(_)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "a Telegram bot's customer is a chatId",
                ))
            }
            (_, From::Phone(p)) => (p.digits().to_string(), Some(p.as_str().to_string())),
            (_, From::Chat(_)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidPhone,
                    format!("a {} bot's customer is a phone", bot.kind.as_str()),
                ))
            }
        };
        let to = Recipient {
            address: from.clone(),
            phone: None,
        };
        let provider_id = channel.sandbox_id(&to, "");
        let message = InboundMessage {
            from: from.clone(),
            phone,
            profile: Profile {
                name: self.name,
                current: bot.kind == BotKind::Telegram,
                ..Profile::default()
            },
            provider_id: provider_id.clone(),
            at_ms: Some(crate::time::now_ms()),
            typ: "text".into(),
            text: self.message,
            media_id: None,
            reply_to: None,
        };
        let applied = crate::messages::apply_inbound(
            ctx,
            &org.id,
            &bot,
            &*channel,
            &[Inbound::Message(message)],
        )
        .await?;
        // As after a provider's webhook: waiting route runs resume.
        super::route_run::on_replies(ctx, &org.id, &applied.replies).await;
        Ok(Reply::ok("SimulateInbound")
            .with_field("uid", make_uid(bot.id, bot.kind, &from))
            .with_field("providerMessageId", provider_id))
    }
}
