//! What the filters need from the store before their SQL can be written: the
//! id range a time filter covers, and how a primary-key value is matched.

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;

use super::keys::PkMatch;
use super::params::Filter;
use crate::store::sources;
use crate::text::clip;
use crate::web::error::WebError;

/// What the filters need from the store before their SQL can be written.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// How the primary-key filter is matched.
    pub pk: Option<PkMatch>,
    /// Ids below `lo` or from `hi` on cannot match the time filters; the
    /// conditions on `committed_at` stay, so these only save reading.
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

/// Ids follow commit order, and commit times follow ids to well within this
/// (clock steps aside); a time bound widened by it is a safe id bound.
const TIME_SLACK_MINUTES: i64 = 60;

/// The smallest id from which every entry committed at or after `t`, found by
/// binary search on the primary key (about log2(entries) index probes) since
/// commit times rise with ids; one past the newest id if none did.
///
/// The search runs in the server, one statement: probe by probe from here it
/// cost two dozen round trips per bound, most of a time-filtered page's time
/// on a busy machine (bench/web.sh).
async fn first_id_from(client: &Client, t: DateTime<Utc>) -> Result<i64, WebError> {
    // Each step probes the first entry at or after the middle id: one
    // committed before `t` moves the lower end past it, anything else (a
    // later one, or none) moves the upper end to the middle.
    const SEARCH: &str = "WITH RECURSIVE search(lo, hi) AS ( \
            SELECT min(id), max(id) + 1 FROM pgtrail.entries \
          UNION ALL \
            SELECT CASE WHEN p.committed_at < $1 THEN p.id + 1 ELSE s.lo END, \
                   CASE WHEN p.committed_at < $1 THEN s.hi ELSE s.lo + (s.hi - s.lo) / 2 END \
            FROM search s \
            LEFT JOIN LATERAL (SELECT id, committed_at FROM pgtrail.entries \
                               WHERE id >= s.lo + (s.hi - s.lo) / 2 ORDER BY id LIMIT 1) p ON true \
            WHERE s.lo < s.hi) \
        SELECT lo FROM search WHERE lo >= hi";
    let row = client.query_opt(SEARCH, &[&t]).await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0)))
}

/// Refuses a `db` that names no source of the store, with the names it knows.
pub async fn check_sources(client: &Client, dbs: &[String]) -> Result<(), WebError> {
    if dbs.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = sources::all(client)
        .await?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    match dbs.iter().find(|d| !known.contains(d)) {
        None => Ok(()),
        Some(unknown) => Err(WebError::bad(format!(
            "db: the store has no source {:?}; its sources are {}",
            clip(unknown),
            known.join(", ")
        ))),
    }
}

impl Filter {
    /// Checks the sources named, and resolves the key match and the id
    /// range of the time filters.
    pub async fn resolve(&self, client: &Client, now: DateTime<Utc>) -> Result<Resolved, WebError> {
        check_sources(client, &self.dbs).await?;
        let slack = Duration::minutes(TIME_SLACK_MINUTES);
        let lo = match self.since(now) {
            Some(t) => Some(first_id_from(client, t - slack).await?),
            None => None,
        };
        let hi = match &self.to {
            Some((_, t)) => Some(first_id_from(client, *t + slack).await?),
            None => None,
        };
        Ok(Resolved {
            pk: self.pk_match(client).await?,
            lo,
            hi,
        })
    }
}
