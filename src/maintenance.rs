//! The housekeeping task: once a minute (or every `template_refresh` when
//! shorter) it syncs stale template caches, drops idempotency records older
//! than 24 hours, and shrinks the rate limiters. Stops on shutdown.

use crate::ctx::Ctx;
use crate::time::now_ms;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs the housekeeping on `tracker` until `shutdown`.
pub fn spawn(ctx: Ctx, shutdown: CancellationToken, tracker: &TaskTracker) {
    let period = std::time::Duration::from_secs_f64(ctx.config.template_refresh.min(60.0));
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
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
