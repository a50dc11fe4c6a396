//! `UpdateBot` (extension): changes an existing bot's name or its channel's
//! settings (rotating an access token, setting the app secret).
//!
//! # Format
//! `{"cmd":"UpdateBot","botID":3941,"access_token":"EAAG…"}` →
//! `{"ok":1,"cmd":"UpdateBot","data":{"botID":3941,"kind":"whatsapp",…,"whatsapp":{"phone_number_id":"…","waba_id":"…","graph_base_url":null,"access_token_set":true,"app_secret_set":true,"verify_token_set":true}}}`
//!
//! # Errors
//! 1008 missing botID, 1015 unknown bot, 1016 a setting of another kind's
//! channel, 1022 name, 1017 a setting that is not a non-empty string or a
//! URL setting that is not an allowed URL.

use super::create_bot::{parse_bot_name, parse_settings};
use super::Fields;
use crate::bots::{create_or_update, view, SettingsInput};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::model::Org;
use crate::reply::Reply;

/// Change a bot's name or settings.
#[derive(Debug)]
pub struct UpdateBot {
    id: u64,
    name: Option<String>,
    settings: SettingsInput,
}

impl UpdateBot {
    pub(crate) fn parse(f: &Fields) -> Result<UpdateBot, ApiError> {
        Ok(UpdateBot {
            id: f.bot_id()?,
            name: parse_bot_name(f)?,
            settings: parse_settings(f)?,
        })
    }

    /// Applies the changes durably and replies with the bot.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx.bot(org, self.id)?;
        let bot =
            create_or_update(ctx, &org.id, bot.id, bot.kind, self.name, self.settings).await?;
        Ok(Reply::ok("UpdateBot").with_data(view(&bot)))
    }
}
