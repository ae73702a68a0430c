//! What users and API tokens have in common: each is a row of its own table,
//! named, and every change to one commits together with the event that
//! records it. The steps of such a change live here once: lock the row,
//! take what an insert made, record the change and commit.

use serde_json::{json, Map, Value};
use tokio_postgres::{GenericClient, Row, Transaction};

use super::{Actor, AuthError, Name, Role, Tables};
use crate::store::events::Category;

/// A user or an API token: a row of its own table, whose changes are
/// recorded as events with its state before and after.
pub trait Audited: Sized {
    /// The events' category (their entry's table).
    const CATEGORY: Category;
    /// Its table, and the columns [`Audited::from_row`] reads, in order.
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    /// The errors for a name that is not there, and for one already taken.
    const MISSING: fn(String) -> AuthError;
    const TAKEN: fn(String) -> AuthError;
    fn from_row(row: &Row) -> Result<Self, AuthError>;
    fn name(&self) -> &str;
    /// The record as events (and `list --json`) show it: never a secret or its hash.
    fn record(&self) -> Map<String, Value>;
}

/// The record of a user or token: its name, role and tables, and the flag
/// (`disabled`, `revoked`) that says whether it may be used.
pub(crate) fn record(
    name: &str,
    role: Role,
    tables: &Tables,
    (flag, set): (&str, bool),
) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert("name".into(), json!(name));
    record.insert("role".into(), json!(role.as_str()));
    record.insert("tables".into(), json!(tables.to_stored()));
    record.insert(flag.into(), json!(set));
    record
}

/// `list --json`: each record with the fields `more` gives it, in a JSON array.
pub fn json_list<R: Audited, const N: usize>(
    records: &[R],
    more: impl Fn(&R) -> [(&'static str, Value); N],
) -> serde_json::Result<String> {
    let list: Vec<_> = records
        .iter()
        .map(|r| {
            let mut record = r.record();
            for (key, value) in more(r) {
                record.insert(key.into(), value);
            }
            record
        })
        .collect();
    serde_json::to_string(&list)
}

/// The user or token named `name` as it is before a change, its row locked
/// until the transaction ends; [`Audited::MISSING`] when there is none.
pub(crate) async fn lock<R: Audited, C: GenericClient>(tx: &C, name: &str) -> Result<R, AuthError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {} FROM {} WHERE name = $1 FOR UPDATE",
                R::COLUMNS,
                R::TABLE
            ),
            &[&name],
        )
        .await?;
    match row {
        Some(r) => R::from_row(&r),
        None => Err(R::MISSING(crate::text::clip(name))),
    }
}

/// What an `INSERT … ON CONFLICT (name) DO NOTHING RETURNING` made: no row
/// means `name` is taken ([`Audited::TAKEN`]).
pub(crate) fn created<R: Audited>(row: Option<Row>, name: &Name) -> Result<R, AuthError> {
    match row {
        Some(r) => R::from_row(&r),
        None => Err(R::TAKEN(name.to_string())),
    }
}

/// Records `actor`'s change of a user or token from `before` (`None` where
/// it did not exist) to `after`, keyed by its name, in `tx`, the transaction
/// that made the change, and commits: both commit or neither.
pub(crate) async fn commit_change<R: Audited>(
    tx: Transaction<'_>,
    actor: &Actor,
    event: &'static str,
    summary: String,
    before: Option<&R>,
    after: &R,
) -> Result<(), AuthError> {
    let mut e = actor.event(R::CATEGORY, event, summary);
    e.primary_key = Some(json!({ "name": after.name() }));
    e.before = before.map(Audited::record);
    e.after = Some(after.record());
    crate::store::events::record(&tx, &e).await?;
    tx.commit().await?;
    Ok(())
}
