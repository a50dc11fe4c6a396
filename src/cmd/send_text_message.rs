//! `SendTextMessage` (reference, "Commands - Sending Messages"): a text to
//! a user by uid. For WhatsApp users it is a free-form message, which Meta
//! accepts only inside the 24-hour customer-service window; outside it the
//! Graph API's re-engagement error surfaces as 3002 with
//! `whatsappErrorCode` 131047.
//!
//! # Format
//! `{"cmd":"SendTextMessage","uid":"3941-wa3-447922029419","message":"Thank you!"}` →
//! `{"ok":1,"cmd":"SendTextMessage","mid":"…"}` (`mid` is an extension, for
//! `GetMessageDetails`). Extensions, as for the sends by phone:
//! `agentEmail`, `webhookURL` (with `webhookPayload`, `webhookHeaders`),
//! `idempotencyKey` / `Idempotency-Key`.
//!
//! # Errors
//! 1025 missing uid, 1010 missing message, 1013 over 2000 characters, 1017
//! idempotency key (409 in use or reused), 1005 unknown user, 1015 its bot
//! is gone, 1016 no channel can send through its bot (kinds without one:
//! telegram, web) or the bot lacks credentials, 1013 over the channel's own
//! limit (SMS: 1600), 2006 the user opted out, 1006 the channel
//! cannot address the user (no valid phone number), 2007, 2008 rate
//! limits, the channel's refusal (WhatsApp: 3002 with `whatsappErrorCode`;
//! SMS: 2005 with `smsErrorCode`), 2003 no answer.

use super::{Fields, SendOptions};
use crate::channel::Content;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::Begin;
use crate::messages::{self, Outbound};
use crate::model::Org;
use crate::reply::Reply;
use crate::users::load_user;
/// Longest `message`, in characters (reference: 2000, error 1013).
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// Send a text to a user.
#[derive(Debug)]
pub struct SendTextMessage {
    uid: String,
    message: String,
    options: SendOptions,
}

impl SendTextMessage {
    pub(crate) fn parse(f: &Fields) -> Result<SendTextMessage, ApiError> {
        let uid = f.uid()?.to_string();
        let message = f.req_str(
            "message",
            ErrorCode::MissingMessage,
            ErrorCode::MissingMessage,
        )?;
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ApiError::new(
                ErrorCode::MessageTooLong,
                "message max characters reached (2000)",
            ));
        }
        Ok(SendTextMessage {
            uid,
            message: message.to_string(),
            options: SendOptions::parse(f)?,
        })
    }

    /// Sends the text through the user's bot's channel.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        const CMD: &str = "SendTextMessage";
        let _guard =
            match ctx
                .idempotency
                .begin(&ctx.store, org, self.options.idem.as_ref(), CMD)?
            {
                Begin::Replay(r) => return Ok(r),
                Begin::Proceed(g) => g,
            };
        let user = load_user(ctx, org, &self.uid)?.user;
        let bot = ctx.bot(org, user.bot_id)?;
        let (channel, settings) = ctx.channel_for(org.sandbox, &bot)?;
        if let Some(max) = channel.max_text_chars() {
            if self.message.chars().count() > max {
                return Err(ApiError::new(
                    ErrorCode::MessageTooLong,
                    format!("message max characters reached ({max} on this channel)"),
                ));
            }
        }
        let to = channel.recipient(&user.uid, &user.phone)?;
        let idem = self.options.idem.clone();
        let (agent_email, callback) = self.options.resolve(ctx, org)?;
        // One message per second per recipient: a phone number, or a chat.
        let key = to
            .phone
            .as_ref()
            .map_or(to.address.as_str(), |p| p.as_str());
        ctx.check_phone_rate(org, key)?;
        let out = Outbound {
            uid: user.uid.clone(),
            to,
            typ: "text".into(),
            msg: self.message.clone(),
            content: Content::Text { body: self.message },
            callback,
            agent_email,
            idem,
            cmd: CMD,
        };
        let ok_reply = |mid: &str| Reply::ok(CMD).with_field("mid", mid);
        messages::send(ctx, org, &bot, (&*channel, &settings), out, ok_reply).await
    }
}
