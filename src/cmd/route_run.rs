//! The route runner: runs the steps of a [`Route`] for one user, durably.
//!
//! Each step is the same command a CRM would send (`SendTextMessage`,
//! `SetUserTag`, `AssignConversation`, …), applied with the route as its
//! `actor`, so validation, events and callbacks are exactly a command's.
//! After each step the run's position is written; a crash repeats at most
//! the step in progress, and a send repeated that way replays under the
//! run's own idempotency key (`route:{runId}:{step}:{count}`) instead of
//! sending twice. A waiting run keeps a timer (`rnw/`); the user's next
//! inbound message ([`on_reply`]) or the timer ([`fire_timers`]) claims
//! it in one durable write, so exactly one of them continues it.
//!
//! Runs end with the opt-in event `onRouteEnd` (`completed`, `timed_out`,
//! `failed` with `errorCode`, `replaced`).

use super::{Command, Envelope};
use crate::auth::Caller;
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::events::on_route_end;
use crate::model::{Actor, Org, ACTOR};
use crate::reply::Reply;
use crate::routes::{find_label, parse_steps, Action, Route, Run, Step, Wait, MAX_STEPS_PER_RUN};
use crate::time::now_ms;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often waiting runs' timers are checked.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// What a run did first, for `SendMessage`'s reply: the `mid` of its first
/// send, `None` when it waited or ended without sending, or the error
/// that ended it before it sent anything.
pub type First = oneshot::Sender<Result<Option<String>, ApiError>>;

/// The view of organization (or sandbox) `org_id` that the route's
/// commands run as.
fn org_view(ctx: &Ctx, org_id: &str) -> Result<Arc<Org>, ApiError> {
    let live = crate::model::live_id(org_id);
    let mut org = ctx
        .store
        .org(live)?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the organization is gone"))?;
    if live != org_id {
        org.id = org_id.to_string();
        org.sandbox = true;
    }
    Ok(Arc::new(org))
}

/// Applies the command `body` as `org`.
pub(crate) async fn call(ctx: &Ctx, org: &Arc<Org>, body: Value) -> Result<Reply, ApiError> {
    let bytes = serde_json::to_vec(&body).map_err(|_| ApiError::internal())?;
    let env = Envelope::parse(&bytes)?;
    let cmd = Command::parse(&env)?;
    Box::pin(cmd.apply(ctx, &Caller::Org(org.clone()))).await
}

/// Starts `route` for `uid` with `SendMessage`'s `message`: the new run
/// replaces the user's run of that route, if any (`onRouteEnd` replaced),
/// in one durable write; then runs in the background. `first` learns what
/// the run did first.
pub async fn start(
    ctx: &Ctx,
    org: &str,
    uid: &str,
    route: &Route,
    message: &str,
    first: Option<First>,
) -> Result<Run, ApiError> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let run = Run {
        run_id: format!("run_{}", hex::encode(id)),
        org: org.to_string(),
        uid: uid.to_string(),
        route: route.name.clone(),
        pc: 0,
        steps_run: 0,
        message: message.to_string(),
        wait: None,
        started_ms: now_ms(),
    };
    ACTOR
        .scope(Actor::route(&route.name), async {
            ctx.store
                .write(org, |tx| {
                    let old = tx.store().run(org, uid, &route.name)?;
                    if let Some(old) = &old {
                        tx.emit(on_route_end(old, "replaced", None))?;
                    }
                    tx.put_run(old.as_ref(), &run);
                    Ok::<_, ApiError>(())
                })
                .await
        })
        .await?;
    ctx.tasks.spawn(drive(ctx.clone(), run.clone(), first));
    Ok(run)
}

/// Ends `run` (if it is still the user's run of its route): removes it and
/// emits `onRouteEnd` with `outcome`.
async fn end(ctx: &Ctx, run: &Run, outcome: &str, error: Option<&ApiError>) {
    let error = error.map(|e| (e.code.as_u16(), e.message.as_str()));
    let result = ctx
        .store
        .write(&run.org, |tx| {
            match tx.store().run(&run.org, &run.uid, &run.route)? {
                Some(now) if now.run_id == run.run_id => {
                    tx.delete_run(&now);
                    tx.emit(on_route_end(&now, outcome, error))?;
                }
                _ => {}
            }
            Ok::<_, ApiError>(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(run = %run.run_id, error = %e, "ending a route run failed");
    }
}

fn notify(first: &mut Option<First>, what: Result<Option<String>, ApiError>) {
    if let Some(tx) = first.take() {
        let _ = tx.send(what);
    }
}

/// The user's custom data as an object.
fn data_of(ctx: &Ctx, run: &Run) -> Result<Map<String, Value>, ApiError> {
    Ok(match ctx.store.user_data(&run.org, &run.uid)? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    })
}

/// 2001 when the user's open conversation is assigned to an agent.
fn not_with_agent(ctx: &Ctx, run: &Run) -> Result<(), ApiError> {
    match ctx.store.open_conversation(&run.org, &run.uid)? {
        Some(c) if c.agent.is_some() => Err(ApiError::new(
            ErrorCode::ChattingToAgent,
            "user is chatting to an agent, message cannot be sent",
        )),
        _ => Ok(()),
    }
}

/// Runs one step that is not a wait, a branch or an end. Returns the `mid`
/// of a send.
async fn act(
    ctx: &Ctx,
    org: &Arc<Org>,
    route: &Route,
    run: &Run,
    action: &Action,
) -> Result<Option<String>, ApiError> {
    let user = ctx
        .store
        .user(&run.org, &run.uid)?
        .ok_or_else(|| crate::users::unknown_user(&run.uid))?;
    let data = data_of(ctx, run)?;
    let render = |t: &str| crate::routes::render(t, &user, &data, &run.message);
    let idem = format!("route:{}:{}:{}", run.run_id, run.pc, run.steps_run);
    let uid = run.uid.as_str();
    let mid = |r: Reply| r.field("mid").and_then(Value::as_str).map(str::to_string);
    match action {
        Action::SendText(text) => {
            not_with_agent(ctx, run)?;
            let body = json!({"cmd": "SendTextMessage", "uid": uid, "message": render(text), "idempotencyKey": idem});
            Ok(mid(paced(ctx, org, body).await?))
        }
        Action::SendTemplate(name, language, parameters) => {
            not_with_agent(ctx, run)?;
            let parameters: Vec<Value> = parameters
                .iter()
                .map(|p| json!({"type": "text", "text": render(p)}))
                .collect();
            let body = json!({"cmd": "SendWhatsAppTemplate", "botID": route.bot_id,
                "phone": user.user.phone, "templateName": name, "language": language,
                "parameters": parameters, "idempotencyKey": idem});
            Ok(mid(paced(ctx, org, body).await?))
        }
        Action::SetData(keys) => {
            let keys: Map<String, Value> = keys
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), Value::String(render(s))),
                    v => (k.clone(), v.clone()),
                })
                .collect();
            call(
                ctx,
                org,
                json!({"cmd": "SetUserData", "uid": uid, "data": keys}),
            )
            .await?;
            Ok(None)
        }
        Action::AddTag(tag) => {
            call(
                ctx,
                org,
                json!({"cmd": "SetUserTag", "uid": uid, "tag": tag}),
            )
            .await?;
            Ok(None)
        }
        Action::RemoveTag(tag) => {
            call(
                ctx,
                org,
                json!({"cmd": "DeleteUserTag", "uid": uid, "tag": tag}),
            )
            .await?;
            Ok(None)
        }
        Action::AssignAgent(who) => {
            let email = if who == "round_robin" {
                round_robin(ctx, &run.org).await?
            } else {
                who.clone()
            };
            let body = json!({"cmd": "AssignConversation", "uid": uid, "agentEmail": email});
            call(ctx, org, body).await?;
            Ok(None)
        }
        Action::CloseConversation => {
            call(ctx, org, json!({"cmd": "CloseConversation", "uid": uid})).await?;
            Ok(None)
        }
        Action::Webhook { url, save_as } => {
            let reply = post_webhook(ctx, url, &user, &data, &route.name).await?;
            if let (Some(key), Some(obj @ Value::Object(_))) = (save_as, reply) {
                let body = json!({"cmd": "SetUserData", "uid": uid, "data": {key.as_str(): obj}});
                call(ctx, org, body).await?;
            }
            Ok(None)
        }
        Action::WaitForReply { .. } | Action::Branch { .. } | Action::End => Ok(None),
    }
}

/// Most times a route's send waits out the per-phone rate limit.
const PACING_ATTEMPTS: usize = 20;

/// Applies a send, waiting out the per-phone rate limit (2007: the
/// reference's one message per second to a number) as long as it asks,
/// so consecutive send steps are paced rather than failed.
async fn paced(ctx: &Ctx, org: &Arc<Org>, body: Value) -> Result<Reply, ApiError> {
    let mut attempts = 0;
    loop {
        match call(ctx, org, body.clone()).await {
            Err(e) if e.code == ErrorCode::PhoneRateLimited && attempts < PACING_ATTEMPTS => {
                attempts += 1;
                let wait = e.retry_after.unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown.cancelled() => return Err(e),
                }
            }
            other => return other,
        }
    }
}

/// The next agent of `org` in turn (by `aid`), durably advancing the turn.
/// Error: 2002 when the organization has no agent.
async fn round_robin(ctx: &Ctx, org: &str) -> Result<String, ApiError> {
    ctx.store
        .write(org, |tx| {
            let mut agents = tx.store().agents(org)?;
            if agents.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::UnknownAgent,
                    "round_robin: the organization has no agents",
                ));
            }
            agents.sort_by_key(|a| a.aid);
            let turn = tx.store().round_robin(org)?;
            tx.put_round_robin(turn.wrapping_add(1));
            Ok(agents[(turn % agents.len() as u64) as usize].email.clone())
        })
        .await
}

/// POSTs `{user, data, route}` to `url` through the SSRF-guarded client
/// (`webhook_timeout`). Returns the reply's JSON, if any. Errors: 1017 a
/// refused URL, 2003 no 2xx answer.
async fn post_webhook(
    ctx: &Ctx,
    url: &str,
    user: &crate::model::UserRecord,
    data: &Map<String, Value>,
    route: &str,
) -> Result<Option<Value>, ApiError> {
    let url = crate::net::check_url(url, ctx.config.allow_private_webhooks)
        .map_err(|why| ApiError::new(ErrorCode::InvalidJson, format!("webhook step: {why}")))?;
    let client = crate::net::guarded_client(&ctx.config, ctx.config.webhook_timeout);
    let body = json!({"user": user.user, "data": data, "route": route});
    let failed = |why: String| ApiError::new(ErrorCode::Timeout, format!("webhook step: {why}"));
    let res = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| failed(crate::net::error_chain(&e)))?;
    if !res.status().is_success() {
        return Err(failed(format!("HTTP {}", res.status().as_u16())));
    }
    Ok(res.json::<Value>().await.ok())
}

/// Runs `run` from its position until it waits or ends.
/// (Boxed as `Send`: a route's command may start a route.)
pub fn drive(
    ctx: Ctx,
    run: Run,
    first: Option<First>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let actor = Actor::route(&run.route);
    Box::pin(ACTOR.scope(actor, drive_inner(ctx, run, first)))
}

async fn drive_inner(ctx: Ctx, mut run: Run, mut first: Option<First>) {
    let org = match org_view(&ctx, &run.org) {
        Ok(o) => o,
        Err(e) => {
            notify(&mut first, Err(e));
            return;
        }
    };
    loop {
        // Replaced or ended meanwhile: nothing more to do.
        match ctx.store.run(&run.org, &run.uid, &run.route) {
            Ok(Some(now)) if now.run_id == run.run_id => run = now,
            _ => return notify(&mut first, Ok(None)),
        }
        let (route, steps) = match ctx.store.route(&run.org, &run.route) {
            Ok(Some(r)) => match parse_steps(&r.steps) {
                Ok(steps) => (r, steps),
                Err(e) => return stop(&ctx, &run, &mut first, e).await,
            },
            Ok(None) => {
                let e = ApiError::new(ErrorCode::UnknownRoute, "the route was deleted");
                return stop(&ctx, &run, &mut first, e).await;
            }
            Err(e) => return stop(&ctx, &run, &mut first, e.into()).await,
        };
        if run.steps_run >= MAX_STEPS_PER_RUN {
            let e = ApiError::new(
                ErrorCode::UnknownRoute,
                format!("the run stopped after {MAX_STEPS_PER_RUN} steps (a loop?)"),
            );
            return stop(&ctx, &run, &mut first, e).await;
        }
        let Some(Step { action, .. }) = steps.get(run.pc) else {
            end(&ctx, &run, "completed", None).await;
            return notify(&mut first, Ok(None));
        };
        let mut next = run.pc + 1;
        match action {
            Action::End => {
                end(&ctx, &run, "completed", None).await;
                return notify(&mut first, Ok(None));
            }
            Action::Branch {
                cond,
                then,
                otherwise,
            } => {
                let data = match data_of(&ctx, &run) {
                    Ok(d) => d,
                    Err(e) => return stop(&ctx, &run, &mut first, e).await,
                };
                let target = if cond.holds(&data) { then } else { otherwise };
                if let Some(label) = target {
                    next = find_label(&steps, label).unwrap_or(steps.len());
                }
            }
            Action::WaitForReply { timeout, .. } => {
                let before = run.clone();
                run.wait = Some(Wait {
                    until_ms: now_ms() + (timeout * 1000.0) as i64,
                });
                run.steps_run += 1;
                if let Err(e) = advance(&ctx, &before, &run).await {
                    tracing::error!(run = %run.run_id, error = %e, "a route run could not wait");
                }
                return notify(&mut first, Ok(None));
            }
            action => match act(&ctx, &org, &route, &run, action).await {
                Ok(Some(mid)) => notify(&mut first, Ok(Some(mid))),
                Ok(None) => {}
                Err(e) => return stop(&ctx, &run, &mut first, e).await,
            },
        }
        let before = run.clone();
        run.pc = next;
        run.steps_run += 1;
        match advance(&ctx, &before, &run).await {
            Ok(true) => {}
            Ok(false) => return notify(&mut first, Ok(None)),
            Err(e) => {
                tracing::error!(run = %run.run_id, error = %e, "a route run could not advance");
                return notify(&mut first, Err(e));
            }
        }
    }
}

/// Ends `run` as failed with `e` (unless the gateway is shutting down);
/// `SendMessage` learns the error when nothing was sent yet.
async fn stop(ctx: &Ctx, run: &Run, first: &mut Option<First>, e: ApiError) {
    if ctx.shutdown.is_cancelled() {
        // Interrupted by shutdown, not failed: the step runs again after
        // the restart.
        return notify(first, Err(e));
    }
    tracing::debug!(run = %run.run_id, route = %run.route, error = %e, "route run failed");
    end(ctx, run, "failed", Some(&e)).await;
    notify(first, Err(e));
}

/// Writes `run`'s new state if it is still `before` (same run, same
/// position). `Ok(false)`: it was replaced or moved meanwhile.
async fn advance(ctx: &Ctx, before: &Run, run: &Run) -> Result<bool, ApiError> {
    ctx.store
        .write(&run.org, |tx| {
            match tx.store().run(&run.org, &run.uid, &run.route)? {
                Some(now) if now == *before => {
                    tx.put_run(Some(&now), run);
                    Ok::<_, ApiError>(true)
                }
                _ => Ok(false),
            }
        })
        .await
}

/// The wait step `run` is paused at.
fn wait_step(ctx: &Ctx, run: &Run) -> Option<(Vec<Step>, Action)> {
    let route = ctx.store.route(&run.org, &run.route).ok().flatten()?;
    let steps = parse_steps(&route.steps).ok()?;
    let action = steps.get(run.pc)?.action.clone();
    matches!(action, Action::WaitForReply { .. }).then_some((steps, action))
}

/// The user `uid` of `org` wrote `text`: every run of theirs waiting for
/// a reply saves it (`save_as`) and continues at `on_reply` (or the next
/// step), each claimed in one durable write.
pub async fn on_reply(ctx: &Ctx, org: &str, uid: &str, text: &str) {
    let runs = match ctx.store.runs_of(org, uid) {
        Ok(r) => r,
        Err(e) => return tracing::error!(error = %e, "listing route runs failed"),
    };
    for run in runs.into_iter().filter(|r| r.wait.is_some()) {
        let Some((
            steps,
            Action::WaitForReply {
                save_as, on_reply, ..
            },
        )) = wait_step(ctx, &run)
        else {
            continue;
        };
        let mut next = run.clone();
        next.wait = None;
        next.pc = match on_reply {
            Some(l) => find_label(&steps, &l).unwrap_or(steps.len()),
            None => run.pc + 1,
        };
        let max = ctx.config.max_user_data_bytes;
        let claimed = ACTOR
            .scope(Actor::route(&run.route), async {
                ctx.store
                    .write(org, |tx| {
                        if tx.store().run(org, uid, &run.route)?.as_ref() != Some(&run) {
                            return Ok::<_, ApiError>(false);
                        }
                        if let Some(key) = &save_as {
                            let mut data = match tx.store().user_data(org, uid)? {
                                Some(Value::Object(m)) => m,
                                _ => Map::new(),
                            };
                            data.insert(key.clone(), Value::String(text.to_string()));
                            let data = Value::Object(data);
                            if serde_json::to_vec(&data).map_or(usize::MAX, |v| v.len()) <= max {
                                tx.put_user_data(uid, &data);
                            }
                        }
                        tx.put_run(Some(&run), &next);
                        Ok(true)
                    })
                    .await
            })
            .await;
        match claimed {
            Ok(true) => {
                ctx.tasks.spawn(drive(ctx.clone(), next, None));
            }
            Ok(false) => {}
            Err(e) => tracing::error!(run = %run.run_id, error = %e, "resuming a route run failed"),
        }
    }
}

/// [`on_reply`] for each `(uid, text)` of a provider webhook or a
/// simulated message ([`crate::messages::Applied::replies`]), in order.
pub async fn on_replies(ctx: &Ctx, org: &str, replies: &[(String, String)]) {
    for (uid, text) in replies {
        on_reply(ctx, org, uid, text).await;
    }
}

/// Continues or ends every run whose wait timed out: at `on_timeout`, or
/// ended `timed_out` without one. Each is claimed in one durable write.
pub async fn fire_timers(ctx: &Ctx) {
    let due = match ctx.store.due_waits(now_ms(), 1000) {
        Ok(d) => d,
        Err(e) => return tracing::error!(error = %e, "listing route timers failed"),
    };
    for (org, uid, route) in due {
        let Ok(Some(run)) = ctx.store.run(&org, &uid, &route) else {
            continue;
        };
        if run.wait.as_ref().is_none_or(|w| w.until_ms > now_ms()) {
            continue;
        }
        let on_timeout = match wait_step(ctx, &run) {
            Some((steps, Action::WaitForReply { on_timeout, .. })) => {
                on_timeout.and_then(|l| find_label(&steps, &l))
            }
            _ => None,
        };
        let Some(pc) = on_timeout else {
            // Only if still waiting: a reply may have claimed it meanwhile.
            let timed_out = ACTOR
                .scope(Actor::route(&route), async {
                    ctx.store
                        .write(&org, |tx| {
                            if tx.store().run(&org, &uid, &route)?.as_ref() != Some(&run) {
                                return Ok::<_, ApiError>(());
                            }
                            tx.delete_run(&run);
                            tx.emit(on_route_end(&run, "timed_out", None))?;
                            Ok(())
                        })
                        .await
                })
                .await;
            if let Err(e) = timed_out {
                tracing::error!(run = %run.run_id, error = %e, "ending a timed-out route run failed");
            }
            continue;
        };
        let mut next = run.clone();
        next.wait = None;
        next.pc = pc;
        match advance(ctx, &run, &next).await {
            Ok(true) => {
                ctx.tasks.spawn(drive(ctx.clone(), next, None));
            }
            Ok(false) => {}
            Err(e) => tracing::error!(run = %run.run_id, error = %e, "a route timer failed"),
        }
    }
}

/// Continues every run that was neither waiting nor ended when the
/// gateway stopped (its step in progress runs again).
pub fn resume_running(ctx: &Ctx) {
    match ctx.store.running_runs() {
        Ok(runs) => {
            for run in runs {
                ctx.tasks.spawn(drive(ctx.clone(), run, None));
            }
        }
        Err(e) => tracing::error!(error = %e, "listing route runs failed"),
    }
}

/// Spawns the timer task of waiting runs (every [`TIMER_TICK`]) and
/// continues interrupted runs.
pub fn spawn(
    ctx: Ctx,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    resume_running(&ctx);
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TIMER_TICK) => {}
            }
            fire_timers(&ctx).await;
        }
    });
}
