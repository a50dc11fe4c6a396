//! The template cache behind the reference's `GetWhatsAppTemplate` and
//! `SendWhatsAppTemplate`: each bot's templates as its channel lists them
//! ([`Channel::templates`]), kept in the store, synced every
//! `template_refresh` by the maintenance task and at most once a second on
//! a miss. A template object has at least `name`, `language` and `status`.

use super::send_error;
use crate::channel::{Channel, Settings};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Bot, TemplateCache};
use crate::time::now_ms;
use serde_json::Value;

/// Shortest time between two syncs of one bot's templates caused by a
/// cache miss (periodic syncs are `template_refresh` apart).
pub const MISS_RESYNC_MS: i64 = 1000;

/// Syncs the template cache of `bot` from its channel (all pages). Errors:
/// 1016 the channel has no templates, the channel's refusal (WhatsApp
/// 3002), 2003 no answer.
pub async fn sync(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    (channel, settings): (&dyn Channel, &Settings),
) -> Result<TemplateCache, ApiError> {
    let listing = channel.templates(settings).ok_or_else(|| {
        ApiError::new(
            ErrorCode::WrongBotKind,
            format!(
                "bot {} is {}: it has no templates",
                bot.id,
                bot.kind.as_str()
            ),
        )
    })?;
    let templates = listing.await.map_err(|e| send_error(channel, "", &e))?;
    let cache = TemplateCache {
        synced_ms: now_ms(),
        templates,
    };
    ctx.store.put_templates(org, bot.id, &cache)?;
    Ok(cache)
}

fn matches(t: &Value, name: &str, language: &str) -> bool {
    t.get("name").and_then(Value::as_str) == Some(name)
        && t.get("language")
            .and_then(Value::as_str)
            .is_some_and(|l| l.eq_ignore_ascii_case(language))
}

/// The cached template `name` in `language` of `bot`, syncing the cache
/// when it is empty or misses (at most once a second per bot; never in the
/// sandbox, which reads the live bot's cache). Errors:
/// 3000 the bot has no templates, 3001 none with this name and language,
/// and those of [`sync`].
pub async fn find(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    channel: (&dyn Channel, &Settings),
    name: &str,
    language: &str,
) -> Result<Value, ApiError> {
    // The sandbox never calls a provider: it reads the live bot's cache.
    let sandbox = crate::model::live_id(org) != org;
    let mut cache = match ctx.store.templates(org, bot.id)? {
        Some(c) => c,
        None if sandbox => TemplateCache::default(),
        None => sync(ctx, org, bot, channel).await?,
    };
    let found = |c: &TemplateCache| {
        c.templates
            .iter()
            .find(|t| matches(t, name, language))
            .cloned()
    };
    if !sandbox && found(&cache).is_none() && now_ms() - cache.synced_ms >= MISS_RESYNC_MS {
        cache = sync(ctx, org, bot, channel).await?;
    }
    if cache.templates.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NoTemplates,
            format!("no WhatsApp templates exist for bot {}", bot.id),
        ));
    }
    found(&cache).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTemplate,
            format!("no WhatsApp template {name:?} in language {language:?}"),
        )
    })
}

/// Every approved template of `bot` (`status` `APPROVED`), from the cache
/// (synced when empty; never in the sandbox). Errors: those of [`sync`].
pub async fn approved(
    ctx: &Ctx,
    org: &str,
    bot: &Bot,
    channel: (&dyn Channel, &Settings),
) -> Result<Vec<Value>, ApiError> {
    let sandbox = crate::model::live_id(org) != org;
    let cache = match ctx.store.templates(org, bot.id)? {
        Some(c) => c,
        None if sandbox => TemplateCache::default(),
        None => sync(ctx, org, bot, channel).await?,
    };
    Ok(cache
        .templates
        .into_iter()
        .filter(|t| t.get("status").and_then(Value::as_str) == Some("APPROVED"))
        .collect())
}

/// Syncs the templates of every bot whose channel has templates and whose
/// cache is older than `template_refresh` (the maintenance task).
pub async fn refresh_stale(ctx: &Ctx) {
    let refresh_ms = (ctx.config.template_refresh * 1000.0) as i64;
    let bots = match ctx.store.all_bots() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "listing bots failed");
            return;
        }
    };
    for (org, bot) in bots {
        let Ok((channel, settings)) = ctx.channel_of(&bot) else {
            continue;
        };
        if channel.templates(&settings).is_none() {
            continue;
        }
        let stale = ctx
            .store
            .templates(&org, bot.id)
            .ok()
            .flatten()
            .is_none_or(|c| now_ms() - c.synced_ms >= refresh_ms);
        if stale {
            if let Err(e) = sync(ctx, &org, &bot, (&*channel, &settings)).await {
                tracing::warn!(bot = bot.id, error = %e.message, "template sync failed");
            }
        }
    }
}
