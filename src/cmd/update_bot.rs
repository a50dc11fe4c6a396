//! `UpdateBot` (extension): changes an existing bot's name or WhatsApp
//! Cloud API settings (rotating an access token, setting the app secret).
//!
//! # Format
//! `{"cmd":"UpdateBot","botID":3941,"access_token":"EAAG…"}` →
//! `{"ok":1,"cmd":"UpdateBot","data":{"botID":3941,"kind":"whatsapp",…,"whatsapp":{"phone_number_id":"…","waba_id":"…","graph_base_url":null,"access_token_set":true,"app_secret_set":true,"verify_token_set":true}}}`
//!
//! # Errors
//! 1008 missing botID, 1015 unknown bot, 1016 WhatsApp fields on another
//! kind, 1022 name, 1017 a field that is not a non-empty string or a
//! `graph_base_url` that is not an allowed URL.

use super::create_bot::{create_or_update, parse_bot_name, WhatsAppFields};
use super::Fields;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;
use crate::Ctx;

/// Change a bot's name or settings.
#[derive(Debug)]
pub struct UpdateBot {
    id: u64,
    name: Option<String>,
    whatsapp: WhatsAppFields,
}

impl UpdateBot {
    pub(crate) fn parse(f: &Fields) -> Result<UpdateBot, ApiError> {
        Ok(UpdateBot {
            id: f.bot_id()?,
            name: parse_bot_name(f)?,
            whatsapp: WhatsAppFields::parse(f)?,
        })
    }

    /// Applies the changes durably and replies with the bot.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx.bot(org, self.id)?;
        let bot =
            create_or_update(ctx, &org.id, bot.id, bot.kind, self.name, self.whatsapp).await?;
        Ok(Reply::ok("UpdateBot").with_data(bot.view()))
    }
}
