//! The admin pages: capture's health (the panel of [`super::health::panel`]),
//! list, add and change users (role, tables, disable, enable, reset the
//! password, end their sessions) and create or revoke API tokens. Admins only; every form carries the CSRF token, and every change
//! is recorded with the admin as its actor (by [`crate::auth`]). An admin
//! restricted to some tables grants and manages only within them
//! ([`crate::auth::Manager`]): anything beyond is a 403 that says so.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;

use super::access::{auth_error, Principal};
use super::error::WebError;
use super::health::panel::{self, Panel};
use super::signin::form_fields;
use super::AppState;
use crate::auth::{sessions, tokens, users, Name, Role, Tables};
use crate::store::events::{record, Category};

/// A user as the admin page lists it.
struct UserRow {
    name: String,
    role: &'static str,
    tables: String,
    tables_input: String,
    state: String,
    disabled: bool,
    /// The signed-in admin: no Disable, and the role stays admin.
    is_self: bool,
    /// Within the admin's tables: else the page offers no change (the server would refuse it).
    manageable: bool,
}

impl UserRow {
    fn of(u: users::User, now: chrono::DateTime<chrono::Utc>, who: &Principal) -> UserRow {
        UserRow {
            is_self: u.name == who.name,
            manageable: u.tables.within(&who.tables),
            role: u.role.as_str(),
            tables: u.tables.describe(),
            tables_input: u.tables.to_stored().join(", "),
            state: if u.disabled {
                "disabled".into()
            } else if u.is_locked(now) {
                format!(
                    "locked until {}",
                    u.locked_until
                        .map(|t| t.format("%H:%M:%S UTC").to_string())
                        .unwrap_or_default()
                )
            } else {
                "active".into()
            },
            disabled: u.disabled,
            name: u.name,
        }
    }
}

/// An API token as the admin page lists it.
struct TokenRow {
    name: String,
    role: &'static str,
    tables: String,
    created: String,
    last_used: String,
    state: String,
    revoked: bool,
    manageable: bool,
}

impl TokenRow {
    fn of(t: tokens::Token, who: &Principal) -> TokenRow {
        TokenRow {
            manageable: t.tables.within(&who.tables),
            role: t.role.as_str(),
            tables: t.tables.describe(),
            created: format!(
                "{}{}",
                t.created_at.format("%Y-%m-%d %H:%M"),
                t.created_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ),
            last_used: t
                .last_used_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            state: if t.revoked_at.is_some() {
                "revoked".into()
            } else {
                "active".into()
            },
            revoked: t.revoked_at.is_some(),
            name: t.name,
        }
    }
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    notice: String,
    new_token: Option<(String, String)>,
    csrf: String,
    roles: Vec<&'static str>,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    capture: Panel,
    /// The tables this admin may grant: empty for every table.
    reach: String,
}

fn require_admin(state: &AppState, who: &Principal) -> Result<String, WebError> {
    who.require(Role::Admin, "manage users and API tokens")?;
    who.csrf(state).ok_or_else(|| {
        WebError::Forbidden(
            "The admin pages are for browsers; an API token cannot use them.".into(),
        )
    })
}

async fn render(
    state: &AppState,
    who: &Principal,
    csrf: String,
    notice: String,
    new_token: Option<(String, String)>,
) -> Result<Response, WebError> {
    let client = state.writer().get().await?;
    let now = chrono::Utc::now();
    let users = users::list(&*client).await.map_err(auth_error)?;
    let tokens = tokens::list(&*client).await.map_err(auth_error)?;
    drop(client);
    let capture = panel::load_or_note(state).await;
    let page = AdminPage {
        notice,
        new_token,
        csrf,
        roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
        users: users
            .into_iter()
            .map(|u| UserRow::of(u, now, who))
            .collect(),
        tokens: tokens.into_iter().map(|t| TokenRow::of(t, who)).collect(),
        capture,
        reach: if who.tables.is_all() {
            String::new()
        } else {
            who.tables.describe()
        },
    };
    Ok(Html(page.render()?).into_response())
}

/// `GET /admin`
pub async fn page(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, WebError> {
    let csrf = require_admin(&state, &who)?;
    render(&state, &who, csrf, String::new(), None).await
}

fn field<'a>(f: &'a std::collections::HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(|v| v.trim()).unwrap_or("")
}

/// The checks every admin form goes through (the admin role, then the form's
/// CSRF token); the page's CSRF token and the form's fields.
fn admin_form(
    state: &AppState,
    who: &Principal,
    body: &Bytes,
) -> Result<(String, std::collections::HashMap<String, String>), WebError> {
    let csrf = require_admin(state, who)?;
    let f = form_fields(body);
    who.check_csrf(state, f.get("csrf").map(String::as_str))?;
    Ok((csrf, f))
}

/// The role and tables fields of a user or token form.
fn grant(f: &std::collections::HashMap<String, String>) -> Result<(Role, Tables), WebError> {
    let role: Role = field(f, "role").parse().map_err(auth_error)?;
    let tables = Tables::parse_list(field(f, "tables")).map_err(auth_error)?;
    Ok((role, tables))
}

/// The name, role and tables of a form that adds a user or creates a token.
fn new_grant(
    f: &std::collections::HashMap<String, String>,
) -> Result<(Name, Role, Tables), WebError> {
    let name = Name::parse(field(f, "name")).map_err(auth_error)?;
    let (role, tables) = grant(f)?;
    Ok((name, role, tables))
}

/// `POST /admin/users` (name, role, tables, password)
pub async fn add_user(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<Response, WebError> {
    let (csrf, f) = admin_form(&state, &who, &body)?;
    let (name, role, tables) = new_grant(&f)?;
    let password = f.get("password").cloned().unwrap_or_default();
    let mut client = state.writer().get().await?;
    let u = users::add(&mut client, &who.manager(), &name, role, &tables, &password)
        .await
        .map_err(auth_error)?;
    drop(client);
    render(
        &state,
        &who,
        csrf,
        format!(
            "Added {} as {} (tables: {}).",
            u.name,
            u.role,
            u.tables.describe()
        ),
        None,
    )
    .await
}

/// `POST /admin/users/{name}` (action = update | disable | enable | reset_password | end_sessions)
pub async fn change_user(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let (csrf, f) = admin_form(&state, &who, &body)?;
    let manager = who.manager();
    let mut client = state.writer().get().await?;
    let notice = match field(&f, "action") {
        "update" => {
            let (role, tables) = grant(&f)?;
            if name == who.name && role < Role::Admin {
                return Err(WebError::bad(
                    "You cannot take the admin role from yourself here; another admin can, or use `pgtrail user set-role`.",
                ));
            }
            // Role and tables in one transaction, with one event for both.
            let u = users::change(
                &mut client,
                &manager,
                &name,
                users::Change::Grant(role, tables),
            )
            .await
            .map_err(auth_error)?;
            format!("{name}: role {}, tables {}.", u.role, u.tables.describe())
        }
        "disable" => {
            if name == who.name {
                return Err(WebError::bad(
                    "You cannot disable yourself; another admin can.",
                ));
            }
            users::change(&mut client, &manager, &name, users::Change::Disabled(true))
                .await
                .map_err(auth_error)?;
            format!("Disabled {name}; their sessions ended.")
        }
        "enable" => {
            users::change(&mut client, &manager, &name, users::Change::Disabled(false))
                .await
                .map_err(auth_error)?;
            format!("Enabled {name}.")
        }
        "reset_password" => {
            let password = f.get("password").cloned().unwrap_or_default();
            users::change(
                &mut client,
                &manager,
                &name,
                users::Change::Password(password),
            )
            .await
            .map_err(auth_error)?;
            format!("Set a new password for {name}; their sessions ended.")
        }
        "end_sessions" => {
            // The sessions end with their event or not at all, and only
            // those of a user this admin reaches.
            let tx = client.transaction().await?;
            users::lock_managed(&tx, &manager, &name)
                .await
                .map_err(auth_error)?;
            let n = sessions::end_all(&tx, &name).await.map_err(auth_error)?;
            let event = manager
                .actor
                .event(
                    Category::Session,
                    "sign_out",
                    format!("{} signed {name} out everywhere ({n} sessions)", who.name),
                )
                .detail("user", name.clone())
                .detail("everywhere", true)
                .detail("sessions", n);
            record(&tx, &event)
                .await
                .map_err(|e| auth_error(e.into()))?;
            tx.commit().await?;
            format!("Ended {n} sessions of {name}.")
        }
        other => {
            return Err(WebError::bad(format!(
                "action: {:?} is not one of update, disable, enable, reset_password, end_sessions",
                crate::text::clip(other)
            )))
        }
    };
    drop(client);
    render(&state, &who, csrf, notice, None).await
}

/// `POST /admin/tokens` (name, role, tables)
pub async fn create_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<Response, WebError> {
    let (csrf, f) = admin_form(&state, &who, &body)?;
    let (name, role, tables) = new_grant(&f)?;
    let mut client = state.writer().get().await?;
    let (t, secret) = tokens::create(&mut client, &who.manager(), &name, role, &tables)
        .await
        .map_err(auth_error)?;
    drop(client);
    render(&state, &who, csrf, String::new(), Some((t.name, secret))).await
}

/// `POST /admin/tokens/{name}/revoke`
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let (csrf, _) = admin_form(&state, &who, &body)?;
    let mut client = state.writer().get().await?;
    let t = tokens::revoke(&mut client, &who.manager(), &name)
        .await
        .map_err(auth_error)?;
    drop(client);
    render(
        &state,
        &who,
        csrf,
        format!("Revoked the API token {}.", t.name),
        None,
    )
    .await
}
