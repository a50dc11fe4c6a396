//! `GetMessageDetails` (reference): the delivery status of a sent message.
//!
//! # Format
//! `{"cmd":"GetMessageDetails","mid":"6462d3d8c8b0b08fddc34ca8"}` →
//! `{"ok":1,"cmd":"GetMessageDetails","uid":"3941-wa3-447922029419","botID":3941,"ack":3}`;
//! a failed message (ack -1/-2) adds `whatsappErrorCode` and
//! `whatsappErrorDesc` (extension). Acks: [`crate::messages`].
//!
//! # Errors
//! 1020 missing or unknown mid.

use super::Fields;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// Read a message's ack.
#[derive(Debug)]
pub struct GetMessageDetails {
    mid: String,
}

impl GetMessageDetails {
    pub(crate) fn parse(f: &Fields) -> Result<GetMessageDetails, ApiError> {
        Ok(GetMessageDetails {
            mid: f
                .req_str("mid", ErrorCode::UnknownMessage, ErrorCode::UnknownMessage)?
                .trim()
                .to_string(),
        })
    }

    /// Replies with the message's uid, bot and ack.
    pub fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let m = ctx.store.message(&org.id, &self.mid)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownMessage,
                format!("unknown message id {:?}", self.mid),
            )
        })?;
        let mut r = Reply::ok("GetMessageDetails")
            .with_uid(m.uid)
            .with_field("botID", m.bot_id)
            .with_field("ack", m.ack);
        if let (Some(code), Some(desc)) = (m.error_code, m.error_desc) {
            // Named after the channel of the message's bot (WhatsApp:
            // whatsappErrorCode, whatsappErrorDesc).
            let kind = ctx.store.bot(&org.id, m.bot_id)?.map(|b| b.kind);
            if let Some(channel) = kind.and_then(|k| ctx.channels.get(k)) {
                let (code_field, desc_field) = channel.error_fields();
                r = r.with_field(code_field, code).with_field(desc_field, desc);
            }
        }
        Ok(r)
    }
}
