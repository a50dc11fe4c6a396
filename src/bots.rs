//! Bots and their channel settings, as `CreateBot`, `UpdateBot` and the
//! config file's `[[bots]]` change them, and as replies show them.
//!
//! Settings are those of the bot's channel ([`crate::channel::SETTINGS`]):
//! secret ones are sealed with `secrets_key` before they reach the store
//! and shown only as `<name>_set`; URL ones must pass the outbound address
//! policy ([`crate::net::check_url`]).

use crate::channel::{settings_of, SETTINGS};
use crate::ctx::Ctx;
use crate::domain::BotKind;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, Sealed};
use crate::secrets::Secret;
use crate::time::now_iso;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Longest setting value, bytes.
pub const MAX_SETTING_BYTES: usize = 4096;

/// Settings given to a command or in `[[bots]]`, by name; redacted in `Debug`.
#[derive(Debug, Default, Clone)]
pub struct SettingsInput {
    values: BTreeMap<String, Secret>,
}

impl SettingsInput {
    /// Reads every field that names a setting of any channel through
    /// `get(name)`. Each must be a non-empty string of at most 4096 bytes
    /// (1017); surrounding whitespace is dropped.
    pub fn read(
        mut get: impl FnMut(&str) -> Result<Option<String>, ApiError>,
    ) -> Result<SettingsInput, ApiError> {
        let mut values = BTreeMap::new();
        for spec in SETTINGS.iter().flat_map(|(_, specs)| specs.iter()) {
            if spec.derived || values.contains_key(spec.name) {
                continue;
            }
            match get(spec.name)? {
                None => {}
                Some(s) if s.trim().is_empty() || s.len() > MAX_SETTING_BYTES => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidJson,
                        format!(
                            "{} must be a non-empty string of at most {MAX_SETTING_BYTES} bytes",
                            spec.name
                        ),
                    ))
                }
                Some(s) => {
                    values.insert(spec.name.to_string(), Secret::new(s.trim()));
                }
            }
        }
        Ok(SettingsInput { values })
    }

    /// From a `[[bots]]` entry: every key must be a setting of `kind`'s channel.
    pub fn from_config(kind: BotKind, given: &BTreeMap<String, Secret>) -> Result<Self, String> {
        let specs = settings_of(kind);
        for name in given.keys() {
            if !specs.iter().any(|s| s.name == name && !s.derived) {
                return Err(format!(
                    "{name} is not a setting of {} bots (settings: {})",
                    kind.as_str(),
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(SettingsInput {
            values: given.clone(),
        })
    }

    /// Whether no setting was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Adds `(name, value)` pairs a channel derived ([`crate::channel::Channel::configure`]).
    fn derive(&mut self, derived: Vec<(&'static str, String)>) {
        for (name, value) in derived {
            self.values.insert(name.to_string(), Secret::new(value));
        }
    }

    /// Applies the given settings to `bot`, sealing secrets. Errors: 1016 a
    /// setting of another kind's channel, 1017 a URL the instance may not
    /// call.
    pub fn apply_to(self, ctx: &Ctx, bot: &mut Bot) -> Result<(), ApiError> {
        let specs = settings_of(bot.kind);
        for (name, value) in self.values {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                let owner = SETTINGS
                    .iter()
                    .find(|(_, ss)| ss.iter().any(|s| s.name == name))
                    .map_or("another", |(k, _)| k.as_str());
                return Err(ApiError::new(
                    ErrorCode::WrongBotKind,
                    format!("{name}: {owner} settings need a {owner} bot"),
                ));
            };
            if spec.url {
                crate::net::check_url(value.expose(), ctx.config.allow_private_webhooks)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("{name}: {e}")))?;
            }
            if spec.secret {
                bot.secrets
                    .insert(name, Sealed(ctx.sealer.seal(value.expose())));
            } else {
                bot.settings.insert(name, value.expose().to_string());
            }
        }
        Ok(())
    }
}

/// The optional `name` of a bot (1022 over 100 characters).
pub fn check_name(name: Option<&str>) -> Result<Option<String>, ApiError> {
    let name = name.map(str::trim);
    if name.is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control)) {
        return Err(ApiError::new(
            ErrorCode::InvalidName,
            "bot name: at most 100 characters",
        ));
    }
    Ok(name.map(str::to_string))
}

/// Creates bot `id` of `org` or updates it (same kind only), durably. When
/// settings are given, the bot's channel first checks them with its
/// provider and derives its own ([`crate::channel::Channel::configure`]).
/// Errors: 1016 another kind exists under the id or a setting of another
/// kind, 1015 the botID is another organization's, 1017 a bad URL setting,
/// and the channel's refusal.
pub async fn create_or_update(
    ctx: &Ctx,
    org: &str,
    id: u64,
    kind: BotKind,
    name: Option<String>,
    mut settings: SettingsInput,
) -> Result<Bot, ApiError> {
    let wrong_kind = |m: String| ApiError::new(ErrorCode::WrongBotKind, m);
    if let (false, Some(channel)) = (settings.is_empty(), ctx.channels.get(kind)) {
        // The settings as they will be: the stored ones, then the given ones.
        let mut merged = match ctx.store.bot(org, id)? {
            Some(existing) if existing.kind == kind => ctx.settings(&existing)?,
            _ => crate::channel::Settings::new(id, Vec::new()),
        };
        merged.extend(&settings.values);
        let derived = match channel.configure(&merged) {
            Some(check) => check.await?,
            None => Vec::new(),
        };
        settings.derive(derived);
    }
    ctx.store
        .write(org, |tx| {
            let mut bot = match tx.store().bot(org, id)? {
                Some(existing) if existing.kind != kind => {
                    return Err(wrong_kind(format!(
                        "bot {id} exists with kind {}",
                        existing.kind.as_str()
                    )))
                }
                Some(existing) => Bot {
                    name: name.unwrap_or(existing.name.clone()),
                    ..existing
                },
                None if tx.store().bots(org)?.len() >= ctx.config.max_bots_per_org => {
                    return Err(ApiError::over_cap(
                        "bots per organization",
                        ctx.config.max_bots_per_org,
                        "max_bots_per_org",
                    ))
                }
                None => Bot {
                    id,
                    kind,
                    name: name.unwrap_or_default(),
                    created: now_iso(),
                    settings: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                },
            };
            settings.apply_to(ctx, &mut bot)?;
            if let Some(owner) = tx.store().bot_org(id)? {
                if owner != org {
                    return Err(ApiError::new(
                        ErrorCode::UnknownBot,
                        format!("botID {id} is used by another organization on this instance"),
                    ));
                }
            }
            tx.put_bot(&bot);
            Ok(bot)
        })
        .await
}

/// The bot as replies show it (`CreateBot`, `UpdateBot`, `GetBots`):
/// `botID`, `kind`, `name`, `created`, and, once it has settings, an object
/// named after its kind with every setting of its channel — plain ones as
/// values (`null` when unset), secret ones only as `<name>_set`.
pub fn view(bot: &Bot) -> Value {
    let mut v = json!({
        "botID": bot.id,
        "kind": bot.kind,
        "name": bot.name,
        "created": bot.created,
    });
    if !bot.settings.is_empty() || !bot.secrets.is_empty() {
        let mut s = serde_json::Map::new();
        for spec in settings_of(bot.kind) {
            if spec.secret {
                s.insert(
                    format!("{}_set", spec.name),
                    bot.secrets.contains_key(spec.name).into(),
                );
            } else if spec.flag {
                s.insert(
                    spec.name.to_string(),
                    bot.settings
                        .get(spec.name)
                        .is_some_and(|v| v == "true")
                        .into(),
                );
            } else {
                s.insert(
                    spec.name.to_string(),
                    bot.settings
                        .get(spec.name)
                        .map_or(Value::Null, |v| v.clone().into()),
                );
            }
        }
        v[bot.kind.as_str()] = Value::Object(s);
    }
    v
}
