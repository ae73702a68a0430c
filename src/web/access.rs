//! Who is asking, and what they may see.
//!
//! [`authenticate`] runs before every route except the sign-in page, the
//! embedded assets and the OpenAPI document. It finds the [`Principal`] of a
//! request, in this order: everyone under `auth = "none"`; the user named by
//! the proxy's header, but only when the request comes from a trusted proxy
//! address; an API token (`Authorization: Bearer`, API routes only); the
//! session cookie. A request with none of these is sent to sign in (pages) or
//! answered 401 (API); with no user in the store at all, both say how to
//! create the first admin.
//!
//! What a principal may see is its [`Scope`] (in [`super::query::scope`]:
//! every entry query carries it).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{KeyInit, Mac};

use super::error::WebError;
use super::query;
/// Where the CLI finds it (`pgtrail export`); the web view names [`query::Scope`].
pub use super::query::Scope;
use super::AppState;
use crate::auth::{sessions, tokens, users, Role, Tables};
use crate::config::{AuthMode, WebAuth};

/// The session cookie.
pub const SESSION_COOKIE: &str = "pgtrail_session";
/// The sign-in form's own CSRF cookie (there is no session yet to tie it to).
pub const SIGN_IN_COOKIE: &str = "pgtrail_sign_in";

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// A browser session; its synchronizer CSRF token.
    Session { token: String, csrf: String },
    /// An API token, by name.
    Token,
    /// A trusted reverse proxy's header.
    Proxy,
    /// `auth = "none"`.
    Open,
}

/// The one asking.
#[derive(Debug, Clone)]
pub struct Principal {
    /// A user name; `token:NAME` for an API token; `anonymous` under `auth = "none"`.
    pub name: String,
    pub role: Role,
    pub tables: Tables,
    pub how: How,
    pub client_addr: Option<String>,
}

impl Principal {
    pub fn scope(&self) -> Scope {
        Scope::Limited {
            events: self.role == Role::Admin,
            tables: self.tables.clone(),
        }
    }

    /// A 403 unless the principal has at least `role`.
    pub fn require(&self, role: Role, to: &str) -> Result<(), WebError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "To {to} you need the role {role}; you are signed in as {} with the role {}. Ask an admin.",
                self.name, self.role
            )))
        }
    }

    /// The token forms must carry: the session's own, or for principals
    /// without a session (proxy, `auth = "none"`) one derived from the user name.
    pub fn csrf(&self, state: &AppState) -> Option<String> {
        match &self.how {
            How::Session { csrf, .. } => Some(csrf.clone()),
            How::Proxy | How::Open => Some(state.auth().derived_csrf(&self.name)),
            How::Token => None,
        }
    }

    /// Refuses a form whose CSRF token is missing or not this principal's.
    pub fn check_csrf(&self, state: &AppState, given: Option<&str>) -> Result<(), WebError> {
        match (self.csrf(state), given) {
            (Some(expected), Some(given)) if crate::auth::same_secret(&expected, given) => Ok(()),
            _ => Err(WebError::Forbidden(
                "This form is out of date or was not sent from pgtrail's own page (its CSRF token does not match \
                 your session). Reload the page and submit it again."
                    .into(),
            )),
        }
    }

    pub fn actor(&self) -> crate::auth::Actor {
        crate::auth::Actor {
            name: Some(self.name.clone()),
            application: "pgtrail web",
            client_addr: self.client_addr.clone(),
        }
    }

    /// The principal as an admin changing users and tokens: it reaches its own tables.
    pub fn manager(&self) -> crate::auth::Manager {
        crate::auth::Manager {
            actor: self.actor(),
            reach: self.tables.clone(),
        }
    }
}

/// The web view's access settings and what it derives from them.
pub struct AuthState {
    pub config: WebAuth,
    /// The config file, for messages that show a command.
    pub config_path: std::path::PathBuf,
    /// Signs CSRF tokens of principals without a session; new each start.
    csrf_key: [u8; 32],
}

impl AuthState {
    pub fn new(config: WebAuth, config_path: std::path::PathBuf) -> AuthState {
        let mut csrf_key = [0u8; 32];
        if let Err(e) = getrandom::getrandom(&mut csrf_key) {
            // Without randomness the key would be guessable; forms of proxy users then fail closed.
            tracing::error!(error = %e, "no randomness for the CSRF key; forms of proxy users will be refused");
        }
        AuthState {
            config,
            config_path,
            csrf_key,
        }
    }

    /// The same state with other settings: the CSRF key stays, so forms
    /// already on screen still work after a reload.
    pub fn with_config(&self, config: WebAuth) -> AuthState {
        AuthState {
            config,
            config_path: self.config_path.clone(),
            csrf_key: self.csrf_key,
        }
    }

    fn derived_csrf(&self, name: &str) -> String {
        if self.csrf_key == [0u8; 32] {
            return crate::auth::random_secret().unwrap_or_default();
        }
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.csrf_key)
            .expect("HMAC accepts a key of any length");
        mac.update(b"csrf:");
        mac.update(name.as_bytes());
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub fn timeouts(&self) -> sessions::Timeouts {
        sessions::Timeouts {
            idle_seconds: self.config.session_idle_seconds,
            absolute_seconds: self.config.session_max_seconds,
        }
    }

    /// The command that creates the first admin, with this config file.
    pub fn first_admin_command(&self) -> String {
        format!(
            "pgtrail --config {} user add NAME --role admin",
            self.config_path.display()
        )
    }
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `Set-Cookie` for a cookie that only pgtrail's own pages send back.
pub fn set_cookie(name: &str, value: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if clear {
        c.push_str("; Max-Age=0");
    }
    HeaderValue::from_str(&c)
        .unwrap_or_else(|_| HeaderValue::from_static("pgtrail_invalid=; Max-Age=0"))
}

/// The peer's address, if the server recorded it.
pub fn peer(req_ext: &axum::http::Extensions) -> Option<IpAddr> {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
}

/// Whether the session cookie should be `Secure`: configured so, or a trusted
/// proxy says the browser came over HTTPS.
pub fn secure_cookie(state: &AppState, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
    let auth = state.auth();
    auth.config.cookie_secure
        || auth.config.proxy.as_ref().is_some_and(|p| {
            peer.is_some_and(|a| p.trusts(a))
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("https"))
        })
}

/// Paths anyone may fetch.
fn is_public(path: &str) -> bool {
    path == "/sign-in" || path.starts_with("/assets/") || path == "/api/v1/openapi.json"
}

tokio::task_local! {
    /// The principal of the request being rendered, for the page header.
    static CURRENT: Option<Bar>;
}

/// What the page header shows about who is signed in.
#[derive(Debug, Clone)]
pub struct Bar {
    pub name: String,
    pub role: &'static str,
    pub admin: bool,
    /// Empty when there is nothing to sign out of.
    pub csrf: String,
}

/// For `base.html`: who is signed in, if anyone.
pub fn signed_in() -> Option<Bar> {
    CURRENT.try_with(|c| c.clone()).ok().flatten()
}

/// The middleware: finds the principal or answers for it.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if is_public(&path) {
        return next.run(req).await;
    }
    let api = path.starts_with("/api/");
    let peer = peer(req.extensions());
    let found = principal(&state, req.headers(), peer, api).await;
    match found {
        Ok(Some(p)) => {
            let bar = Bar {
                name: p.name.clone(),
                role: p.role.as_str(),
                admin: p.role == Role::Admin,
                csrf: match &p.how {
                    How::Session { csrf, .. } => csrf.clone(),
                    _ => String::new(),
                },
            };
            req.extensions_mut().insert(p);
            CURRENT.scope(Some(bar), next.run(req)).await
        }
        Ok(None) => {
            let next = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            unauthenticated(&state, next, api).await
        }
        Err(e) if api => e.json().into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unauthenticated(state: &AppState, next: String, api: bool) -> Response {
    let auth = state.auth();
    let no_users = match state.writer().get().await {
        Ok(c) => users::any(&*c).await.map(|any| !any).unwrap_or(false),
        Err(_) => false,
    };
    if no_users && auth.config.proxy.is_none() {
        let e = WebError::Unavailable(format!(
            "pgtrail shows no entries until it has a user. Create the first admin on the server with `{}` \
             (it asks for the password), then sign in.",
            auth.first_admin_command()
        ));
        return if api {
            e.json().into_response()
        } else {
            e.into_response()
        };
    }
    if api {
        return WebError::Unauthorized(
            "Sign in first: send an API token as `Authorization: Bearer pgt_…` (an admin creates one with \
             `pgtrail token create NAME --role viewer`)."
                .into(),
        )
        .json()
        .into_response();
    }
    Redirect::to(&query::url("/sign-in", &[("next", next)])).into_response()
}

/// The request's principal, or `None` when it has not proved who it is.
async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    api: bool,
) -> Result<Option<Principal>, WebError> {
    let auth = state.auth();
    let client_addr = peer.map(|a| a.to_string());
    if auth.config.mode == AuthMode::None {
        return Ok(Some(Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            tables: Tables::default(),
            how: How::Open,
            client_addr,
        }));
    }
    if let Some(proxy) = &auth.config.proxy {
        if let Some(user) = headers.get(proxy.user_header.as_str()) {
            if peer.is_some_and(|a| proxy.trusts(a)) {
                return proxy_principal(state, proxy, user, headers, client_addr)
                    .await
                    .map(Some);
            }
            // The header is only believed from the proxy; from anyone else it is ignored.
            tracing::warn!(peer = ?peer, header = %proxy.user_header, "user header from an untrusted address ignored");
        }
    }
    if api {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let secret = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    WebError::Unauthorized(
                        "The Authorization header must be `Bearer pgt_…` with an API token.".into(),
                    )
                })?;
            let client = state.writer().get().await?;
            let token = tokens::lookup(&*client, secret).await.map_err(auth_error)?;
            return match token {
                Some(t) => Ok(Some(Principal {
                    name: format!("token:{}", t.name),
                    role: t.role,
                    tables: t.tables,
                    how: How::Token,
                    client_addr,
                })),
                None => Err(WebError::Unauthorized(
                    "This API token is not valid: it is unknown or was revoked. Ask an admin for a new one.".into(),
                )),
            };
        }
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let client = state.writer().get().await?;
        if let Some(u) = sessions::validate(&*client, &token, auth.timeouts())
            .await
            .map_err(auth_error)?
        {
            return Ok(Some(Principal {
                name: u.name,
                role: u.role,
                tables: u.tables,
                how: How::Session {
                    token,
                    csrf: u.csrf,
                },
                client_addr,
            }));
        }
    }
    Ok(None)
}

/// Whether `who`, proved at the start of a long-lived response, still holds
/// with the same role and tables: the session not ended or expired, the
/// token not revoked, the user not disabled. A live stream asks this now and
/// then, so that signing out, a disable or a role change ends it, and so
/// does a reload that changed how principals are proved.
pub async fn still_allowed(state: &AppState, who: &Principal) -> Result<bool, WebError> {
    let auth = state.auth();
    let same = |role: Role, tables: &Tables| role == who.role && *tables == who.tables;
    match &who.how {
        How::Open => Ok(auth.config.mode == AuthMode::None),
        How::Session { token, .. } => {
            let client = state.writer().get().await?;
            let user = sessions::peek(&*client, token, auth.timeouts())
                .await
                .map_err(auth_error)?;
            Ok(user.is_some_and(|u| same(u.role, &u.tables)))
        }
        How::Token => {
            let client = state.writer().get().await?;
            let name = who.name.strip_prefix("token:").unwrap_or(&who.name);
            let token = tokens::active(&*client, name).await.map_err(auth_error)?;
            Ok(token.is_some_and(|t| same(t.role, &t.tables)))
        }
        // The role came from the proxy's header and cannot be asked again;
        // a proxy no longer configured, a disable or other tables in the
        // store still end the stream.
        How::Proxy => {
            if auth.config.proxy.is_none() {
                return Ok(false);
            }
            let client = state.writer().get().await?;
            let user = users::get(&*client, &who.name).await.map_err(auth_error)?;
            Ok(match user {
                Some(u) => !u.disabled && u.tables == who.tables,
                None => who.tables == Tables::default(),
            })
        }
    }
}

async fn proxy_principal(
    state: &AppState,
    proxy: &crate::config::ProxyAuth,
    user: &HeaderValue,
    headers: &HeaderMap,
    client_addr: Option<String>,
) -> Result<Principal, WebError> {
    let name = user
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|u| crate::auth::Name::parse(u).ok())
        .ok_or_else(|| {
            WebError::bad(format!(
                "The proxy's {} header does not hold a valid user name.",
                proxy.user_header
            ))
        })?;
    let from_header = match &proxy.role_header {
        Some(h) => match headers.get(h.as_str()) {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|r| r.parse::<Role>().ok())
                    .ok_or_else(|| {
                        WebError::Forbidden(format!(
                            "The proxy's {h} header is not a role (viewer, auditor or admin)."
                        ))
                    })?,
            ),
            None => None,
        },
        None => None,
    };
    // A store user of the same name brings its table restriction.
    let stored = {
        let client = state.writer().get().await?;
        users::get(&*client, name.as_str())
            .await
            .map_err(auth_error)?
    };
    if stored.as_ref().is_some_and(|u| u.disabled) {
        return Err(WebError::Forbidden(format!(
            "The user {name} is disabled in pgtrail."
        )));
    }
    let role = from_header
        .or_else(|| proxy.roles.get(name.as_str()).copied())
        .or(proxy.default_role)
        .ok_or_else(|| {
            WebError::Forbidden(format!(
                "{name} has no pgtrail role: add them to web.proxy.roles in {}, or have the proxy send a role header.",
                state.auth().config_path.display()
            ))
        })?;
    Ok(Principal {
        name: name.to_string(),
        role,
        tables: stored.map(|u| u.tables).unwrap_or_default(),
        how: How::Proxy,
        client_addr,
    })
}

/// An [`crate::auth::AuthError`] as the web shows it.
pub fn auth_error(e: crate::auth::AuthError) -> WebError {
    use crate::auth::AuthError;
    match e {
        AuthError::Invalid(m) => WebError::BadRequest(m),
        AuthError::Forbidden(m) => WebError::Forbidden(m),
        e @ (AuthError::NoSuchUser(_) | AuthError::NoSuchToken(_)) => {
            WebError::NotFound(e.to_string())
        }
        e @ (AuthError::UserExists(_) | AuthError::TokenExists(_)) => {
            WebError::BadRequest(e.to_string())
        }
        AuthError::Store(crate::store::StoreError::Query(e)) => e.into(),
        e => WebError::Internal(e.to_string()),
    }
}
