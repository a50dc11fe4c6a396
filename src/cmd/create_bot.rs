//! `CreateBot` (extension): a bot is the channel users belong to.
//!
//! # Format
//! `{"cmd":"CreateBot","botID":73,"kind":"telegram","name":"Support"}` →
//! `{"ok":1,"cmd":"CreateBot","data":{"botID":73,"kind":"telegram","name":"Support","created":"…"}}`.
//! Creating an existing `botID` again with the same kind renames it.
//!
//! A WhatsApp bot also takes its Cloud API settings as top-level fields:
//! `phone_number_id`, `waba_id`, `access_token`, `app_secret`,
//! `verify_token`, `graph_base_url` (see [`WhatsAppFields`]). Secrets are
//! sealed at rest and never returned: `data.whatsapp` shows
//! `access_token_set`, `app_secret_set`, `verify_token_set`.
//!
//! # Errors
//! 1008 missing botID, 1015 botID not a non-negative integer or a WhatsApp
//! botID already used by another organization (inbound URLs carry only the
//! botID), 1016 `kind` missing, not one of whatsapp|sms|telegram|web,
//! different from the existing bot's, or WhatsApp fields on another kind,
//! 1022 name over 100 characters, 1017 a WhatsApp field that is not a
//! non-empty string or a `graph_base_url` that is not an allowed URL.

use super::Fields;
use crate::domain::{now_iso, BotKind};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, Org, Sealed, WhatsAppBot};
use crate::reply::Reply;
use crate::store::WriteTx;
use crate::Ctx;

/// Create (or rename) a bot.
#[derive(Debug)]
pub struct CreateBot {
    id: u64,
    kind: BotKind,
    name: Option<String>,
    whatsapp: WhatsAppFields,
}

fn wrong_kind(msg: &str) -> ApiError {
    ApiError::new(ErrorCode::WrongBotKind, msg)
}

/// The optional WhatsApp settings of `CreateBot` and `UpdateBot`.
#[derive(Debug, Default)]
pub(crate) struct WhatsAppFields {
    phone_number_id: Option<String>,
    waba_id: Option<String>,
    graph_base_url: Option<String>,
    access_token: Option<crate::config::Secret>,
    app_secret: Option<crate::config::Secret>,
    verify_token: Option<crate::config::Secret>,
}

impl WhatsAppFields {
    /// Reads the fields; each must be a non-empty string (1017).
    pub(crate) fn parse(f: &Fields) -> Result<Self, ApiError> {
        let get = |name: &str| -> Result<Option<String>, ApiError> {
            match f.opt_str(name, ErrorCode::InvalidJson)? {
                None => Ok(None),
                Some(s) if s.trim().is_empty() || s.len() > 4096 => Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("{name} must be a non-empty string of at most 4096 bytes"),
                )),
                Some(s) => Ok(Some(s.trim().to_string())),
            }
        };
        let secret = |name: &str| get(name).map(|v| v.map(crate::config::Secret::new));
        Ok(WhatsAppFields {
            phone_number_id: get("phone_number_id")?,
            waba_id: get("waba_id")?,
            graph_base_url: get("graph_base_url")?,
            access_token: secret("access_token")?,
            app_secret: secret("app_secret")?,
            verify_token: secret("verify_token")?,
        })
    }

    /// From a `[[bots]]` entry of the config file.
    pub(crate) fn from_config(b: &crate::config::BotConfig) -> Self {
        WhatsAppFields {
            phone_number_id: b.phone_number_id.clone(),
            waba_id: b.waba_id.clone(),
            graph_base_url: b.graph_base_url.clone(),
            access_token: b.access_token.clone(),
            app_secret: b.app_secret.clone(),
            verify_token: b.verify_token.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.phone_number_id.is_none()
            && self.waba_id.is_none()
            && self.graph_base_url.is_none()
            && self.access_token.is_none()
            && self.app_secret.is_none()
            && self.verify_token.is_none()
    }

    /// Applies the given fields to `bot`, sealing secrets. 1016 on a
    /// non-WhatsApp bot.
    pub(crate) fn apply_to(self, ctx: &Ctx, bot: &mut Bot) -> Result<(), ApiError> {
        if self.is_empty() {
            return Ok(());
        }
        if bot.kind != BotKind::Whatsapp {
            return Err(wrong_kind("WhatsApp settings need a whatsapp bot"));
        }
        let w = bot.whatsapp.get_or_insert_with(WhatsAppBot::default);
        let seal = |s: crate::config::Secret| Sealed(ctx.sealer.seal(s.expose()));
        if let Some(v) = self.phone_number_id {
            w.phone_number_id = v;
        }
        if let Some(v) = self.waba_id {
            w.waba_id = v;
        }
        if let Some(v) = self.graph_base_url {
            w.graph_base_url = Some(v);
        }
        if let Some(v) = self.access_token {
            w.access_token = Some(seal(v));
        }
        if let Some(v) = self.app_secret {
            w.app_secret = Some(seal(v));
        }
        if let Some(v) = self.verify_token {
            w.verify_token = Some(seal(v));
        }
        Ok(())
    }
}

/// Stages `bot` after checking that a WhatsApp botID is not another
/// organization's (1015).
fn put_bot_checked(tx: &mut WriteTx<'_>, org: &str, bot: &Bot) -> Result<(), ApiError> {
    if bot.kind == BotKind::Whatsapp {
        if let Some(owner) = tx.store().whatsapp_bot_org(bot.id)? {
            if owner != org {
                return Err(ApiError::new(
                    ErrorCode::UnknownBot,
                    format!(
                        "WhatsApp botID {} is used by another organization on this instance",
                        bot.id
                    ),
                ));
            }
        }
    }
    tx.put_bot(bot);
    Ok(())
}

impl CreateBot {
    pub(crate) fn parse(f: &Fields) -> Result<CreateBot, ApiError> {
        let id = f.bot_id()?;
        let kind = f
            .opt_str("kind", ErrorCode::WrongBotKind)?
            .and_then(BotKind::parse)
            .ok_or_else(|| wrong_kind("kind must be one of whatsapp, sms, telegram, web"))?;
        let name = parse_bot_name(f)?;
        Ok(CreateBot {
            id,
            kind,
            name,
            whatsapp: WhatsAppFields::parse(f)?,
        })
    }

    /// Stores the bot durably and replies with it.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        create_or_update(ctx, &org.id, self.id, self.kind, self.name, self.whatsapp)
            .await
            .map(|bot| Reply::ok("CreateBot").with_data(bot.view()))
    }
}

/// The optional `name` of a bot (1022 over 100 characters).
pub(crate) fn parse_bot_name(f: &Fields) -> Result<Option<String>, ApiError> {
    let name = f.opt_str("name", ErrorCode::InvalidName)?.map(str::trim);
    if name.is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control)) {
        return Err(ApiError::new(
            ErrorCode::InvalidName,
            "bot name: at most 100 characters",
        ));
    }
    Ok(name.map(str::to_string))
}

/// Creates bot `id` of `org` or updates it (same kind only), durably.
pub(crate) async fn create_or_update(
    ctx: &Ctx,
    org: &str,
    id: u64,
    kind: BotKind,
    name: Option<String>,
    whatsapp: WhatsAppFields,
) -> Result<Bot, ApiError> {
    if let Some(url) = &whatsapp.graph_base_url {
        crate::webhook::check_url(url, ctx.config.allow_private_webhooks)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("graph_base_url: {e}")))?;
    }
    ctx.store
        .write(org, |tx| {
            let mut bot = match tx.store().bot(org, id)? {
                Some(existing) if existing.kind != kind => {
                    return Err(wrong_kind(&format!(
                        "bot {id} exists with kind {}",
                        existing.kind.as_str()
                    )))
                }
                Some(existing) => Bot {
                    name: name.unwrap_or(existing.name.clone()),
                    ..existing
                },
                None => Bot {
                    id,
                    kind,
                    name: name.unwrap_or_default(),
                    created: now_iso(),
                    whatsapp: None,
                },
            };
            whatsapp.apply_to(ctx, &mut bot)?;
            put_bot_checked(tx, org, &bot)?;
            Ok(bot)
        })
        .await
}
