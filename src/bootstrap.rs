//! First start and the config file's bots: creates the `default`
//! organization when the store has none, and applies `[[bots]]`.

use crate::bots::{create_or_update, SettingsInput};
use crate::ctx::Ctx;
use crate::model::Org;
use crate::store::StoreError;

/// On first start (no organization yet), creates the organization `default`
/// and returns its token: `bootstrap_token` when configured, else a new
/// random one. The organization is marked "untold" until the start that
/// made it returns ([`told`]): if that start failed before the token was
/// shown, the next start replaces the token (nobody can be using it) and
/// returns the new one. Returns `None` when organizations exist already.
pub async fn bootstrap(ctx: &Ctx) -> Result<Option<String>, StoreError> {
    let token = match &ctx.config.bootstrap_token {
        Some(t) => t.expose().to_string(),
        None => crate::auth::new_token(),
    };
    if !ctx.store.is_empty()? {
        let Some(org) = ctx.store.untold()? else {
            return Ok(None);
        };
        tracing::warn!(
            %org,
            "the token made at the first start was never shown (that start failed): it is replaced, and the new one printed"
        );
        ctx.store
            .replace_token(&org, &crate::auth::hash_token(&token))
            .await?;
        return Ok(Some(token));
    }
    let org = Org {
        id: "default".into(),
        name: "default".into(),
        token_sha256: crate::auth::hash_token(&token),
        created: crate::time::now_iso(),
        disabled: false,
        key: "default".into(),
        sandbox: false,
        last_used: Default::default(),
    };
    ctx.store.create_org(&org).await?;
    ctx.store.mark_untold(&org.id).await?;
    Ok(Some(token))
}

/// The start that bootstrapped returned its token: the mark goes.
pub async fn told(ctx: &Ctx) -> Result<(), StoreError> {
    if ctx.store.untold()?.is_some() {
        ctx.store.clear_untold().await?;
    }
    Ok(())
}

/// Creates or updates the `[[bots]]` of the config file, at start.
/// Errors: an unknown organization, kind or setting, or a bot the store
/// refuses.
pub async fn apply_config_bots(ctx: &Ctx) -> Result<(), String> {
    for b in &ctx.config.bots {
        let what = |e: String| format!("[[bots]] botID {}: {e}", b.bot_id);
        if ctx.store.org(&b.org).map_err(|e| e.to_string())?.is_none() {
            return Err(what(format!("no organization {:?}", b.org)));
        }
        let kind = crate::domain::BotKind::parse(&b.kind)
            .ok_or_else(|| what("kind must be whatsapp, sms, telegram or web".into()))?;
        let settings = SettingsInput::from_config(kind, &b.settings).map_err(what)?;
        create_or_update(ctx, &b.org, b.bot_id, kind, b.name.clone(), settings)
            .await
            .map_err(|e| what(e.message))?;
    }
    Ok(())
}
