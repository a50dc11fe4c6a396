//! The agent console's HTTP endpoints (see [`crate::console`]):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /console`, `GET /console/u/{link}` | the page (a user's `url` lands on the second) |
//! | `GET /console/assets/{file}` | its script and style sheet |
//! | `POST /console/session` | sign in: `{"email","password"}` → the session cookie |
//! | `GET /console/session` | who is signed in |
//! | `DELETE /console/session` | sign out |
//! | `GET /console/links/{link}` | the uid a user link points at, for the signed-in agent's organization |
//! | `GET /console/ws` | the page's WebSocket: the gateway's protocol, as the agent |
//!
//! Every response carries a `Content-Security-Policy` that allows only the
//! gateway's own scripts, styles and sockets (no inline script), and
//! `Referrer-Policy: no-referrer` so a user link never leaks in a
//! `Referer`. State changes and the WebSocket check `Origin` against
//! `public_base_url` (or, when it is unset, the request's own `Host`):
//! a page of another site cannot use an agent's cookie. The cookie is
//! `HttpOnly`, `SameSite=Strict`, scoped to `/console`, and `Secure`
//! when the gateway is reached over https.

use super::{AppState, ConnInfo};
use crate::console::{self, SignInError};
use crate::error::{ApiError, ErrorCode};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;

/// The page's policy: its own origin only, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Largest sign-in body, bytes.
const MAX_SIGN_IN_BYTES: usize = 4096;

/// Adds the console's security headers to `res`.
fn secured(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    secured((status, axum::Json(body)).into_response())
}

fn error(cmd: &str, e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = json_reply(
        status,
        json!({"ok": 0, "cmd": cmd, "errorCode": e.code.as_u16(), "error": e.message}),
    );
    if let Some(wait) = e.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

fn no_session(cmd: &str) -> Response {
    error(
        cmd,
        &ApiError::new(
            ErrorCode::SignInFailed,
            "not signed in: the session is missing, expired or ended",
        ),
    )
}

/// `GET /console` and `GET /console/u/{link}`: the page.
pub async fn page() -> Response {
    asset_response("index.html")
}

/// `GET /console/assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    asset_response(&file)
}

fn asset_response(name: &str) -> Response {
    match console::asset(name) {
        Some((typ, body)) => secured(([(header::CONTENT_TYPE, typ)], body).into_response()),
        None => secured(StatusCode::NOT_FOUND.into_response()),
    }
}

/// The origin requests to the console must come from: `public_base_url`'s,
/// or this request's own `Host` when it is unset.
fn expected_origin(app: &AppState, headers: &HeaderMap) -> Option<String> {
    match &app.ctx.config.public_base_url {
        Some(base) => url::Url::parse(base)
            .ok()
            .map(|u| u.origin().ascii_serialization()),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let scheme = if app.ctx.config.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            Some(format!("{scheme}://{host}"))
        }
    }
}

/// Whether the request's `Origin` is the console's own (required: every
/// browser sends it on WebSocket upgrades and on POST/DELETE).
fn same_origin(app: &AppState, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    matches!((origin, expected_origin(app, headers)), (Some(o), Some(e)) if o.eq_ignore_ascii_case(&e))
}

fn cross_origin(cmd: &str) -> Response {
    error(
        cmd,
        &ApiError::new(
            ErrorCode::AgentForbidden,
            "cross-origin request refused: Origin must be the console's own",
        ),
    )
}

/// The session cookie's value, if sent.
fn sid(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == console::COOKIE)
        .map(|c| c.value().to_string())
}

/// The signed-in agent of the request, if its session is valid.
fn agent(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Option<console::Agent>, crate::store::StoreError> {
    match sid(headers) {
        Some(sid) => console::session(&app.ctx, &sid),
        None => Ok(None),
    }
}

fn internal(cmd: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, cmd, "console request failed");
    error(cmd, &ApiError::internal())
}

fn secure(app: &AppState) -> bool {
    app.ctx.config.tls_cert.is_some()
        || app
            .ctx
            .config
            .public_base_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https:"))
}

fn session_cookie(app: &AppState, value: &str, max_age_secs: i64) -> HeaderValue {
    let mut c = cookie::Cookie::build((console::COOKIE, value.to_string()))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/console")
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .secure(secure(app))
        .build();
    c.set_secure(secure(app));
    HeaderValue::from_str(&c.to_string()).expect("a cookie is a valid header")
}

fn who(a: &console::Agent) -> serde_json::Value {
    json!({"email": a.session.email, "name": a.name, "org": a.session.org,
        "expires": crate::time::iso_of_ms(a.session.expires_ms)})
}

/// `POST /console/session`: signs in; `{"ok":1,"data":{email,name,org,expires}}`
/// with the cookie, 401 (4103) when refused, 429 (4103, `Retry-After`)
/// when over `console_sign_in_limit`.
pub async fn sign_in(
    State(app): State<AppState>,
    Extension(super::http::Peer(peer)): Extension<super::http::Peer>,
    req: Request,
) -> Response {
    const CMD: &str = "signIn";
    let (parts, body) = req.into_parts();
    if !same_origin(&app, &parts.headers) {
        return cross_origin(CMD);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_SIGN_IN_BYTES).await else {
        return error(
            CMD,
            &ApiError::new(ErrorCode::InvalidJson, "sign-in body too large"),
        );
    };
    #[derive(serde::Deserialize)]
    struct Form {
        email: String,
        password: String,
    }
    let Ok(form) = serde_json::from_slice::<Form>(&bytes) else {
        return error(
            CMD,
            &ApiError::new(ErrorCode::InvalidJson, "expected {\"email\",\"password\"}"),
        );
    };
    match console::sign_in(&app.ctx, &form.email, &form.password, peer.ip()).await {
        Ok(signed) => {
            let ttl = (signed.session.expires_ms - signed.session.created_ms) / 1000;
            let a = match console::session(&app.ctx, signed.sid.expose()) {
                Ok(Some(a)) => a,
                _ => return error(CMD, &ApiError::internal()),
            };
            let mut res = json_reply(
                StatusCode::OK,
                json!({"ok": 1, "cmd": CMD, "data": who(&a)}),
            );
            res.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&app, signed.sid.expose(), ttl),
            );
            res
        }
        Err(SignInError::Refused) => error(
            CMD,
            &ApiError::new(ErrorCode::SignInFailed, "wrong email or password"),
        ),
        Err(SignInError::Limited(wait)) => {
            let e = ApiError::new(
                ErrorCode::SignInFailed,
                "too many sign-in attempts: try again later",
            )
            .with_retry_after(wait);
            let mut res = error(CMD, &e);
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            res
        }
        Err(SignInError::Store(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            error(CMD, &ApiError::internal())
        }
    }
}

/// `GET /console/session`: the signed-in agent, or 401 (4103).
pub async fn whoami(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match agent(&app, &headers) {
        Ok(Some(a)) => json_reply(
            StatusCode::OK,
            json!({"ok": 1, "cmd": "session", "data": who(&a)}),
        ),
        Ok(None) => no_session("session"),
        Err(e) => internal("session", &e),
    }
}

/// `DELETE /console/session`: signs out (the session ends, its sockets
/// close with 1008, the cookie is cleared).
pub async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    const CMD: &str = "signOut";
    if !same_origin(&app, &headers) {
        return cross_origin(CMD);
    }
    let a = match agent(&app, &headers) {
        Ok(Some(a)) => a,
        Ok(None) => return no_session(CMD),
        Err(e) => return internal(CMD, &e),
    };
    if let Err(e) = console::sign_out(&app.ctx, &a).await {
        tracing::error!(error = %e, "sign-out failed");
        return error(CMD, &ApiError::internal());
    }
    let mut res = json_reply(StatusCode::OK, json!({"ok": 1, "cmd": CMD}));
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    res
}

/// `GET /console/links/{link}`: `{"ok":1,"data":{"uid":…}}` when the link
/// is a user of the agent's organization; 404 (1005) otherwise, the same
/// whether the link is unknown or another organization's.
pub async fn link(
    State(app): State<AppState>,
    Path(link): Path<String>,
    headers: HeaderMap,
) -> Response {
    const CMD: &str = "link";
    let a = match agent(&app, &headers) {
        Ok(Some(a)) => a,
        Ok(None) => return no_session(CMD),
        Err(e) => return internal(CMD, &e),
    };
    match app.ctx.store.user_by_link(&link) {
        Ok(Some((org, uid))) if org == a.session.org => match app.ctx.store.user(&org, &uid) {
            Ok(Some(_)) => {
                return json_reply(
                    StatusCode::OK,
                    json!({"ok": 1, "cmd": CMD, "data": {"uid": uid}}),
                )
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "reading a user failed");
                return error(CMD, &ApiError::internal());
            }
        },
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading a console link failed");
            return error(CMD, &ApiError::internal());
        }
    }
    error(CMD, &crate::users::unknown_user("this link"))
}

/// `GET /console/ws`: the page's WebSocket. Refused with 403 (4102) from
/// another origin and 401 (4103) without a valid session; then a session
/// of the gateway's protocol as the agent (`connect` without a token).
pub async fn ws(
    State(app): State<AppState>,
    ws: super::ws::Upgrade,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    let peer = info.peer;
    if !same_origin(&app, &headers) {
        tracing::warn!(%peer, "console WebSocket from another origin refused");
        return cross_origin("connect");
    }
    let a = match agent(&app, &headers) {
        Ok(Some(a)) => a,
        Ok(None) => return no_session("connect"),
        Err(e) => return internal("connect", &e),
    };
    let group = console::group(&a.session, &a.sid_sha256);
    super::ws::upgrade_as(app, ws, info, Some((a.caller, group)))
}
