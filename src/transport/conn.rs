//! What a connection may hold: admission and time.
//!
//! - **Admission**: a connection is served with one of `max_connections`
//!   permits (and, with `max_connections_per_ip`, one of its address's).
//!   At the cap a new connection is not queued: it gets one of a few
//!   reserve slots that answer only `GET /healthz` and `GET /metrics` (503
//!   to anything else), or is closed at once when those are taken too. The
//!   log says so once per interval, not per connection.
//! - **Time**: every phase of a connection is bounded. A new connection
//!   must send its request's line and headers within
//!   `header_read_timeout` of its accept; on a kept-alive connection, the
//!   next request's first byte within `keepalive_timeout`, and its headers
//!   within `header_read_timeout` of that byte. (Bodies are bounded by the
//!   handlers, `body_read_timeout`; sockets by their own timers.) A
//!   connection that overstays its phase is closed.

use bytes::{Buf, Bytes};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots kept for `/healthz` and `/metrics` when the cap is reached.
pub const RESERVE: usize = 8;

/// Seconds between two "at capacity" warnings.
const WARN_EVERY_MS: i64 = 10_000;

/// Live connections per client address.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// The admission state of the listener.
pub struct Admission {
    permits: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    per_ip: PerIp,
    per_ip_max: usize,
    last_warn_ms: AtomicI64,
}

/// How a connection was admitted.
pub enum Admitted {
    /// Served in full; the permit is held for its life.
    Full(Slot),
    /// At the cap: served for health and metrics only.
    Reserve(Slot),
    /// Closed at once.
    Refused,
}

/// A connection's hold on its permits; released when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: Option<(IpAddr, PerIp)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((ip, map)) = &self.ip {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    /// Admission for `max` connections in all and `per_ip` per address (0:
    /// unlimited).
    pub fn new(max: usize, per_ip: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max)),
            reserve: Arc::new(Semaphore::new(RESERVE)),
            per_ip: Arc::default(),
            per_ip_max: per_ip,
            last_warn_ms: AtomicI64::new(0),
        }
    }

    /// Admits a connection from `ip`, never waiting.
    pub fn admit(&self, ip: IpAddr) -> Admitted {
        let over_ip = self.per_ip_max > 0 && {
            let map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&ip).copied().unwrap_or(0) >= self.per_ip_max
        };
        if !over_ip {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                let ip = (self.per_ip_max > 0).then(|| {
                    *self
                        .per_ip
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(ip)
                        .or_default() += 1;
                    (ip, self.per_ip.clone())
                });
                return Admitted::Full(Slot { _permit: p, ip });
            }
        }
        let now = crate::time::now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now - last >= WARN_EVERY_MS
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if over_ip {
                tracing::warn!(%ip, "max_connections_per_ip reached: new connections from this address are refused");
            } else {
                tracing::warn!("max_connections reached: new connections are refused (health and metrics still answer)");
            }
        }
        match self.reserve.clone().try_acquire_owned() {
            Ok(p) => Admitted::Reserve(Slot {
                _permit: p,
                ip: None,
            }),
            Err(_) => Admitted::Refused,
        }
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const DONE: u8 = 3;

/// Where a connection is: idle (waiting for a request), reading a
/// request's head, busy with a request, or handed over (upgraded) — and
/// since when, and whether it has served a request yet.
///
/// Phase changes only note the time; nothing wakes the watchdog
/// ([`Watch::overstayed`]). It sleeps until the deadline of the phase it
/// last saw, but never longer than `header_read_timeout`, then reads the
/// phase again: a request that starts while it sleeps through an idle
/// spell is thus seen before its head's deadline. Under steady traffic it
/// wakes about once per `header_read_timeout` (it was woken by each
/// request's first bytes: ~1.5k instructions per POST under callgrind).
pub struct Watch {
    phase: AtomicU8,
    since_ms: AtomicI64,
    served: AtomicU8,
    header_ms: i64,
    keepalive_ms: i64,
}

impl Watch {
    /// A watch of a connection accepted now, with the connection's
    /// `header_read_timeout` and `keepalive_timeout`.
    pub fn new(header: Duration, keepalive: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicI64::new(crate::time::mono_ms()),
            served: AtomicU8::new(0),
            header_ms: header.as_millis() as i64,
            keepalive_ms: keepalive.as_millis() as i64,
        })
    }

    fn set(&self, phase: u8) {
        self.since_ms
            .store(crate::time::mono_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// A request's head was read: the handler runs. (No time is noted: a
    /// busy connection has no deadline of its own.)
    pub fn busy(&self) {
        self.served.store(1, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Release);
    }

    /// The handler answered; the connection waits for the next request.
    pub fn idle(&self) {
        if self.phase.load(Ordering::Acquire) != DONE {
            self.set(IDLE);
        }
    }

    /// The connection was upgraded (WebSocket): its session bounds it now.
    pub fn handed_over(&self) {
        self.set(DONE);
    }

    fn saw_bytes(&self) {
        if self
            .phase
            .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.since_ms
                .store(crate::time::mono_ms(), Ordering::Relaxed);
        }
    }

    /// Resolves when the connection overstays its phase; says which. A
    /// request in progress is re-checked every `header_read_timeout`.
    pub async fn overstayed(&self) -> &'static str {
        loop {
            let now = crate::time::mono_ms();
            let since = self.since_ms.load(Ordering::Relaxed);
            let (due, what) = match self.phase.load(Ordering::Acquire) {
                IDLE if self.served.load(Ordering::Relaxed) == 0 => {
                    (since + self.header_ms, Some("no request"))
                }
                IDLE => (since + self.keepalive_ms, Some("idle keep-alive")),
                HEAD => (since + self.header_ms, Some("slow request headers")),
                BUSY => (now + self.header_ms, None),
                _ => return std::future::pending().await,
            };
            if let (Some(what), true) = (what, due <= now) {
                return what;
            }
            let wait = (due - now).clamp(1, self.header_ms.max(1));
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
}

/// A connection's IO that tells its [`Watch`] when a request's bytes start,
/// and serves first what was read from it and put back
/// ([`Watched::unread`], see [`super::socket::sniff`]).
pub struct Watched<I> {
    io: I,
    watch: Arc<Watch>,
    head: Bytes,
}

impl<I> Watched<I> {
    /// Wraps `io`.
    pub fn new(io: I, watch: Arc<Watch>) -> Watched<I> {
        Watched {
            io,
            watch,
            head: Bytes::new(),
        }
    }

    /// Puts `bytes`, read from the stream, back in front of what it reads
    /// next (which they must precede).
    pub fn unread(&mut self, bytes: Bytes) {
        debug_assert!(self.head.is_empty(), "one put-back at a time");
        self.head = bytes;
    }

    /// The stream, unwatched (a WebSocket session bounds its own time),
    /// and the bytes put back that were not read again.
    pub fn into_parts(self) -> (I, Bytes) {
        (self.io, self.head)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            // Already seen by the watch when first read.
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.saw_bytes();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// File descriptors kept for the store, outbound HTTP and the listener.
pub const HEADROOM: u64 = 256;

/// Raises the process's open-file soft limit to its hard limit and returns
/// how many connections fit under it: `configured`, or with 0 as many as
/// fit (at most 20,000). Errors: a configured value that does not fit.
pub fn connection_budget(configured: usize) -> Result<usize, String> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = limit.saturating_sub(HEADROOM + RESERVE as u64) as usize;
    match configured {
        0 => Ok(room.clamp(1, 20_000)),
        n if n <= room => Ok(n),
        n => Err(format!(
            "max_connections {n} does not fit the open-file limit {limit}: at most {room} \
             (the store, outbound HTTP and the listener need {} more); raise the limit \
             (ulimit -n) or lower max_connections",
            HEADROOM + RESERVE as u64
        )),
    }
}
