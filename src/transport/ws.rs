//! The WebSocket transport: `GET /ws`, one session per socket.
//!
//! A session is one `select!` loop over the socket, the organization's bus
//! subscription, kicks from the registry and shutdown. The first frame must be
//! `connect` with a token (reference, "Connect via Websocket"); afterwards
//! commands come without a token and go through [`cmd::execute_now`], and events
//! are written as they come.
//!
//! # Close codes (RFC 6455 §7.4; 4000–4999 are convgate's own)
//! | code | when |
//! |---|---|
//! | 1001 | server shutting down |
//! | 1008 | policy: first frame not `connect` (1019), bad or missing token (1000/1001), too many failed authentications from the address, replaced by a newer socket (1018), token reset, API disabled |
//! | 1007 | a text frame that is not valid UTF-8 (RFC 6455 §8.1) |
//! | 1009 | a message over `max_message_bytes` |
//! | 4000 | no frame for `heartbeat_timeout`, or no `connect` within `connect_timeout` |
//! | 4001 | too slow: more than `socket_queue` events undelivered |

use super::side::Side;
use super::socket::{Socket, Take};
use super::{AppState, ConnInfo, ConnPermit};
use crate::auth::Caller;
use crate::bus::Kick;
use crate::cmd::{self, Envelope};
use crate::error::{ApiError, ErrorCode};
use crate::reply::Reply;
use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use std::borrow::Cow;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::ReusableBoxFuture;
use tracing::Instrument;

/// Close code: server going away (RFC 6455).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: policy violation (RFC 6455).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: invalid frame payload data, e.g. text that is not UTF-8 (RFC 6455).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: message too big (RFC 6455).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: heartbeat timeout (convgate).
pub const CLOSE_IDLE: u16 = 4000;
/// Close code: the socket could not keep up with its events (convgate).
pub const CLOSE_SLOW: u16 = 4001;

/// A WebSocket session's socket.
type WebSocket = WebSocketStream<Socket>;

/// An HTTP/1.1 request to open a WebSocket (RFC 6455 §4.2.1): `GET` with
/// `Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`
/// and a `Sec-WebSocket-Key`. Rejections: 405 (not `GET`), 400 (a header
/// missing or wrong, with `Sec-WebSocket-Version: 13` in the answer when
/// the version is the one at fault, RFC 6455 §4.4), 426 (a connection
/// that cannot be upgraded).
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
            headers.get_all(name).iter().any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        }
        let refuse = |status: StatusCode, why: &'static str| (status, why).into_response();
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket opens with GET",
            ));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Upgrade header did not include 'websocket'",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            let mut r = refuse(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Version header did not include '13'",
            );
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(r);
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key header missing",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Upgrade { key, on_upgrade })
    }
}

/// `GET /ws`: upgrades with the configured message limits.
pub async fn upgrade(
    State(app): State<AppState>,
    ws: Upgrade,
    Extension(info): Extension<ConnInfo>,
) -> Response {
    upgrade_as(app, ws, info, None)
}

/// Upgrades to a session: of a CRM, which authenticates with `connect`'s
/// token (`agent` is `None`), or of an agent's console, already
/// authenticated by its session cookie (`agent` is `(caller, group)`:
/// the session's kick group, see [`crate::console::group`]). Answers 101
/// with `Sec-WebSocket-Accept` (RFC 6455 §4.2.2); the session starts on
/// the connection's own stream once hyper has sent it.
pub fn upgrade_as(
    app: AppState,
    ws: Upgrade,
    info: ConnInfo,
    agent: Option<(Caller, String)>,
) -> Response {
    let max = app.ctx.config.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Commands are small: start from 2 KiB rather than tungstenite's
        // 128 KiB; a larger frame grows the buffer as it needs (scenario M3).
        .read_buffer_size(2048)
        .write_buffer_size(0);
    let ConnInfo { peer, permit, take } = info;
    let accept = tungstenite::handshake::derive_accept_key(ws.key.as_bytes());
    let on_upgrade = ws.on_upgrade;
    tokio::spawn(async move {
        let socket = match on_upgrade.await {
            Ok(upgraded) => open(take, upgraded, config).await,
            Err(e) => return tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        };
        let span = tracing::info_span!("ws", %peer, org = tracing::field::Empty);
        session(socket, app, permit, peer, agent)
            .instrument(span)
            .await
    });
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}

/// The WebSocket over the upgraded connection's own stream, starting with
/// the bytes hyper had already read from it.
async fn open(
    take: Take,
    upgraded: hyper::upgrade::Upgraded,
    config: WebSocketConfig,
) -> WebSocket {
    let (socket, read) = take(upgraded);
    WebSocketStream::from_partially_read(socket, read.to_vec(), Role::Server, Some(config)).await
}

/// What one read from the socket gave.
enum Incoming {
    Text(Utf8Bytes),
    Binary,
    /// A ping or pong: activity, nothing to answer (tungstenite pongs).
    Control,
    TooBig,
    /// A text frame that is not valid UTF-8.
    BadUtf8,
    Closed,
}

async fn recv(socket: &mut WebSocket) -> Incoming {
    use tungstenite::Error;
    match socket.next().await {
        None | Some(Ok(Message::Close(_))) => Incoming::Closed,
        Some(Ok(Message::Text(t))) => Incoming::Text(t),
        Some(Ok(Message::Binary(_))) => Incoming::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Control,
        Some(Err(Error::Capacity(_))) => Incoming::TooBig,
        Some(Err(Error::Utf8(_))) => Incoming::BadUtf8,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "socket read failed");
            Incoming::Closed
        }
    }
}

struct Session {
    socket: WebSocket,
    app: AppState,
    /// `write_timeout`, read once (the setting is seconds as a float).
    write_limit: Duration,
}

/// Why a session ended, for the log.
type End = &'static str;

impl Session {
    /// Sends `msg` within `write_timeout`; `Err` when the socket is gone or stuck.
    async fn send(&mut self, msg: Message) -> Result<(), End> {
        use futures_util::FutureExt;
        let limit = self.write_limit;
        let mut send = std::pin::pin!(self.socket.send(msg));
        // Almost every write completes at once: only a write that has to
        // wait for the peer pays for a timer.
        let done = match (&mut send).now_or_never() {
            Some(r) => Ok(r),
            None => timeout(limit, send).await,
        };
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("write failed"),
            Err(_) => Err("write timed out"),
        }
    }

    async fn reply(&mut self, reply: &Reply) -> Result<(), End> {
        // Built as text: no UTF-8 check on the way out.
        let text = Utf8Bytes::from(reply.to_json());
        self.send(Message::Text(text)).await
    }

    async fn error(&mut self, cmd: &str, e: &ApiError) -> Result<(), End> {
        self.reply(&Reply::error(cmd, e)).await
    }

    /// Sends a close frame, then waits briefly for the peer's close so that
    /// the frame is not lost to a TCP reset. Boxed: it is rare, and keeping
    /// it out of the session's state keeps idle sockets small.
    fn close(
        self,
        code: u16,
        reason: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = End> + Send>> {
        Box::pin(self.close_now(code, reason))
    }

    async fn close_now(mut self, code: u16, reason: &'static str) -> End {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        if self.send(Message::Close(Some(frame))).await.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.socket.next()).await
            {
            }
        }
        reason
    }
}

async fn session(
    socket: WebSocket,
    app: AppState,
    _permit: ConnPermit,
    peer: std::net::SocketAddr,
    agent: Option<(Caller, String)>,
) {
    let _drain = app.tracker.token();
    let write_limit = app.ctx.config.write_timeout();
    let mut s = Session {
        socket,
        app,
        write_limit,
    };
    // The futures below are boxed so that an idle session's own state stays
    // small: thousands of sockets each hold one (scenario M3).
    let (agent, group) = agent.unzip();
    let end = match Box::pin(handshake(&mut s, peer, agent)).await {
        Ok((caller, (events, resume))) => {
            Box::pin(connected(s, caller, group, events, resume)).await
        }
        Err(Some((code, reason))) => s.close(code, reason).await,
        Err(None) => "closed before connect",
    };
    tracing::debug!(end, "socket closed");
}

/// Waits for `connect` and authenticates it (an agent's console session
/// is already authenticated: its `connect` carries no token).
/// `Err(Some(close))` when the socket must be closed with that code,
/// `Err(None)` when it is gone.
async fn handshake(
    s: &mut Session,
    peer: std::net::SocketAddr,
    agent: Option<Caller>,
) -> Result<(Caller, Asks), Option<(u16, &'static str)>> {
    let deadline = Instant::now() + crate::config::Config::secs(s.app.ctx.config.connect_timeout);
    // Pings may come first; anything else that is not a `connect` object
    // gets 1019 (naming the cmd it carried), then the socket is closed.
    let named = loop {
        let incoming = tokio::select! {
            _ = s.app.shutdown.cancelled() => return Err(Some((CLOSE_GOING_AWAY, "server shutting down"))),
            r = tokio::time::timeout_at(deadline, recv(&mut s.socket)) => r,
        };
        match incoming {
            Err(_) => return Err(Some((CLOSE_IDLE, "connect timeout: no connect"))),
            Ok(Incoming::BadUtf8) => return Err(Some((CLOSE_INVALID_DATA, "invalid UTF-8"))),
            Ok(Incoming::Control) => continue,
            Ok(Incoming::TooBig) => return Err(Some((CLOSE_TOO_BIG, "message too big"))),
            Ok(Incoming::Closed) => return Err(None),
            Ok(Incoming::Binary) => break Err(String::new()),
            Ok(Incoming::Text(text)) => match Envelope::parse_str(text.as_str()) {
                Ok(env) if env.cmd == "connect" => {
                    let asks =
                        cmd::connect_events(&env).and_then(|e| Ok((e, cmd::connect_resume(&env)?)));
                    break Ok((env.token.clone().map(Cow::into_owned), asks));
                }
                Ok(env) => break Err(env.cmd.into_owned()),
                Err(_) => break Err(String::new()),
            },
        }
    };
    let (token, asks) = match named {
        Ok(t) => t,
        Err(cmd) => {
            let e = ApiError::new(
                ErrorCode::ConnectExpected,
                "websocket connect expected as first command",
            );
            s.error(&cmd, &e).await.map_err(|_| None)?;
            return Err(Some((CLOSE_POLICY, "connect expected")));
        }
    };
    let authenticated = match agent {
        Some(agent) => Ok(agent),
        None => s.app.ctx.authenticate(token.as_deref()),
    };
    let caller = match authenticated {
        Ok(c @ (Caller::Org(_) | Caller::Agent(..))) => c,
        Ok(Caller::Admin) => {
            let e = ApiError::new(
                ErrorCode::InvalidToken,
                "the admin token cannot hold a socket; use POST",
            );
            s.error("connect", &e).await.map_err(|_| None)?;
            return Err(Some((CLOSE_POLICY, "invalid token")));
        }
        Err(e) => {
            s.error("connect", &e).await.map_err(|_| None)?;
            if s.app.ctx.limits.auth_failed(peer.ip()).is_err() {
                return Err(Some((CLOSE_POLICY, "too many failed authentications")));
            }
            let reason = if e.code == ErrorCode::MissingToken {
                "missing token"
            } else {
                "invalid token"
            };
            return Err(Some((CLOSE_POLICY, reason)));
        }
    };
    let asks = match asks {
        Ok(a) => a,
        Err(e) => {
            s.error("connect", &e).await.map_err(|_| None)?;
            return Err(Some((CLOSE_POLICY, "invalid connect")));
        }
    };
    if let Some(org) = caller.org_id() {
        tracing::Span::current().record("org", org);
    }
    Ok((caller, asks))
}

/// The next event for a socket, handing the receiver back with it.
async fn next_event_of(
    mut events: broadcast::Receiver<crate::model::Event>,
) -> (
    Result<crate::model::Event, RecvError>,
    broadcast::Receiver<crate::model::Event>,
) {
    let ev = events.recv().await;
    (ev, events)
}

/// What a `connect` asks for besides the token: opt-in events, and where
/// to resume from (`(epoch, seq)`).
type Asks = (Vec<String>, Option<(String, u64)>);

/// The connected loop: commands in, replies and events out. `group` is
/// the kick group of an agent's console session (`None`: the token's).
async fn connected(
    mut s: Session,
    caller: Caller,
    group: Option<String>,
    opt_in: Vec<String>,
    resume: Option<(String, u64)>,
) -> End {
    let ctx = s.app.ctx.clone();
    let org = match &caller {
        Caller::Org(o) | Caller::Agent(o, _) => o.clone(),
        Caller::Admin => unreachable!("the handshake refuses the admin token"),
    };
    // Subscribe before acknowledging (and before reading the log), so that
    // no event falls in between.
    let events = ctx.bus.subscribe(&org.id);
    let (group, max) = match group {
        Some(g) => (g, crate::console::TABS_PER_SESSION),
        None => (
            crate::bus::Bus::key_group(&org.id, &org.key),
            ctx.config.max_sockets_per_token,
        ),
    };
    let (_registration, kicks) = ctx.bus.register(&group, max);
    let (epoch, durable) = match (ctx.store.epoch(&org.id), ctx.store.durable_seq(&org.id)) {
        (Ok(e), Ok(d)) => (e, d),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot read the event log");
            return s.close(CLOSE_GOING_AWAY, "store unavailable").await;
        }
    };
    let hello =
        Reply::ok("connected").with_data(serde_json::json!({"epoch": epoch, "seq": durable}));
    if let Err(end) = s.reply(&hello).await {
        return end;
    }
    // Live events up to `replayed` were sent from the log.
    let replayed = match resume {
        Some((their_epoch, from)) => match Box::pin(replay(
            &mut s,
            &org.id,
            &their_epoch,
            from,
            &epoch,
            durable,
            &opt_in,
        ))
        .await
        {
            Ok(upto) => upto,
            Err(end) => return end,
        },
        None => 0,
    };
    // Shutdown reaches registered sockets through their kick cell; one that
    // registered after the kicks went out sees the token here.
    if s.app.shutdown.is_cancelled() {
        return s.close(CLOSE_GOING_AWAY, "server shutting down").await;
    }
    let hb = ctx.config.heartbeat_timeout();
    // One timer for the session. A frame only notes its time; the timer is
    // moved when it fires early, not on every frame (re-arming it was a
    // timer-wheel update per command).
    let mut last_frame = Instant::now();
    let idle = tokio::time::sleep(hb);
    tokio::pin!(idle);
    // Made once: a fresh `kicked()` per frame would join and leave the
    // cell's waiter list (a lock each way) on every command.
    let kicked = kicks.kicked();
    tokio::pin!(kicked);
    // Likewise the receiver lives in one reusable future (set again after
    // each event), not a fresh `recv()` per frame.
    let mut next_event = ReusableBoxFuture::new(next_event_of(events));
    // The kick cell, the event receiver and the idle timer wake the task
    // through `side`; the socket wakes it directly. A wake-up by a frame
    // thus polls the socket alone.
    let side = Side::new();
    loop {
        let step = {
            let mut frame = std::pin::pin!(recv(&mut s.socket));
            std::future::poll_fn(|cx| {
                if let Some(mut side_cx) = side.woken(cx) {
                    let cx = &mut side_cx;
                    let step = if let Poll::Ready(kick) = kicked.as_mut().poll(cx) {
                        Some(Step::Kicked(kick))
                    } else if let Poll::Ready((ev, events)) = next_event.poll(cx) {
                        next_event.set(next_event_of(events));
                        Some(Step::Event(ev))
                    } else if idle.as_mut().poll(cx).is_ready() {
                        Some(Step::Idle)
                    } else {
                        None
                    };
                    if let Some(step) = step {
                        // The others may be ready too: look again next time.
                        side.open();
                        return Poll::Ready(step);
                    }
                }
                frame.as_mut().poll(cx).map(Step::Frame)
            })
            .await
        };
        match step {
            Step::Kicked(kick) => {
                return match kick {
                    Kick::Replaced => {
                        let e = ApiError::new(
                            ErrorCode::ConnectionReused,
                            "websocket connection reused (previous connection closed)",
                        );
                        if s.error("connect", &e).await.is_err() {
                            return "write failed";
                        }
                        s.close(CLOSE_POLICY, "connection reused").await
                    }
                    Kick::TokenReset => s.close(CLOSE_POLICY, "token reset").await,
                    Kick::Disabled => s.close(CLOSE_POLICY, "API disabled").await,
                    Kick::ShuttingDown => s.close(CLOSE_GOING_AWAY, "server shutting down").await,
                    Kick::SignedOut => s.close(CLOSE_POLICY, "console session ended").await,
                };
            }
            Step::Frame(incoming) => {
                last_frame = Instant::now();
                let res = match incoming {
                    Incoming::Closed => return "closed by peer",
                    Incoming::TooBig => return s.close(CLOSE_TOO_BIG, "message too big").await,
                    Incoming::BadUtf8 => return s.close(CLOSE_INVALID_DATA, "invalid UTF-8").await,
                    Incoming::Control => Ok(()),
                    Incoming::Binary => {
                        let e = ApiError::new(
                            ErrorCode::InvalidJson,
                            "invalid JSON object: binary frames are not accepted, send text",
                        );
                        s.error("", &e).await
                    }
                    Incoming::Text(text) => {
                        let reply = match Envelope::parse_str(text.as_str()) {
                            Ok(env) if env.cmd == "connect" => Reply::ok("connected"),
                            Ok(env) => match cmd::execute_now(&ctx, &caller, &env) {
                                Ok(reply) => reply,
                                Err(pending) => pending.finish().await,
                            },
                            Err(e) => Reply::error("", &e),
                        };
                        s.reply(&reply).await
                    }
                };
                if let Err(end) = res {
                    return end;
                }
            }
            Step::Event(ev) => match ev {
                // Opt-in extension events go only to sockets that asked;
                // events already replayed are not sent twice.
                Ok(ev) if ev.seq <= replayed || !crate::events::wanted(&ev.json, &opt_in) => {}
                Ok(ev) => {
                    let text = Utf8Bytes::try_from(ev.json).expect("events are UTF-8 JSON");
                    if let Err(end) = s.send(Message::Text(text)).await {
                        return end;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "socket too slow for its events");
                    return s.close(CLOSE_SLOW, "too slow: event queue overflow").await;
                }
                Err(RecvError::Closed) => {
                    return s.close(CLOSE_GOING_AWAY, "event bus closed").await
                }
            },
            Step::Idle => {
                let deadline = last_frame + hb;
                if deadline <= Instant::now() {
                    return s.close(CLOSE_IDLE, "heartbeat timeout").await;
                }
                idle.as_mut().reset(deadline);
                // Polled again to arm the moved deadline.
                side.open();
            }
        }
    }
}

/// What woke a connected session.
enum Step {
    Kicked(Kick),
    Frame(Incoming),
    Event(Result<crate::model::Event, RecvError>),
    Idle,
}

/// Replays the events of `org` after `from` up to `durable` (the log's last
/// durable `seq` when the socket subscribed), then `resumed`; returns the
/// last `seq` replayed. A resume the log cannot serve (another epoch, events
/// no longer retained, a `seq` from the future) gets `resumed` with 4100
/// and the socket goes on live. Opt-in events follow the subscription.
async fn replay(
    s: &mut Session,
    org: &str,
    their_epoch: &str,
    from: u64,
    epoch: &str,
    durable: u64,
    opt_in: &[String],
) -> Result<u64, End> {
    let store = s.app.ctx.store.clone();
    let oldest = store.oldest_seq(org).unwrap_or(1);
    let why = if their_epoch != epoch {
        Some("the log's epoch changed")
    } else if from + 1 < oldest {
        Some("those events are no longer retained")
    } else if from > durable {
        Some("that seq is ahead of the log")
    } else {
        None
    };
    if let Some(why) = why {
        let e = cmd::cannot_resume(why, epoch, oldest);
        let reply = Reply::error("resumed", &e)
            .with_data(serde_json::json!({"epoch": epoch, "oldestSeq": oldest}));
        s.reply(&reply).await?;
        return Ok(0);
    }
    let mut at = from;
    while at < durable {
        let batch = match store.events_after(org, at, 512) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "replay failed");
                return Err("replay failed");
            }
        };
        if batch.is_empty() {
            break;
        }
        for ev in batch {
            if ev.seq > durable {
                break;
            }
            at = ev.seq;
            if crate::events::wanted(&ev.json, opt_in) {
                let text = Utf8Bytes::try_from(ev.json).expect("events are UTF-8 JSON");
                s.send(Message::Text(text)).await?;
            }
        }
    }
    let done = Reply::ok("resumed").with_data(serde_json::json!({"from": from + 1, "to": durable}));
    s.reply(&done).await?;
    Ok(durable)
}
