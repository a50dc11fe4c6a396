//! `SetRoute` (extension, routes): creates or replaces a route, validated
//! as a whole (`protocol/routes.md`).
//!
//! # Format
//! `{"cmd":"SetRoute","name":"welcome","botID":3941,"steps":[{"send_text":{"text":"Hi {{user.first_name}}!"}},{"add_tag":"Lead"}]}`
//! → `{"ok":1,"cmd":"SetRoute","data":{"name":"welcome","botID":3941,"steps":[…],"updated":"…"}}`.
//! Runs in progress continue on the new steps at their position.
//!
//! # Errors
//! 1011 missing name, 1014 name over 256 characters, 1008/1015 botID,
//! 1016 `send_template` on a bot without templates, 1017 `steps` not a
//! valid list (naming the bad step: its kind, placeholders, labels, an
//! unknown tag or agent) or over `max_routes_per_org`.

use super::Fields;
use crate::ctx::Ctx;
use crate::domain::{BotKind, TagName};
use crate::error::{ApiError, ErrorCode};
use crate::model::Org;
use crate::reply::Reply;
use crate::routes::{check_name, parse_steps, Action, Route};
use serde_json::Value;

/// Create or replace a route.
#[derive(Debug)]
pub struct SetRoute {
    name: String,
    bot_id: u64,
    steps: Vec<Value>,
}

impl SetRoute {
    pub(crate) fn parse(f: &Fields) -> Result<SetRoute, ApiError> {
        let name = check_name(f.opt_str("name", ErrorCode::MissingRoute)?)?;
        let bot_id = f.bot_id()?;
        let steps = match f.value("steps") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidJson,
                    "steps must be an array of steps",
                ))
            }
        };
        parse_steps(&steps)?;
        Ok(SetRoute {
            name,
            bot_id,
            steps,
        })
    }

    /// Checks the steps against the organization, then stores the route.
    pub async fn apply(self, ctx: &Ctx, org: &Org) -> Result<Reply, ApiError> {
        let bot = ctx.bot(org, self.bot_id)?;
        let bad =
            |i: usize, m: String| ApiError::new(ErrorCode::InvalidJson, format!("step {i}: {m}"));
        for (i, step) in parse_steps(&self.steps)?.iter().enumerate() {
            match &step.action {
                Action::SendTemplate(..) if bot.kind != BotKind::Whatsapp => {
                    return Err(ApiError::new(
                        ErrorCode::WrongBotKind,
                        format!(
                            "step {i}: bot {} is {}: it has no templates",
                            bot.id,
                            bot.kind.as_str()
                        ),
                    ))
                }
                Action::AddTag(t) | Action::RemoveTag(t) => {
                    let tag = TagName::parse(t).map_err(|e| bad(i, e.message))?;
                    if ctx.store.tag(&org.id, &tag.key())?.is_none() {
                        return Err(bad(
                            i,
                            format!("no tag {t:?} exists (CreateUserTag it first)"),
                        ));
                    }
                }
                Action::AssignAgent(who) if who != "round_robin" => {
                    let known = ctx.store.agent(&org.id, who)?.is_some();
                    if !known {
                        return Err(bad(i, format!("no agent {who:?} exists")));
                    }
                }
                Action::Webhook { url, .. } => {
                    crate::net::check_url(url, ctx.config.allow_private_webhooks)
                        .map_err(|why| bad(i, format!("webhook url: {why}")))?;
                }
                _ => {}
            }
        }
        let route = Route {
            name: self.name,
            bot_id: bot.id,
            steps: self.steps,
            updated: crate::time::now_iso(),
        };
        let max = ctx.config.max_routes_per_org;
        ctx.store
            .write(&org.id, |tx| {
                let routes = tx.store().routes(&org.id)?;
                if routes.len() >= max && !routes.iter().any(|r| r.name == route.name) {
                    return Err(ApiError::over_cap("routes", max, "max_routes_per_org"));
                }
                tx.put_route(&route);
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(Reply::ok("SetRoute").with_data(route))
    }
}

/// Creates or replaces the config file's `[[routes]]` (after its
/// `[[bots]]`), each validated as `SetRoute` validates it. Error: the first
/// route that does not, naming it.
pub async fn apply_config(ctx: &Ctx) -> Result<(), String> {
    for r in &ctx.config.routes {
        let what = |e: String| format!("[[routes]] {:?}: {e}", r.name);
        let org = ctx
            .store
            .org(&r.org)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| what(format!("no organization {:?}", r.org)))?;
        let body = serde_json::json!({"cmd": "SetRoute", "name": r.name, "botID": r.bot_id, "steps": r.steps});
        let bytes = body.to_string();
        let env = super::Envelope::parse(bytes.as_bytes()).map_err(|e| what(e.message))?;
        let set = SetRoute::parse(&env.fields()).map_err(|e| what(e.message))?;
        set.apply(ctx, &org).await.map_err(|e| what(e.message))?;
    }
    Ok(())
}
