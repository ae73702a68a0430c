//! API tokens for the JSON API: created by an admin with a role and optional
//! table restriction, shown once (`pgt_` and 43 characters), stored as their
//! SHA-256, revocable. A revoked token stays listed, so its history is kept.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::{Client, GenericClient, Row};

use super::audited::{commit_change, created, lock, record};
use super::{random_secret, secret_hash, Audited, AuthError, Manager, Name, Role, Tables};
use crate::store::events::Category;

/// The prefix of every token, so a leaked one is recognisable in a scan.
pub const PREFIX: &str = "pgt_";

#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub tables: Tables,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "name, role, tables, created_by, created_at, revoked_at, last_used_at";

impl Audited for Token {
    const CATEGORY: Category = Category::Token;
    const TABLE: &'static str = "pgtrail.tokens";
    const COLUMNS: &'static str = COLUMNS;
    const MISSING: fn(String) -> AuthError = AuthError::NoSuchToken;
    const TAKEN: fn(String) -> AuthError = AuthError::TokenExists;
    fn from_row(row: &Row) -> Result<Token, AuthError> {
        Ok(Token {
            name: row.get(0),
            role: row.get::<_, String>(1).parse()?,
            tables: Tables::from_stored(row.get(2))?,
            created_by: row.get(3),
            created_at: row.get(4),
            revoked_at: row.get(5),
            last_used_at: row.get(6),
        })
    }
    fn name(&self) -> &str {
        &self.name
    }
    /// Never the secret or its hash.
    fn record(&self) -> Map<String, Value> {
        let revoked = ("revoked", self.revoked_at.is_some());
        record(&self.name, self.role, &self.tables, revoked)
    }
}

/// Creates a token with `tables`, which must be within the manager's own;
/// returns it and its secret, which is not kept anywhere.
pub async fn create(
    client: &mut Client,
    manager: &Manager,
    name: &Name,
    role: Role,
    tables: &Tables,
) -> Result<(Token, String), AuthError> {
    manager.may_grant(&format!("the API token {name}"), tables)?;
    let actor = &manager.actor;
    let secret = format!("{PREFIX}{}", random_secret()?);
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "INSERT INTO pgtrail.tokens (name, token_hash, role, tables, created_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[&name.as_str(), &secret_hash(&secret), &role.as_str(), &tables.to_stored(), &actor.name],
        )
        .await?;
    let token: Token = created(row, name)?;
    let summary = format!("created API token {} as {}", token.name, token.role);
    commit_change(tx, actor, "token_created", summary, None, &token).await?;
    Ok((token, secret))
}

/// The token named `name`, if it exists and is not revoked.
pub async fn active<C: GenericClient>(client: &C, name: &str) -> Result<Option<Token>, AuthError> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM pgtrail.tokens WHERE name = $1 AND revoked_at IS NULL"),
            &[&name],
        )
        .await?
        .as_ref()
        .map(Token::from_row)
        .transpose()
}

pub async fn list<C: GenericClient>(client: &C) -> Result<Vec<Token>, AuthError> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM pgtrail.tokens ORDER BY name"),
            &[],
        )
        .await?
        .iter()
        .map(Token::from_row)
        .collect()
}

/// Revokes a token at once, if the manager reaches its tables; revoking a
/// revoked token is a no-op without an event.
pub async fn revoke(
    client: &mut Client,
    manager: &Manager,
    name: &str,
) -> Result<Token, AuthError> {
    let tx = client.transaction().await?;
    let before: Token = lock(&tx, name).await?;
    manager.may_manage(&format!("the API token {}", before.name), &before.tables)?;
    if before.revoked_at.is_some() {
        return Ok(before);
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE pgtrail.tokens SET revoked_at = now() WHERE name = $1 RETURNING {COLUMNS}"
            ),
            &[&name],
        )
        .await?;
    let after = Token::from_row(&row)?;
    let summary = format!("revoked API token {name}");
    commit_change(
        tx,
        &manager.actor,
        "token_revoked",
        summary,
        Some(&before),
        &after,
    )
    .await?;
    Ok(after)
}

/// The live token with this secret, if any; notes its use, at most once a
/// minute: a client polling the API must not turn every request into a row
/// update (the same rule as a session's `last_seen`).
pub async fn lookup<C: GenericClient>(
    client: &C,
    secret: &str,
) -> Result<Option<Token>, AuthError> {
    if !secret.starts_with(PREFIX) {
        return Ok(None);
    }
    // One round trip; the UPDATE in the WITH runs whether or not the outer
    // query reads it, and writes nothing while last_used_at is recent.
    client
        .query_opt(
            &format!(
                "WITH found AS (SELECT {COLUMNS} FROM pgtrail.tokens \
                                WHERE token_hash = $1 AND revoked_at IS NULL), \
                      touched AS (UPDATE pgtrail.tokens SET last_used_at = now() \
                                  WHERE token_hash = $1 AND revoked_at IS NULL \
                                    AND (last_used_at IS NULL \
                                         OR last_used_at < now() - interval '1 minute')) \
                 SELECT {COLUMNS} FROM found"
            ),
            &[&secret_hash(secret)],
        )
        .await?
        .as_ref()
        .map(Token::from_row)
        .transpose()
}
