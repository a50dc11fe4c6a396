//! The POST transport: `POST /api` takes one JSON envelope
//! (`{"token":…,"cmd":…,…}`) and returns one Convrs reply.
//!
//! The body is the Convrs reply for every outcome; the status gives its class
//! (200 ok, 400 validation, 401 token, 404 unknown, 413 too large, 429 rate
//! limited with `Retry-After`, 500 internal). This module never looks inside
//! a command's fields.

use super::AppState;
use crate::cmd::{self, Envelope};
use crate::ctx::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::reply::Reply;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::Full;
use std::future::Future;
use std::sync::Arc;

// Header names made once, not parsed from text on every request.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What `POST /api` answers: the reply's JSON in one piece. A concrete
/// body rather than axum's boxed one, which cost an allocation per request.
pub type ApiResponse = axum::http::Response<Full<Bytes>>;

/// Turns a reply into the HTTP response: JSON body, status by class,
/// `Retry-After` (whole seconds, at least 1) when rate limited.
pub fn respond(reply: &Reply) -> ApiResponse {
    respond_with(reply, reply.http_status())
}

fn respond_with(reply: &Reply, status: u16) -> ApiResponse {
    // Built directly: axum's `IntoResponse` for a tuple sets a content type
    // for the body and then replaces it.
    let mut res = ApiResponse::new(Full::new(Bytes::from(reply.to_json())));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = reply.retry_after() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let Some(r) = reply.rate {
        h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(r.limit));
        h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(r.remaining));
        h.insert(X_RATELIMIT_RESET, HeaderValue::from(r.reset));
    }
    if reply.is_replayed() {
        h.insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
    }
    res
}

/// 413 after reading and discarding what is left of the body (at most ten
/// times `max_body_bytes`, for at most 5 seconds), so that a client that
/// sends its whole body before reading reads the answer (RFC 9112 §9.6);
/// then the connection closes.
async fn too_large<B>(limit: usize, body: Option<B>) -> ApiResponse
where
    B: Body<Data = Bytes> + Unpin,
{
    if let Some(mut body) = body {
        let drain = async {
            let mut left = limit.saturating_mul(10);
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(chunk) = frame.data_ref() {
                    left = left.saturating_sub(chunk.len());
                }
                if left == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    }
    let e = ApiError::new(
        ErrorCode::InvalidJson,
        format!("request body exceeds max_body_bytes ({limit} bytes)"),
    );
    let mut res = respond_with(&Reply::error("", &e), 413);
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The whole body, or `Ok(None)` when it exceeds `limit` bytes. A body of
/// one chunk (any small request) is that chunk, not copied; the end of the
/// body is noticed without another poll when the body knows it.
async fn read_body<B>(body: &mut B, limit: usize) -> Result<Option<Bytes>, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue; // trailers
        };
        total += chunk.len();
        if total > limit {
            return Ok(None);
        }
        match &first {
            None => {
                first = Some(chunk);
                if body.is_end_stream() {
                    break;
                }
            }
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(Some(match first {
        None => Bytes::new(),
        Some(_) if !rest.is_empty() => Bytes::from(rest),
        Some(f) => f,
    }))
}

/// The peer of a request that went through the router (the POST fast path
/// gets it directly).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// `POST /api` through the router (a path the fast path did not take).
pub async fn api_routed(app: State<AppState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0);
    api(app.ctx.clone(), req, peer)
        .await
        .map(axum::body::Body::new)
}

/// `POST /api`: one envelope in, one reply out. The body must arrive
/// within `body_read_timeout` (408 otherwise) and fit `max_body_bytes`
/// (413); failed authentications are limited per `peer` address. Generic
/// over the body: the fast path hands hyper's body over as it is (axum's
/// boxed body and its collector were ~0.7k instructions of a POST).
///
/// Of the request's head only the `Idempotency-Key` is kept: the future
/// is copied into hyper's box whole on every request, and what it does
/// not hold across an await is not part of it (1.9 KiB with the request
/// and the envelope in it, ~0.4k instructions of `memcpy`).
pub fn api<B>(
    ctx: Arc<Ctx>,
    req: axum::http::Request<B>,
    peer: std::net::SocketAddr,
) -> impl std::future::Future<Output = ApiResponse> + Send
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
{
    let (parts, body) = req.into_parts();
    let idempotency_key = parts.headers.get(IDEMPOTENCY_KEY).cloned();
    answer(ctx, body, idempotency_key, peer)
}

async fn answer<B>(
    ctx: Arc<Ctx>,
    mut body: B,
    idempotency_key: Option<HeaderValue>,
    peer: std::net::SocketAddr,
) -> ApiResponse
where
    B: Body<Data = Bytes> + Unpin,
{
    let ctx = &*ctx;
    let limit = ctx.config.max_body_bytes;
    // hyper's body knows the declared `Content-Length`.
    if body.size_hint().lower() > limit as u64 {
        return Box::pin(too_large(limit, Some(body))).await;
    }
    let read = {
        // Polled once before a timer is made: a small body is usually here.
        let mut read = std::pin::pin!(read_body(&mut body, limit));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        match first {
            std::task::Poll::Ready(r) => Ok(r),
            // Boxed, as are the other rare paths below.
            std::task::Poll::Pending => {
                Box::pin(tokio::time::timeout(
                    crate::config::Config::secs(ctx.config.body_read_timeout),
                    read,
                ))
                .await
            }
        }
    };
    let bytes = match read {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) | Ok(Err(_)) => return Box::pin(too_large::<B>(limit, None)).await,
        Err(_) => {
            let e = ApiError::new(
                ErrorCode::InvalidJson,
                "request body not received within body_read_timeout",
            );
            let mut res = respond_with(&Reply::error("", &e), 408);
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    drop(body);
    // The envelope lives in a block of its own: it is not kept across the
    // command's await (only the caller is).
    let caller;
    let pending = {
        let mut env = match Envelope::parse(&bytes) {
            Ok(env) => env,
            Err(e) => return respond(&Reply::error("", &e)),
        };
        // Extension: the `Idempotency-Key` header stands for the
        // `idempotencyKey` field (the field wins when both are given).
        if let Some(key) = idempotency_key.as_ref().and_then(|v| v.to_str().ok()) {
            env.default_str("idempotencyKey", key.trim());
        }
        caller = match ctx.authenticate(env.token.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                if let Err(wait) = ctx.limits.auth_failed(peer.ip()) {
                    let e = ApiError::new(
                        ErrorCode::TokenRateLimited,
                        "too many failed authentications from this address",
                    )
                    .with_retry_after(wait);
                    return respond(&Reply::error(&env.cmd, &e));
                }
                return respond(&Reply::error(&env.cmd, &e));
            }
        };
        match cmd::execute_now(ctx, &caller, &env) {
            Ok(reply) => return respond(&reply),
            Err(pending) => pending,
        }
    };
    respond(&Box::pin(pending.finish()).await)
}
