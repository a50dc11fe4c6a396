//! `SendSMSMessage` (reference, "Commands - Sending Messages"): an SMS to a
//! phone number through an SMS bot (Twilio, [`crate::channel::sms`]).
//!
//! # Format
//! `{"cmd":"SendSMSMessage","botID":3941,"phone":"+44151999999","message":"Hello! Your order has been shipped."}`
//! → `{"ok":1,"cmd":"SendSMSMessage","phoneNumber":"+44151999999","countryIso2":"GB","uid":"3941-cms-44151999999","mid":"…"}`.
//!
//! The message is stored (ack 0) before Twilio is called; a new recipient
//! becomes a user (`onUserCreate`). Extensions, as for
//! `SendWhatsAppTemplate`: `webhookURL`, `webhookPayload`, `webhookHeaders`
//! (every ack change is POSTed there), `idempotencyKey` (or the POST
//! `Idempotency-Key` header).
//!
//! # Errors
//! 1008 missing botID, 1015 unknown bot, 1016 not an SMS bot or one without
//! Twilio credentials, 1009/1007/1006 phone, 1010 missing message, 1013
//! over 1600 characters (Twilio's limit for one message), 1017 malformed
//! webhook fields or idempotency key (409 when in use or reused), 2002
//! unknown agent, 2006 the user opted out (nothing is sent; also when
//! Twilio answers 21610, which disables the user), 2007/2008 rate limits,
//! 2005 another Twilio refusal (`smsErrorCode`, `smsErrorDesc`), 2003
//! Twilio did not answer.

use super::{Fields, SendOptions};
use crate::channel::sms::MAX_BODY_CHARS;
use crate::channel::{Content, Recipient};
use crate::ctx::Ctx;
use crate::domain::{make_uid, BotKind, E164};
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::Begin;
use crate::messages::{self, Outbound};
use crate::model::Org;
use crate::reply::Reply;

/// Send an SMS.
#[derive(Debug)]
pub struct SendSMSMessage {
    bot_id: u64,
    phone: E164,
    message: String,
    options: SendOptions,
}

impl SendSMSMessage {
    pub(crate) fn parse(f: &Fields) -> Result<SendSMSMessage, ApiError> {
        let bot_id = f.bot_id()?;
        let phone = E164::parse(
            f.opt_str("phone", ErrorCode::InvalidPhone)?
                .unwrap_or_default(),
        )?;
        let message = f.req_str(
            "message",
            ErrorCode::MissingMessage,
            ErrorCode::MissingMessage,
        )?;
        if message.chars().count() > MAX_BODY_CHARS {
            return Err(ApiError::new(
                ErrorCode::MessageTooLong,
                format!("message max characters reached ({MAX_BODY_CHARS} for an SMS)"),
            ));
        }
        Ok(SendSMSMessage {
            bot_id,
            phone,
            message: message.to_string(),
            options: SendOptions::parse(f)?,
        })
    }

    /// Sends the SMS through the bot.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        const CMD: &str = "SendSMSMessage";
        let _guard =
            match ctx
                .idempotency
                .begin(&ctx.store, org, self.options.idem.as_ref(), CMD)?
            {
                Begin::Replay(r) => return Ok(r),
                Begin::Proceed(g) => g,
            };
        let bot = ctx.bot(org, self.bot_id)?;
        if bot.kind != BotKind::Sms {
            return Err(ApiError::new(
                ErrorCode::WrongBotKind,
                format!(
                    "bot {} is {}: SendSMSMessage needs an sms bot",
                    bot.id,
                    bot.kind.as_str()
                ),
            ));
        }
        let (channel, settings) = ctx.channel_for(org.sandbox, &bot)?;
        let idem = self.options.idem.clone();
        let (agent_email, callback) = self.options.resolve(ctx, org)?;
        ctx.check_phone_rate(org, self.phone.as_str())?;
        let uid = make_uid(bot.id, bot.kind, self.phone.digits());
        let out = Outbound {
            uid: uid.clone(),
            to: Recipient {
                address: self.phone.as_str().to_string(),
                phone: Some(self.phone.clone()),
            },
            typ: "text".into(),
            msg: self.message.clone(),
            content: Content::Text { body: self.message },
            callback,
            agent_email,
            idem,
            cmd: CMD,
        };
        let phone = self.phone.as_str().to_string();
        let country = self.phone.country_iso2().unwrap_or("").to_string();
        let ok_reply = |mid: &str| {
            Reply::ok(CMD)
                .with_field("phoneNumber", phone.clone())
                .with_field("countryIso2", country.clone())
                .with_uid(uid.clone())
                .with_field("mid", mid)
        };
        messages::send(ctx, org, &bot, (&*channel, &settings), out, ok_reply).await
    }
}
