//! Time partitions of `pgtrail.entries` (`sql/store/0016_partitioned.sql`;
//! since 0023 a partition of `pgtrail.entry_rows` and its pair of
//! `pgtrail.transactions`):
//! the period a store is partitioned by, the ledger of partitions made, and
//! the keeper that makes them ahead of time.
//!
//! Every partition is made by `pgtrail.ensure_partition`, a SECURITY
//! DEFINER function owned by the setup role: the daemon and the web view
//! cannot run DDL and need not. The keeper makes the current period's
//! partition and the next two at start and hourly; the writer makes one on
//! demand for a commit time outside them ([`Ranges`]), and record_event for
//! its own events. A partition is never made by `CREATE TABLE … PARTITION
//! OF` (see the function for why).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient};

use super::StoreError;
use crate::pg::PgUrl;

/// `[store] partition`: how much time one partition of entries holds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    Day,
    /// An ISO week, from Monday 00:00 UTC.
    Week,
    #[default]
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }
}

/// How many periods past the current one the keeper keeps made.
pub const AHEAD: usize = 2;
/// How often the keeper runs its pass.
const EVERY: Duration = Duration::from_secs(3600);
/// How soon the keeper tries again after a pass failed (the store was away).
const RETRY: Duration = Duration::from_secs(60);

/// The partition holding `at`, made if there is none; returns its table's name.
pub async fn ensure(client: &impl GenericClient, at: DateTime<Utc>) -> Result<String, StoreError> {
    Ok(client
        .query_one("SELECT pgtrail.ensure_partition($1)", &[&at])
        .await?
        .get(0))
}

/// Makes the partitions from the one holding `from` to the one holding
/// `to`, and `ahead` more after it: the periods in between, each once.
pub async fn ensure_span(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ahead: usize,
) -> Result<(), StoreError> {
    let mut at = from;
    let mut past = 0;
    loop {
        let name = ensure(client, at).await?;
        let end: DateTime<Utc> = client
            .query_one(
                "SELECT to_at FROM pgtrail.partitions WHERE name = $1",
                &[&name],
            )
            .await?
            .get(0);
        if end > to {
            past += 1;
            if past > ahead {
                return Ok(());
            }
        }
        at = end;
    }
}

/// The store's period (`pgtrail.settings`, written by setup).
pub async fn period(client: &Client) -> Result<Period, StoreError> {
    let text: String = client
        .query_one("SELECT partition FROM pgtrail.settings", &[])
        .await?
        .get(0);
    // The column's CHECK allows only these three.
    Ok(Period::parse(&text).unwrap_or_default())
}

/// The time ranges of the live partitions, in microseconds since the
/// epoch, as the writer checks commit times against them.
#[derive(Debug, Default, Clone)]
pub struct Ranges {
    /// [from, to) pairs, sorted, never overlapping.
    spans: Vec<(i64, i64)>,
}

impl Ranges {
    /// The ranges the ledger holds now, of partitions attached to
    /// `pgtrail.entry_rows` whose transactions partition is attached to
    /// `pgtrail.transactions` too. For any other range the writer calls
    /// `ensure_partition`, which makes a pair detached past pgtrail again,
    /// or says what to run when only one of a pair was.
    pub async fn load(client: &Client) -> Result<Ranges, StoreError> {
        let rows = client
            .query(
                "SELECT ((extract(epoch FROM p.from_at) * 1000000)::bigint), \
                        ((extract(epoch FROM p.to_at) * 1000000)::bigint) \
                 FROM pgtrail.partitions p \
                 JOIN pg_inherits i ON i.inhrelid = to_regclass(format('pgtrail.%I', p.name)) \
                                   AND i.inhparent = 'pgtrail.entry_rows'::regclass \
                 JOIN pg_inherits t \
                   ON t.inhrelid = to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(p.name))) \
                  AND t.inhparent = 'pgtrail.transactions'::regclass \
                 WHERE p.dropped_at IS NULL ORDER BY p.from_at",
                &[],
            )
            .await?;
        Ok(Ranges {
            spans: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        })
    }

    /// A partition holds this commit time.
    pub fn covers(&self, micros: i64) -> bool {
        let i = self.spans.partition_point(|(from, _)| *from <= micros);
        i > 0 && micros < self.spans[i - 1].1
    }
}

/// One pass of the keeper: the current period's partition and [`AHEAD`]
/// more.
pub async fn pass(client: &Client) -> Result<(), StoreError> {
    let now = Utc::now();
    ensure_span(client, now, now, AHEAD).await
}

/// The keeper: runs [`pass`] at start and hourly on a connection of its
/// own, for as long as the daemon runs. A failed pass (the store away, a
/// lock not granted within the function's timeout) is logged and tried
/// again a minute later; the writer makes what it needs anyway. `wanted`
/// is the config's `[store] partition`: if the store says otherwise, the
/// store's value is used, and said once. `retention` runs one retention
/// pass after each successful turn, so at most hourly.
pub async fn keep(
    store: PgUrl,
    wanted: Period,
    mut retention: crate::store::retention::keeper::Hourly,
) {
    let mut warned = false;
    loop {
        let done = async {
            let mut client = crate::pg::connect(&store, "pgtrail run")
                .await
                .map_err(|e| crate::pg::describe(&e))?;
            let stored = period(&client).await.map_err(|e| e.to_string())?;
            if stored != wanted && !warned {
                tracing::warn!(
                    config = wanted.as_str(),
                    store = stored.as_str(),
                    "[store] partition differs from the store's setting, which is used; run `pgtrail setup` to change the store's (it applies to partitions not made yet)"
                );
                warned = true;
            }
            pass(&client).await.map_err(|e| e.to_string())?;
            retention.turn(&mut client).await;
            Ok::<(), String>(())
        };
        let wait = match done.await {
            Ok(()) => EVERY,
            Err(e) => {
                tracing::warn!(error = %e, "partitions ahead not made; trying again in a minute");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The store's partitions for `status`: how many are live, the oldest one's
/// start and the newest one's end (RFC 3339, UTC), and the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub count: i64,
    pub oldest_from: Option<String>,
    pub newest_to: Option<String>,
    pub period: &'static str,
}

/// [`Summary`] of a store set up with partitions.
pub async fn summary(client: &Client) -> Result<Summary, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*), \
                    to_char(min(from_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    to_char(max(to_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM pgtrail.partitions WHERE dropped_at IS NULL",
            &[],
        )
        .await?;
    Ok(Summary {
        count: row.get(0),
        oldest_from: row.get(1),
        newest_to: row.get(2),
        period: period(client).await?.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_their_half_open_spans_only() {
        let r = Ranges {
            spans: vec![(10, 20), (20, 30), (40, 50)],
        };
        for (at, covered) in [
            (9, false),
            (10, true),
            (19, true),
            (20, true),
            (29, true),
            (30, false),
            (39, false),
            (40, true),
            (50, false),
        ] {
            assert_eq!(r.covers(at), covered, "{at}");
        }
        assert!(!Ranges::default().covers(0));
    }

    #[test]
    fn periods_are_the_settings_words() {
        for p in [Period::Day, Period::Week, Period::Month] {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(Period::parse("year"), None);
        assert_eq!(Period::default(), Period::Month);
    }
}
