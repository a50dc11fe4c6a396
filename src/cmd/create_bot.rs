//! `CreateBot` (extension): a bot is the channel users belong to.
//!
//! # Format
//! `{"cmd":"CreateBot","botID":73,"kind":"telegram","name":"Support"}` →
//! `{"ok":1,"cmd":"CreateBot","data":{"botID":73,"kind":"telegram","name":"Support","created":"…"}}`.
//! Creating an existing `botID` again with the same kind renames it.
//!
//! A bot also takes its channel's settings as top-level fields
//! ([`crate::channel::SETTINGS`]; WhatsApp: `phone_number_id`, `waba_id`,
//! `access_token`, `app_secret`, `verify_token`, `graph_base_url`). Secrets
//! are sealed at rest and never returned: the reply's object named after
//! the kind (`data.whatsapp`) shows `access_token_set`, `app_secret_set`,
//! `verify_token_set` ([`crate::bots::view`]).
//!
//! # Errors
//! 1008 missing botID, 1015 botID not a non-negative integer or already
//! used by another organization (inbound URLs carry only the botID), 1016
//! `kind` missing, not one of whatsapp|sms|telegram|web, different from the
//! existing bot's, or a setting of another kind's channel, 1022 name over
//! 100 characters, 1017 a setting that is not a non-empty string or a URL
//! setting that is not an allowed URL.

use super::Fields;
use crate::bots::{check_name, create_or_update, view, SettingsInput};
use crate::ctx::Ctx;
use crate::domain::BotKind;
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;

/// Create (or rename) a bot.
#[derive(Debug)]
pub struct CreateBot {
    id: u64,
    kind: BotKind,
    name: Option<String>,
    settings: SettingsInput,
}

/// The optional `name` of a bot (1022 over 100 characters).
pub(crate) fn parse_bot_name(f: &Fields) -> Result<Option<String>, ApiError> {
    check_name(f.opt_str("name", ErrorCode::InvalidName)?)
}

/// The channel settings given as top-level fields (1017 when not strings).
pub(crate) fn parse_settings(f: &Fields) -> Result<SettingsInput, ApiError> {
    SettingsInput::read(|name| Ok(f.opt_str(name, ErrorCode::InvalidJson)?.map(str::to_string)))
}

impl CreateBot {
    pub(crate) fn parse(f: &Fields) -> Result<CreateBot, ApiError> {
        let id = f.bot_id()?;
        let kind = f
            .opt_str("kind", ErrorCode::WrongBotKind)?
            .and_then(BotKind::parse)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::WrongBotKind,
                    "kind must be one of whatsapp, sms, telegram, web",
                )
            })?;
        Ok(CreateBot {
            id,
            kind,
            name: parse_bot_name(f)?,
            settings: parse_settings(f)?,
        })
    }

    /// Stores the bot durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot =
            create_or_update(ctx, &org.id, self.id, self.kind, self.name, self.settings).await?;
        Ok(Reply::ok("CreateBot").with_data(view(&bot)))
    }
}
