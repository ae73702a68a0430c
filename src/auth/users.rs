//! pgtrail users: add, list, change role or tables, disable, enable, reset
//! the password, and the password check of a sign-in with its lockout. Each
//! change commits with its `User` event, whose `before`/`after` are the user's
//! record without the hash.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::{Client, GenericClient, Row};

use super::audited::{commit_change, created, lock, record};
use super::{password, Audited, AuthError, Manager, Name, Role, Tables};
use crate::store::events::Category;

/// A user as stored, less the password hash.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub tables: Tables,
    pub disabled: bool,
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "name, role, tables, disabled, locked_until, created_at";

impl User {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

impl Audited for User {
    const CATEGORY: Category = Category::User;
    const TABLE: &'static str = "pgtrail.users";
    const COLUMNS: &'static str = COLUMNS;
    const MISSING: fn(String) -> AuthError = AuthError::NoSuchUser;
    const TAKEN: fn(String) -> AuthError = AuthError::UserExists;
    fn from_row(row: &Row) -> Result<User, AuthError> {
        Ok(User {
            name: row.get(0),
            role: row.get::<_, String>(1).parse()?,
            tables: Tables::from_stored(row.get(2))?,
            disabled: row.get(3),
            locked_until: row.get(4),
            created_at: row.get(5),
        })
    }
    fn name(&self) -> &str {
        &self.name
    }
    /// Never the hash, nor lockout counters.
    fn record(&self) -> Map<String, Value> {
        let disabled = ("disabled", self.disabled);
        record(&self.name, self.role, &self.tables, disabled)
    }
}

pub async fn get<C: GenericClient>(client: &C, name: &str) -> Result<Option<User>, AuthError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM pgtrail.users WHERE name = $1"),
            &[&name],
        )
        .await?;
    row.as_ref().map(User::from_row).transpose()
}

pub async fn list<C: GenericClient>(client: &C) -> Result<Vec<User>, AuthError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM pgtrail.users ORDER BY name"),
            &[],
        )
        .await?;
    rows.iter().map(User::from_row).collect()
}

/// Whether any user exists (else the web view explains how to create the first admin).
pub async fn any<C: GenericClient>(client: &C) -> Result<bool, AuthError> {
    Ok(client
        .query_one("SELECT EXISTS (SELECT 1 FROM pgtrail.users)", &[])
        .await?
        .get(0))
}

/// Hashing takes tens of milliseconds of CPU: off the async workers.
async fn hash_off_thread(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?
}

/// Adds a user with `tables`, which must be within the manager's own.
pub async fn add(
    client: &mut Client,
    manager: &Manager,
    name: &Name,
    role: Role,
    tables: &Tables,
    new_password: &str,
) -> Result<User, AuthError> {
    manager.may_grant(&format!("the user {name}"), tables)?;
    password::check_new(new_password)?;
    let hash = hash_off_thread(new_password.to_owned()).await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "INSERT INTO pgtrail.users (name, role, tables, password_hash) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[&name.as_str(), &role.as_str(), &tables.to_stored(), &hash],
        )
        .await?;
    let user: User = created(row, name)?;
    let summary = format!("added user {} as {}", user.name, user.role);
    commit_change(tx, &manager.actor, "user_added", summary, None, &user).await?;
    Ok(user)
}

/// What to change about a user.
#[derive(Debug, Clone)]
pub enum Change {
    Role(Role),
    Tables(Tables),
    /// Role and tables at once, as the admin page's form sets them: one
    /// event for what differs, none when nothing does.
    Grant(Role, Tables),
    Disabled(bool),
    Password(String),
}

/// The UPDATE a change makes and the event that records it.
struct Plan {
    /// `SET` assignments, with parameters from `$2` on (`$1` is the name).
    set: &'static str,
    params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    event: &'static str,
    summary: String,
}

/// What `change` does to `before`; `None` when it would change nothing
/// (only a [`Change::Grant`] equal to what the user has).
fn plan(before: &User, change: Change, hash: Option<String>) -> Option<Plan> {
    let name = &before.name;
    let role_text = |r: Role| format!("role of {name} changed from {} to {r}", before.role);
    let tables_text = |t: &Tables| format!("from {} to {}", before.tables.describe(), t.describe());
    let plan = |set, params, event, summary| {
        Some(Plan {
            set,
            params,
            event,
            summary,
        })
    };
    match change {
        Change::Role(r) => plan(
            "role = $2",
            vec![Box::new(r.as_str())],
            "role_changed",
            role_text(r),
        ),
        Change::Tables(t) => plan(
            "tables = $2",
            vec![Box::new(t.to_stored())],
            "tables_changed",
            format!("tables of {name} changed {}", tables_text(&t)),
        ),
        Change::Grant(r, t) => {
            let (event, summary) = match (r != before.role, t != before.tables) {
                (false, false) => return None,
                (true, false) => ("role_changed", role_text(r)),
                (false, true) => (
                    "tables_changed",
                    format!("tables of {name} changed {}", tables_text(&t)),
                ),
                (true, true) => (
                    "role_and_tables_changed",
                    format!("{}, tables {}", role_text(r), tables_text(&t)),
                ),
            };
            plan(
                "role = $2, tables = $3",
                vec![Box::new(r.as_str()), Box::new(t.to_stored())],
                event,
                summary,
            )
        }
        Change::Disabled(true) => plan(
            "disabled = $2",
            vec![Box::new(true)],
            "user_disabled",
            format!("disabled user {name}"),
        ),
        Change::Disabled(false) => plan(
            "disabled = $2, failed_attempts = 0, locked_until = NULL",
            vec![Box::new(false)],
            "user_enabled",
            format!("enabled user {name}"),
        ),
        Change::Password(_) => plan(
            "password_hash = $2, failed_attempts = 0, locked_until = NULL",
            vec![Box::new(hash.unwrap_or_default())],
            "password_reset",
            format!("reset the password of {name}"),
        ),
    }
}

/// The user `name`, its row locked until `tx` ends, if `manager` may change
/// it (its tables are within the manager's own).
pub async fn lock_managed<C: GenericClient>(
    tx: &C,
    manager: &Manager,
    name: &str,
) -> Result<User, AuthError> {
    let user: User = lock(tx, name).await?;
    manager.may_manage(&format!("the user {}", user.name), &user.tables)?;
    Ok(user)
}

/// Applies `change` and records it, in one transaction; returns the user
/// after. Disabling a user or resetting the password ends their sessions.
/// The manager must reach the user, and any tables it gives.
pub async fn change(
    client: &mut Client,
    manager: &Manager,
    name: &str,
    change: Change,
) -> Result<User, AuthError> {
    let hash = match &change {
        Change::Password(p) => {
            password::check_new(p)?;
            Some(hash_off_thread(p.clone()).await?)
        }
        _ => None,
    };
    let ends_sessions = matches!(change, Change::Disabled(true) | Change::Password(_));
    let tx = client.transaction().await?;
    let before = lock_managed(&tx, manager, name).await?;
    if let Change::Tables(t) | Change::Grant(_, t) = &change {
        manager.may_grant(&format!("the user {}", before.name), t)?;
    }
    let Some(plan) = plan(&before, change, hash) else {
        return Ok(before);
    };
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&name];
    params.extend(
        plan.params
            .iter()
            .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    let row = tx
        .query_one(
            &format!(
                "UPDATE pgtrail.users SET {}, updated_at = now() WHERE name = $1 RETURNING {COLUMNS}",
                plan.set
            ),
            &params,
        )
        .await?;
    let after = User::from_row(&row)?;
    if ends_sessions {
        tx.execute(
            "DELETE FROM pgtrail.sessions WHERE user_name = $1",
            &[&name],
        )
        .await?;
    }
    let actor = &manager.actor;
    commit_change(tx, actor, plan.event, plan.summary, Some(&before), &after).await?;
    Ok(after)
}

/// Failed sign-ins before a lock, and how long it lasts.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    pub after: u32,
    pub seconds: u64,
}

/// How a password check went. The caller tells the user the same thing for
/// every failure.
#[derive(Debug)]
pub enum SignIn {
    Ok(User),
    /// Unknown user, disabled, locked, or a wrong password.
    Failed {
        /// This failure locked the account.
        locked_now: bool,
        /// The account was already locked (the password was not checked).
        locked: bool,
    },
}

/// What a sign-in learnt about the user before the slow hash check: read
/// with a store connection that is given back before argon2 runs, so a flood
/// of guesses never holds the store connections that signed-in users need.
#[derive(Debug)]
pub struct Candidate {
    /// The user, if there is one by that name.
    user: Option<User>,
    /// The hash to check against; `None` (unknown, disabled or locked) checks a dummy one.
    hash: Option<String>,
}

/// Reads what [`Candidate::verify`] and [`settle`] need about `name`.
pub async fn candidate<C: GenericClient>(client: &C, name: &str) -> Result<Candidate, AuthError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS}, password_hash FROM pgtrail.users WHERE name = $1"),
            &[&name],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Candidate {
            user: None,
            hash: None,
        });
    };
    let user = User::from_row(&row)?;
    let usable = !user.disabled && !user.is_locked(Utc::now());
    Ok(Candidate {
        hash: usable.then(|| row.get::<_, String>(6)),
        user: Some(user),
    })
}

impl Candidate {
    /// Whether `given` is the password, on a blocking thread. Every path
    /// spends one argon2 verification, against a dummy hash where there is
    /// no usable account, so timing does not tell whether a user exists.
    pub async fn verify(&self, given: &str) -> Result<bool, AuthError> {
        let hash = self.hash.clone();
        let given = given.to_owned();
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => password::verify(&h, &given),
            None => password::verify_dummy(&given),
        })
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))
    }
}

/// Writes the outcome of a checked password: a success clears the failure
/// count, a failure counts and locks after `lockout.after`. Run it in the
/// transaction that also stores the session or the events, so they commit
/// together. The caller tells the user the same thing for every failure.
pub async fn settle<C: GenericClient>(
    client: &C,
    candidate: &Candidate,
    password_ok: bool,
    lockout: Lockout,
) -> Result<SignIn, AuthError> {
    let Some(user) = &candidate.user else {
        return Ok(SignIn::Failed {
            locked_now: false,
            locked: false,
        });
    };
    if candidate.hash.is_none() {
        return Ok(SignIn::Failed {
            locked_now: false,
            locked: user.is_locked(Utc::now()),
        });
    }
    let name = user.name.as_str();
    // Both outcomes are written only while the account is not locked: a
    // guess checked while another one locked it must neither pass nor undo
    // the lock (the lock was read before the slow hash check).
    const NOT_LOCKED: &str = "(locked_until IS NULL OR locked_until <= now())";
    if password_ok {
        // The user as it is now: a role change or disable since the read counts.
        let row = client
            .query_opt(
                &format!(
                    "UPDATE pgtrail.users SET failed_attempts = 0, locked_until = NULL \
                     WHERE name = $1 AND NOT disabled AND {NOT_LOCKED} RETURNING {COLUMNS}"
                ),
                &[&name],
            )
            .await?;
        return Ok(match row {
            Some(row) => SignIn::Ok(User::from_row(&row)?),
            None => SignIn::Failed {
                locked_now: false,
                locked: true,
            },
        });
    }
    // Count and lock in one statement, so concurrent guesses cannot slip past the limit.
    let after = i32::try_from(lockout.after.max(1)).unwrap_or(i32::MAX);
    let seconds = lockout.seconds as f64;
    let counted = client
        .query_opt(
            &format!(
                "UPDATE pgtrail.users SET \
                     locked_until = CASE WHEN failed_attempts + 1 >= $2 THEN now() + make_interval(secs => $3) END, \
                     failed_attempts = CASE WHEN failed_attempts + 1 >= $2 THEN 0 ELSE failed_attempts + 1 END \
                 WHERE name = $1 AND {NOT_LOCKED} RETURNING locked_until IS NOT NULL"
            ),
            &[&name, &after, &seconds],
        )
        .await?;
    Ok(match counted {
        Some(row) => {
            let locked_now: bool = row.get(0);
            SignIn::Failed {
                locked_now,
                locked: locked_now,
            }
        }
        // Locked meanwhile by a concurrent guess.
        None => SignIn::Failed {
            locked_now: false,
            locked: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eve() -> User {
        User {
            name: "eve".into(),
            role: Role::Viewer,
            tables: Tables::parse_list("public.orders").unwrap(),
            disabled: false,
            locked_until: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_grant_records_one_event_named_for_what_differs() {
        let all = Tables::default();
        let same = eve().tables;
        let p = |role, tables| plan(&eve(), Change::Grant(role, tables), None);
        assert!(p(Role::Viewer, same.clone()).is_none());
        let role_only = p(Role::Auditor, same.clone()).unwrap();
        assert_eq!(role_only.event, "role_changed");
        assert_eq!(
            role_only.summary,
            "role of eve changed from viewer to auditor"
        );
        assert_eq!(
            p(Role::Viewer, all.clone()).unwrap().event,
            "tables_changed"
        );
        let both = p(Role::Admin, all).unwrap();
        assert_eq!(both.event, "role_and_tables_changed");
        assert_eq!(
            both.summary,
            "role of eve changed from viewer to admin, tables from public.orders to all"
        );
        assert_eq!(both.params.len(), 2);
        // A single change is recorded even when it sets what is there (the CLI says what it did).
        assert_eq!(
            plan(&eve(), Change::Role(Role::Viewer), None)
                .unwrap()
                .event,
            "role_changed"
        );
    }
}
