//! Signing in and out: the sign-in page and form, the session cookie, and
//! sign-out (this session, or every session of the user).
//!
//! The sign-in form has no session to tie a CSRF token to, so it uses its own
//! cookie (`pgtrail_sign_in`, SameSite=Strict) whose value the form repeats.
//! Every refusal says the same thing and takes at least [`FAILURE_TIME`], and
//! every path verifies one argon2 hash (a dummy one for unknown, disabled or
//! locked users), so neither the words nor the timing tell whether a user
//! exists. Sign-ins, refusals, lockouts and sign-outs are recorded as
//! `Session` events, each in the transaction of the change it records.
//!
//! A flood of guesses must not stall users already signed in: the hash is
//! read and the store connection given back before argon2 runs, at most one
//! verification per core runs at once ([`AppState::verification_slot`]), and
//! a sign-in finding [`waiting_per_core`] per core already in line is
//! answered 429 unchecked.
//!
//! Failures are also counted per client address ([`super::throttle`]): an
//! address past its budget is answered 429 unchecked until its window ends,
//! and a locked account still has the password checked for an address that
//! had no part in locking it ([`crate::auth::past_lock`]). Only the first
//! failure of an account from an address in a window is an event of its own;
//! the rest are summarized.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;

use super::access::{self, How, Principal, SESSION_COOKIE, SIGN_IN_COOKIE};
use super::error::WebError;
use super::throttle::{self, Attempt, Budget};
use super::AppState;
use super::{limits, query};
use crate::auth::{past_lock, sessions, users, Actor, AuthError};
use crate::config::AuthMode;
use crate::metrics::record as metric;
use crate::store::events::{record, Category};

/// The least time a refused sign-in takes.
pub const FAILURE_TIME: Duration = Duration::from_millis(1000);

/// One refusal for every reason.
const REFUSED: &str =
    "Sign-in failed: the user name or password is wrong, or the account is disabled or locked \
                       for a while after repeated failures. Try again later, or ask an admin.";

/// When the line of sign-ins waiting to be checked is full.
const BUSY: &str =
    "Too many sign-ins are being checked right now, so yours was not: try again in a minute.";

/// When the client's address has failed to sign in too often.
const THROTTLED: &str =
    "Too many failed sign-ins came from your address, so this one was not checked: try again later.";

/// Sign-ins that may wait for a password check, per core; the rest are
/// refused with 429. At tens of milliseconds per check this is a few seconds
/// of waiting at most.
pub const WAITING_PER_CORE: usize = 64;

/// [`WAITING_PER_CORE`], or `PGTRAIL_WEB_SIGN_IN_WAITING` (at least 1) from
/// the environment: a small machine may want a shorter line, and tests fill
/// one quickly.
pub fn waiting_per_core() -> usize {
    std::env::var("PGTRAIL_WEB_SIGN_IN_WAITING")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(WAITING_PER_CORE, |n| n.max(1))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    message: String,
    next: String,
    csrf: String,
    name: String,
    first_admin: Option<String>,
}

/// The fields of a `application/x-www-form-urlencoded` body; a repeated field keeps its last value.
pub fn form_fields(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Where to go after signing in: only a path on this site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs, and read `\` as `/`: a
        // path with them could turn into `//other.host` after the check.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The sign-in page of one request: what it shows again whatever its message
/// (where to go next, the name typed), and what its cookie depends on.
struct Shown<'a> {
    state: &'a AppState,
    next: &'a str,
    name: &'a str,
    headers: &'a HeaderMap,
    peer: SocketAddr,
}

impl Shown<'_> {
    /// The page with `message`, answered with `status`.
    async fn render(&self, status: StatusCode, message: &str) -> Result<Response, WebError> {
        let no_users = {
            let client = self.state.writer().get().await?;
            !users::any(&*client).await.map_err(access::auth_error)?
        };
        // Reuse the browser's token: another sign-in page (a second tab, or the
        // favicon request sent here) must not invalidate the form already shown.
        let csrf = match access::cookie(self.headers, SIGN_IN_COOKIE) {
            Some(c)
                if c.len() == 43
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                c
            }
            _ => crate::auth::random_secret().map_err(access::auth_error)?,
        };
        let page = SignInPage {
            message: message.to_owned(),
            next: self.next.to_owned(),
            csrf: csrf.clone(),
            name: crate::text::clip(self.name),
            first_admin: no_users.then(|| self.state.auth().first_admin_command()),
        };
        let secure = access::secure_cookie(self.state, self.headers, Some(self.peer.ip()));
        let mut res = (status, Html(page.render()?)).into_response();
        res.headers_mut().append(
            header::SET_COOKIE,
            access::set_cookie(SIGN_IN_COOKIE, &csrf, secure, false),
        );
        Ok(res)
    }
}

/// `GET /sign-in?next=/path`
pub async fn form(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let pairs = query::pairs(raw.as_deref())?;
    let next = safe_next(
        pairs
            .iter()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.as_str()),
    );
    if state.auth().config.mode == AuthMode::None {
        return Ok(Redirect::to(&next).into_response());
    }
    let shown = Shown {
        state: &state,
        next: &next,
        name: "",
        headers: &headers,
        peer,
    };
    shown.render(StatusCode::OK, "").await
}

/// `POST /sign-in` (name, password, csrf, next)
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let started = std::time::Instant::now();
    let f = form_fields(&body);
    let next = safe_next(f.get("next").map(String::as_str));
    let given_csrf = f.get("csrf").map(String::as_str).unwrap_or("");
    let cookie_csrf = access::cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if given_csrf.is_empty() || !crate::auth::same_secret(given_csrf, &cookie_csrf) {
        metric::sign_in_failure("csrf");
        return Err(WebError::Forbidden(
            "The sign-in form is out of date or was not sent from pgtrail's sign-in page (its CSRF token does \
             not match). Open the sign-in page again and sign in there."
                .into(),
        ));
    }
    let name = f
        .get("name")
        .map(|n| n.trim().to_owned())
        .unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    let shown = Shown {
        state: &state,
        next: &next,
        name: &name,
        headers: &headers,
        peer,
    };
    if name.is_empty() || password.is_empty() {
        return shown
            .render(
                StatusCode::BAD_REQUEST,
                "Give both the user name and the password.",
            )
            .await;
    }
    let auth = state.auth();
    let budget = Budget {
        failures: auth.config.limits.sign_in_failures_per_address,
        window: Duration::from_secs(auth.config.limits.sign_in_window_seconds),
    };
    let address = throttle::client_address(&auth.config, &headers, peer.ip());
    let client = throttle::Client::of(address);
    // An address past its budget costs nothing: no store, no argon2, no event.
    let attempt = match state
        .sign_in_book()
        .begin(client, &name, budget, Instant::now())
    {
        Ok(attempt) => attempt,
        Err(refused) => {
            metric::sign_in_failure("throttled");
            tracing::warn!(client = %client.shown(), "sign-in refused unchecked: too many failed sign-ins from this address");
            let mut res = shown
                .render(StatusCode::TOO_MANY_REQUESTS, THROTTLED)
                .await?;
            limits::retry_after_header(&mut res, refused.retry_after);
            return Ok(res);
        }
    };
    // Beyond a full line, refuse now: waiting longer would outlast any
    // browser's patience, and the refused guess was never checked.
    let Some(place) = state.sign_in_place() else {
        metric::sign_in_failure("busy");
        tracing::warn!(peer = %peer.ip(), "sign-in refused: too many sign-ins waiting to be checked");
        let mut res = shown.render(StatusCode::TOO_MANY_REQUESTS, BUSY).await?;
        res.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
        return Ok(res);
    };
    let lockout = users::Lockout {
        after: auth.config.lockout_after,
        seconds: auth.config.lockout_seconds,
    };
    let actor = Actor {
        name: Some(crate::text::clip(&name)),
        application: "pgtrail web",
        client_addr: Some(address.to_canonical().to_string()),
    };
    // The connection goes back before argon2 runs (tens of milliseconds of
    // CPU), and at most one verification per core runs at once.
    let check = {
        let client = state.writer().get().await?;
        Check::read(&*client, &name, attempt.fresh())
            .await
            .map_err(access::auth_error)?
    };
    let password_ok = {
        let _slot = state.verification_slot().await?;
        check.verify(&password).await.map_err(access::auth_error)?
    };
    // Out of the line once checked: a refusal's wait is no work.
    drop(place);
    // The outcome, the session and the events commit together or not at all.
    let mut client = state.writer().get().await?;
    let tx = client.transaction().await?;
    let outcome = check
        .settle(&tx, password_ok, lockout)
        .await
        .map_err(access::auth_error)?;
    match outcome {
        users::SignIn::Ok(user) => {
            let (token, _csrf) =
                sessions::create(&tx, &user.name, actor.client_addr.clone(), auth.timeouts())
                    .await
                    .map_err(access::auth_error)?;
            let event = actor
                .event(
                    Category::Session,
                    "sign_in",
                    format!("{} signed in", user.name),
                )
                .detail("role", user.role.as_str())
                .detail("while_locked", matches!(check, Check::PastLock(_)));
            record(&tx, &event).await.map_err(store_error)?;
            // The failures before it from this address are written now, with it.
            if let Some(summary) = attempt.summary() {
                record(&tx, &summary).await.map_err(store_error)?;
            }
            tx.commit().await?;
            drop(client);
            attempt.succeeded();
            let secure = access::secure_cookie(&state, &headers, Some(peer.ip()));
            let mut res = Redirect::to(&next).into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                access::set_cookie(SESSION_COOKIE, &token, secure, false),
            );
            h.append(
                header::SET_COOKIE,
                access::set_cookie(SIGN_IN_COOKIE, "", secure, true),
            );
            Ok(res)
        }
        users::SignIn::Failed { locked_now, locked } => {
            metric::sign_in_failure("refused");
            let failure = Failure {
                actor: &actor,
                name: &name,
                locked_now,
                locked,
                lockout,
            };
            failure.commit(tx, attempt, budget, &state).await?;
            drop(client);
            // Every refusal takes as long, whatever the reason.
            tokio::time::sleep(FAILURE_TIME.saturating_sub(started.elapsed())).await;
            shown.render(StatusCode::UNAUTHORIZED, REFUSED).await
        }
    }
}

/// How a sign-in's password is checked: as usual, or past the account's
/// lock for a client that had no part in it.
enum Check {
    Usual(users::Candidate),
    PastLock(past_lock::Locked),
}

impl Check {
    /// Reads what the check needs; `fresh` says the client has not failed as
    /// `name` lately, so a lock does not keep it out.
    async fn read<C: tokio_postgres::GenericClient>(
        client: &C,
        name: &str,
        fresh: bool,
    ) -> Result<Check, AuthError> {
        if fresh {
            if let Some(locked) = past_lock::locked(client, name).await? {
                return Ok(Check::PastLock(locked));
            }
        }
        Ok(Check::Usual(users::candidate(client, name).await?))
    }

    async fn verify(&self, password: &str) -> Result<bool, AuthError> {
        match self {
            Check::Usual(c) => c.verify(password).await,
            Check::PastLock(l) => l.verify(password).await,
        }
    }

    async fn settle<C: tokio_postgres::GenericClient>(
        &self,
        client: &C,
        password_ok: bool,
        lockout: users::Lockout,
    ) -> Result<users::SignIn, AuthError> {
        match self {
            Check::Usual(c) => users::settle(client, c, password_ok, lockout).await,
            Check::PastLock(l) => l.settle(client, password_ok).await,
        }
    }
}

/// A refused sign-in, to record.
struct Failure<'a> {
    actor: &'a Actor,
    name: &'a str,
    locked_now: bool,
    locked: bool,
    lockout: users::Lockout,
}

impl Failure<'_> {
    /// Writes the failure's events in `tx` and commits it (the pair's first
    /// failure in its window as an event of its own, the others counted for
    /// their summary; a lock as an event), then counts it against the
    /// address, which may use up its budget.
    async fn commit(
        &self,
        tx: tokio_postgres::Transaction<'_>,
        mut attempt: Attempt,
        budget: Budget,
        state: &AppState,
    ) -> Result<(), WebError> {
        let name = crate::text::clip(self.name);
        if attempt.itemize() {
            let event = self
                .actor
                .event(
                    Category::Session,
                    "sign_in_failed",
                    format!("failed sign-in as {name}"),
                )
                .detail("locked", self.locked);
            record(&tx, &event).await.map_err(store_error)?;
        }
        if self.locked_now {
            let event = self
                .actor
                .event(
                    Category::Session,
                    "locked",
                    format!(
                        "{name} locked for {} s after {} failed sign-ins",
                        self.lockout.seconds, self.lockout.after
                    ),
                )
                .detail("seconds", self.lockout.seconds)
                .detail("failures", self.lockout.after);
            record(&tx, &event).await.map_err(store_error)?;
        }
        tx.commit().await?;
        if let Some(t) = attempt.failed(self.locked, budget) {
            throttle::record_throttled(state, t).await;
        }
        Ok(())
    }
}

fn store_error(e: crate::store::StoreError) -> WebError {
    access::auth_error(AuthError::Store(e))
}

/// `POST /sign-out` (csrf, everywhere=1 to end every session of the user)
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = form_fields(&body);
    who.check_csrf(&state, f.get("csrf").map(String::as_str))?;
    let How::Session { token, .. } = &who.how else {
        return Err(WebError::bad(
            "There is no pgtrail session to end: you are signed in by your single sign-on proxy or the web view runs \
             with auth = \"none\". Sign out at the proxy.",
        ));
    };
    let everywhere = f.get("everywhere").is_some_and(|v| v == "1");
    // The sessions end with their event or not at all.
    let mut client = state.writer().get().await?;
    let tx = client.transaction().await?;
    let ended = if everywhere {
        sessions::end_all(&tx, &who.name)
            .await
            .map_err(access::auth_error)?
    } else {
        sessions::end(&tx, token)
            .await
            .map_err(access::auth_error)?
            .map_or(0, |_| 1)
    };
    let summary = if everywhere {
        format!("{} signed out everywhere ({ended} sessions)", who.name)
    } else {
        format!("{} signed out", who.name)
    };
    let event = who
        .actor()
        .event(Category::Session, "sign_out", summary)
        .detail("everywhere", everywhere)
        .detail("sessions", ended);
    record(&tx, &event).await.map_err(store_error)?;
    tx.commit().await?;
    drop(client);
    let secure = access::secure_cookie(
        &state,
        &headers,
        who.client_addr.as_deref().and_then(|a| a.parse().ok()),
    );
    let mut res = Redirect::to("/sign-in").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        access::set_cookie(SESSION_COOKIE, "", secure, true),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/?table=public.t")), "/?table=public.t");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "javascript:x",
            "/\t/evil.example",
            "/\n/evil.example",
            "/x\\y",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
