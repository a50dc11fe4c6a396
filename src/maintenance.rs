//! The housekeeping task: once a minute (or every `template_refresh`, or
//! half the `conversation_idle_timeout`, when shorter) it closes idle
//! conversations, trims each organization's event log to `event_retention`
//! and `event_retention_count` (never past what its webhook still has to
//! deliver), syncs stale template caches, drops idempotency records older
//! than 24 hours, ends expired console sessions, and shrinks the rate limiters. Stops on shutdown.

use crate::ctx::Ctx;
use crate::time::now_ms;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs the housekeeping on `tracker` until `shutdown`.
pub fn spawn(ctx: Ctx, shutdown: CancellationToken, tracker: &TaskTracker) {
    let idle = ctx.config.conversation_idle_timeout;
    let mut period = ctx
        .config
        .template_refresh
        .min(60.0)
        .min(ctx.config.event_retention / 2.0);
    if idle > 0.0 {
        period = period.min(idle / 2.0);
    }
    let period = std::time::Duration::from_secs_f64(period.max(0.01));
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if idle > 0.0 {
                close_idle(&ctx, now_ms() - (idle * 1000.0) as i64).await;
            }
            trim_logs(&ctx);
            crate::messages::templates::refresh_stale(&ctx).await;
            if let Err(e) = ctx
                .store
                .expire_idempotent(now_ms() - crate::idempotency::TTL_MS)
            {
                tracing::error!(error = %e, "expiring idempotency keys failed");
            }
            if let Err(e) = crate::console::expire(&ctx) {
                tracing::error!(error = %e, "expiring console sessions failed");
            }
            ctx.limits.shrink();
            if let Err(e) = ctx.store.shrink_rates() {
                tracing::error!(error = %e, "shrinking shared rate limits failed");
            }
        }
    });
}

/// Closes every open conversation whose last message is older than
/// `before_ms` (`onUserConversation`), each in its own durable write, after
/// checking again under the write lock that it is still idle.
pub async fn close_idle(ctx: &Ctx, before_ms: i64) {
    let idle = match ctx.store.idle_conversations(before_ms) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "listing idle conversations failed");
            return;
        }
    };
    for (org, c) in idle {
        let closed = ctx
            .store
            .write(&org, |tx| {
                tx.track_users();
                match tx.store().open_conversation(&org, &c.uid)? {
                    Some(now) if now.cid == c.cid && now.last_ms < before_ms => {
                        crate::conversations::close(tx, &org, &now, None)?;
                        Ok::<_, crate::store::StoreError>(true)
                    }
                    _ => Ok(false),
                }
            })
            .await;
        match closed {
            Ok(true) => tracing::debug!(%org, cid = %c.cid, "idle conversation closed"),
            Ok(false) => {}
            Err(e) => tracing::error!(%org, error = %e, "closing an idle conversation failed"),
        }
    }
}

/// Events trimmed per organization per pass (bounded work per tick).
const TRIM_BATCH: usize = 10_000;

/// Trims every organization's event log (and its sandbox's): events older than
/// `event_retention` or beyond the last `event_retention_count`, but never
/// one its webhook has not queued yet or still has pending.
pub fn trim_logs(ctx: &Ctx) {
    let orgs = match ctx.store.org_ids() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "listing organizations failed");
            return;
        }
    };
    let cutoff = now_ms() - (ctx.config.event_retention * 1000.0) as i64;
    // Each organization and its sandbox (test keys) keep a log of their own.
    let logs = orgs
        .iter()
        .flat_map(|o| [o.clone(), crate::model::sandbox_id(o)]);
    for org in logs {
        let trim = || -> Result<usize, crate::store::StoreError> {
            let last = ctx.store.last_seq(&org)?;
            let by_count = (last + 1).saturating_sub(ctx.config.event_retention_count);
            let by_time = ctx.store.first_seq_since(&org, cutoff, TRIM_BATCH)?;
            let mut keep_from = by_count.max(by_time);
            if ctx.store.webhook(&org)?.is_some() {
                let queued = ctx.store.delivery_cursor(&org)? + 1;
                let pending = ctx
                    .store
                    .pending_deliveries(&org)?
                    .iter()
                    .map(|&(_, seq, _)| seq)
                    .min()
                    .unwrap_or(u64::MAX);
                keep_from = keep_from.min(queued).min(pending);
            }
            ctx.store.trim_events(&org, keep_from, TRIM_BATCH)
        };
        match trim() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(%org, trimmed = n, "event log trimmed"),
            Err(e) => tracing::error!(%org, error = %e, "trimming the event log failed"),
        }
    }
}
