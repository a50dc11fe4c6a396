//! The housekeeping task: once a minute (or every `template_refresh`, or
//! half the `conversation_idle_timeout`, when shorter) it closes idle
//! conversations, syncs stale template caches, drops idempotency records
//! older than 24 hours, and shrinks the rate limiters. Stops on shutdown.

use crate::ctx::Ctx;
use crate::time::now_ms;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs the housekeeping on `tracker` until `shutdown`.
pub fn spawn(ctx: Ctx, shutdown: CancellationToken, tracker: &TaskTracker) {
    let idle = ctx.config.conversation_idle_timeout;
    let mut period = ctx.config.template_refresh.min(60.0);
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
            crate::messages::templates::refresh_stale(&ctx).await;
            if let Err(e) = ctx
                .store
                .expire_idempotent(now_ms() - crate::idempotency::TTL_MS)
            {
                tracing::error!(error = %e, "expiring idempotency keys failed");
            }
            ctx.limits.shrink();
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
