//! Which ids each partition of the entries holds ([`Spans`]), kept by the web
//! view between requests ([`SpanBook`]) and brought up to date from the
//! entries stored since, so that a reading in id order visits only the
//! partitions that can hold its ids: the newest page reads the partition with
//! the newest ids and stops once no other can hold a newer one
//! (`log::walk`), and a reading of an id range (a window of a count, of a
//! free-text page, of the breakdown) names the partitions holding it.
//!
//! Why: a statement in id order over the parent probes every partition's
//! primary key, however few rows it returns; and ids do not follow the
//! partition key (a lagging source stores its backlog, new ids, into old
//! partitions; the owner may date an event any time). So the spans are read,
//! not assumed: afresh, each partition's smallest and largest id.
//!
//! Why the entries since are enough, and known to be all (as in [`super::key_book`]):
//! - Each source's entries, pgtrail's events (source 0) included, are
//!   written one store transaction after another (capture: the source's
//!   capture lock; events: `record_event` takes the events head's row lock
//!   before its id), each moving the source's chain head in the same
//!   transaction; so the entries a source stores after a reading have ids
//!   above every one of its entries visible then. A reading afresh takes
//!   each source's newest id (within [`WINDOW`] of the newest) as its mark.
//! - A source's entries come in its commit order, so those stored since lie
//!   from about the commit time of its newest entry read (its *floor*, less
//!   [`SLACK_SECONDS`]) to about the newest commit time its checkpoint
//!   records (`pgtrail.checkpoints.last_committed_at`, written with the
//!   entries; plus the slack). Only the partitions in that range are read.
//! - That is an expectation, not a guarantee (a clock stepped back, an event
//!   dated in the past by the store's owner, an entry written by hand, an
//!   event writer that took its id before the head's lock), so the book
//!   counts: the entries read above a source's mark must be as many as its
//!   head grew by; if one lay outside the time range or below the mark (or
//!   beyond [`WINDOW`] ids) the count falls short and the spans are read
//!   afresh.
//! - Entries leave only by retention's drop of a whole partition and come
//!   back only by a restore; both change the ledger, as does a partition made
//!   ahead or attached or detached by hand, and any change reads afresh.
//! - A partition attached that the ledger does not know (by hand) has no
//!   range: then the spans bound nothing ([`Spans::whole`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::{GenericClient, Row};

use super::key_book::LEDGER;
use super::sql::Sql;
use crate::web::error::WebError;

/// How many ids below the newest a reading afresh looks for each source's
/// newest entry (its mark, and its floor); a source with none there has
/// its mark this far below the newest id and no floor.
const WINDOW: i64 = 100_000;

/// How far a source's entries stored since a reading may lie before its
/// floor or after its checkpoint's time and still be found without reading
/// afresh: clock steps and the order of commits within a batch.
const SLACK_SECONDS: i64 = 3600;

/// Every capture source and the events (source 0), with their chain heads.
const HEADS: &str = "heads AS (SELECT s.id AS source, coalesce(h.hash, ''::bytea) AS hash, \
       coalesce(h.entries, 0) AS entries \
     FROM pgtrail.sources s LEFT JOIN pgtrail.chain_heads h ON h.source = s.id)";

/// A reading's rows: kind, source, hash, entries, n, lo, hi, t0, t1, part,
/// text. A source: its head, `n` entries read above its mark (`lo`, afresh),
/// the newest (`hi`) and its time (`t0`). A partition (`part`, its OID): its
/// ids (`lo`, `hi`) and range (`t0`, `t1`). The ledger: `text`.
const NONE: &str = "NULL::smallint, NULL::bytea, NULL::bigint, NULL::bigint";

/// Reads the spans afresh ($1: [`WINDOW`]).
fn afresh_sql() -> String {
    format!(
        "WITH {HEADS}, {LEDGER}, \
         parts AS MATERIALIZED (SELECT c.oid::bigint AS part, p.from_at, p.to_at \
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
           LEFT JOIN pgtrail.partitions p ON p.name = c.relname AND p.dropped_at IS NULL \
           WHERE i.inhparent = 'pgtrail.entries'::regclass), \
         spans AS MATERIALIZED (SELECT part, from_at, to_at, \
           (SELECT min(id) FROM pgtrail.entries e \
            WHERE e.committed_at >= parts.from_at AND e.committed_at < parts.to_at) AS lo, \
           (SELECT max(id) FROM pgtrail.entries e \
            WHERE e.committed_at >= parts.from_at AND e.committed_at < parts.to_at) AS hi \
           FROM parts), \
         top AS MATERIALIZED (SELECT coalesce(max(hi), 0) AS top FROM spans), \
         win AS (SELECT e.source, max(e.id) AS newest, \
                   (array_agg(e.committed_at ORDER BY e.id DESC))[1] AS at \
           FROM pgtrail.entries e \
           WHERE e.id > (SELECT top FROM top) - $1 AND e.id <= (SELECT top FROM top) GROUP BY e.source) \
         SELECT 'source'::text AS kind, h.source, h.hash, h.entries, 0::bigint AS n, \
                coalesce(w.newest, (SELECT top FROM top) - $1) AS lo, w.newest AS hi, w.at AS t0, \
                NULL::timestamptz AS t1, NULL::bigint AS part, NULL::text AS text \
         FROM heads h LEFT JOIN win w USING (source) \
         UNION ALL SELECT 'part', {NONE}, lo, hi, from_at, to_at, part, NULL FROM spans \
         UNION ALL SELECT 'ledger', {NONE}, NULL, NULL, NULL, NULL, NULL, text FROM ledger"
    )
}

/// The heads and the ledger alone, which touch no partition.
fn heads_sql() -> String {
    format!(
        "WITH {HEADS}, {LEDGER} \
         SELECT 'source'::text AS kind, source, hash, entries, 0::bigint AS n, NULL::bigint AS lo, \
                NULL::bigint AS hi, NULL::timestamptz AS t0, NULL::timestamptz AS t1, \
                NULL::bigint AS part, NULL::text AS text FROM heads \
         UNION ALL SELECT 'ledger', {NONE}, NULL, NULL, NULL, NULL, NULL, text FROM ledger"
    )
}

/// Brings spans up to date ($1 to $5: their sources, heads, marks and
/// floors; $6: [`WINDOW`]; $7: [`SLACK_SECONDS`]): of each source whose head
/// moved, its entries above its mark within its time range, counted, and
/// per partition the smallest and largest of their ids. `OFFSET 0` keeps
/// the reading of each source's entries a subquery run per source, with its
/// time range as parameters that leave the other partitions out; pulled up
/// into a join, it read every partition once.
fn since_sql() -> String {
    format!(
        "WITH {HEADS}, {LEDGER}, \
         known(source, hash, entries, mark, floor) AS ( \
           SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bigint[], $4::bigint[], $5::timestamptz[])), \
         moved AS MATERIALIZED (SELECT k.source, k.mark, coalesce(k.floor, '-infinity') AS floor, \
             coalesce((SELECT max(c.last_committed_at) FROM pgtrail.checkpoints c \
                       WHERE c.source = k.source AND k.source > 0) \
                      + make_interval(secs => $7::bigint), 'infinity') AS ceiling \
           FROM known k JOIN heads h USING (source) WHERE h.hash <> k.hash OR h.entries <> k.entries), \
         lo AS MATERIALIZED (SELECT min(mark) AS lo FROM moved), \
         new AS MATERIALIZED (SELECT m.source, x.part, x.id, x.committed_at FROM moved m CROSS JOIN LATERAL ( \
             SELECT e.tableoid::bigint AS part, e.id, e.committed_at FROM pgtrail.entries e \
             WHERE e.source = m.source AND e.id > m.mark AND e.id <= (SELECT lo FROM lo) + $6 \
               AND e.committed_at >= m.floor AND e.committed_at <= m.ceiling OFFSET 0) x) \
         SELECT 'source'::text AS kind, h.source, h.hash, h.entries, coalesce(n.n, 0) AS n, \
                NULL::bigint AS lo, n.newest AS hi, n.at AS t0, NULL::timestamptz AS t1, \
                NULL::bigint AS part, NULL::text AS text \
         FROM heads h LEFT JOIN (SELECT source, count(*) AS n, max(id) AS newest, \
                (array_agg(committed_at ORDER BY id DESC))[1] AS at FROM new GROUP BY source) n \
           USING (source) \
         UNION ALL SELECT 'part', {NONE}, min(id), max(id), NULL, NULL, part, NULL FROM new GROUP BY part \
         UNION ALL SELECT 'ledger', {NONE}, NULL, NULL, NULL, NULL, NULL, text FROM ledger"
    )
}

/// One source as the spans hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    /// Its chain head: hash and count.
    hash: Vec<u8>,
    entries: i64,
    /// Its entries stored after the reading have ids above this.
    mark: i64,
    /// Where its next entries are expected from (the commit time of its
    /// newest entry read, less the slack); none: anywhere.
    floor: Option<DateTime<Utc>>,
}

/// One partition attached: its range of commit times, and the smallest and
/// largest id it holds (none: empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its table's OID.
    oid: i64,
    /// `[from, to)`; none for a partition the ledger does not know.
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub ids: Option<(i64, i64)>,
}

/// The ids each partition holds, as of a reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    ledger: String,
    sources: BTreeMap<i16, Source>,
    parts: Vec<Part>,
}

/// A source as a reading found it.
#[derive(Debug, Clone)]
struct SourceRow {
    id: i16,
    hash: Vec<u8>,
    entries: i64,
    /// How many of its entries were read above its mark (none, read afresh).
    n: i64,
    /// Read afresh: its mark.
    mark: Option<i64>,
    /// The newest of them, and its commit time.
    newest: Option<(i64, DateTime<Utc>)>,
}

/// A reading's rows, as values.
#[derive(Debug, Default)]
struct Reading {
    ledger: String,
    sources: Vec<SourceRow>,
    parts: Vec<Part>,
}

impl Reading {
    fn of(rows: &[Row]) -> Result<Reading, WebError> {
        let mut r = Reading::default();
        for row in rows {
            let kind: String = row.try_get(0)?;
            match kind.as_str() {
                "ledger" => r.ledger = row.try_get(10)?,
                "source" => r.sources.push(SourceRow {
                    id: row.try_get(1)?,
                    hash: row.try_get(2)?,
                    entries: row.try_get(3)?,
                    n: row.try_get(4)?,
                    mark: row.try_get(5)?,
                    newest: match (row.try_get(6)?, row.try_get(7)?) {
                        (Some(id), Some(at)) => Some((id, at)),
                        _ => None,
                    },
                }),
                _ => {
                    let range = match (row.try_get(7)?, row.try_get(8)?) {
                        (Some(from), Some(to)) => Some((from, to)),
                        _ => None,
                    };
                    let ids = match (row.try_get(5)?, row.try_get(6)?) {
                        (Some(lo), Some(hi)) => Some((lo, hi)),
                        _ => None,
                    };
                    r.parts.push(Part {
                        oid: row.try_get(9)?,
                        range,
                        ids,
                    });
                }
            }
        }
        Ok(r)
    }
}

/// Where a source's entries after one at `at` are expected from.
fn floor(at: DateTime<Utc>) -> DateTime<Utc> {
    at - Duration::seconds(SLACK_SECONDS)
}

impl Spans {
    /// The spans of a reading afresh.
    fn afresh(r: Reading) -> Spans {
        Spans {
            ledger: r.ledger,
            sources: r
                .sources
                .into_iter()
                .map(|found| {
                    let s = Source {
                        hash: found.hash,
                        entries: found.entries,
                        mark: found.mark.unwrap_or(0),
                        floor: found.newest.map(|(_, at)| floor(at)),
                    };
                    (found.id, s)
                })
                .collect(),
            parts: r.parts,
        }
    }

    /// These spans brought up to date by a reading since ([`since_sql`]);
    /// `None` when the reading cannot vouch for every entry stored since
    /// (see the module's doc), and the spans must be read afresh.
    fn advanced(&self, r: Reading) -> Option<Spans> {
        if r.ledger != self.ledger || r.sources.len() != self.sources.len() {
            return None;
        }
        let mut next = self.clone();
        for found in r.sources {
            let old = self.sources.get(&found.id)?;
            if old.hash == found.hash && old.entries == found.entries {
                continue;
            }
            let grown = found.entries - old.entries;
            if grown < 0 || found.n != grown {
                return None;
            }
            let s = next.sources.get_mut(&found.id)?;
            s.hash = found.hash;
            s.entries = found.entries;
            if let Some((id, at)) = found.newest {
                // Every entry of the source above the old mark was read: none is above this one.
                s.mark = s.mark.max(id);
                s.floor = Some(floor(at));
            }
        }
        for found in r.parts {
            let part = next.parts.iter_mut().find(|p| p.oid == found.oid)?;
            if let Some((lo, hi)) = found.ids {
                part.ids = Some(match part.ids {
                    Some((l, h)) => (l.min(lo), h.max(hi)),
                    None => (lo, hi),
                });
            }
        }
        Some(next)
    }

    /// Whether a reading of the heads ([`heads_sql`]) finds them as these have them.
    fn unmoved(&self, r: &Reading) -> bool {
        r.ledger == self.ledger
            && r.sources.len() == self.sources.len()
            && r.sources.iter().all(|found| {
                self.sources
                    .get(&found.id)
                    .is_some_and(|s| s.hash == found.hash && s.entries == found.entries)
            })
    }

    /// Whether every partition attached has its range in the ledger.
    pub fn whole(&self) -> bool {
        self.parts.iter().all(|p| p.range.is_some())
    }

    /// The ids the store holds, `[lo, hi)`: `(0, 1)` when it holds none.
    pub fn range(&self) -> (i64, i64) {
        let ids = self.parts.iter().filter_map(|p| p.ids);
        let lo = ids.clone().map(|(lo, _)| lo).min().unwrap_or(0);
        let hi = ids.map(|(_, hi)| hi).max().unwrap_or(0);
        (lo, hi + 1)
    }

    /// The partitions holding some id in `[lo, hi)`, with their ranges and
    /// ids; none when the spans are not [`Spans::whole`].
    pub fn holding(&self, lo: i64, hi: i64) -> Option<Vec<Held>> {
        if !self.whole() {
            return None;
        }
        Some(
            self.parts
                .iter()
                .filter_map(|p| match (p.range, p.ids) {
                    (Some((from, to)), Some((l, h))) if l < hi && h >= lo => Some(Held {
                        from,
                        to,
                        lo: l,
                        hi: h,
                    }),
                    _ => None,
                })
                .collect(),
        )
    }

    /// `(sources, hashes, entries, marks, floors)`: the parameters of [`since_sql`].
    fn known(&self) -> Known {
        let mut k = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, s) in &self.sources {
            k.0.push(*id);
            k.1.push(s.hash.clone());
            k.2.push(s.entries);
            k.3.push(s.mark);
            k.4.push(s.floor);
        }
        k
    }
}

/// The parameters of [`since_sql`]: sources, hashes, entries, marks, floors.
type Known = (
    Vec<i16>,
    Vec<Vec<u8>>,
    Vec<i64>,
    Vec<i64>,
    Vec<Option<DateTime<Utc>>>,
);

/// A partition holding ids: its commit times `[from, to)` and its smallest
/// and largest id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub lo: i64,
    pub hi: i64,
}

/// Appends ` AND (…)`: the commit times of `parts` (adjacent ones as one
/// range), by which the planner leaves every other partition out, at
/// planning or at the start of execution; ` AND false` for none.
pub fn push_within(sql: &mut Sql, parts: &[Held]) {
    let mut ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        parts.iter().map(|p| (p.from, p.to)).collect();
    ranges.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 >= from => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    if merged.is_empty() {
        sql.text.push_str(" AND false");
        return;
    }
    let mut alternatives = Vec::new();
    for (from, to) in merged {
        let (f, t) = (sql.param(from), sql.param(to));
        alternatives.push(format!("(committed_at >= {f} AND committed_at < {t})"));
    }
    sql.text
        .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
}

/// The web view's [`Spans`], shared by its requests.
#[derive(Debug, Default)]
pub struct SpanBook {
    last: Mutex<Option<Arc<Spans>>>,
}

impl SpanBook {
    /// The spans of `client`'s snapshot: the last ones brought up to date, or read afresh.
    pub async fn read<C: GenericClient>(&self, client: &C) -> Result<Arc<Spans>, WebError> {
        // A holder of the lock never panics, so a poisoned one still holds a whole value.
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let advanced = match &last {
            // The heads alone first: most often nothing moved, and no partition is read.
            Some(spans)
                if spans.unmoved(&Reading::of(&client.query(&heads_sql(), &[]).await?)?) =>
            {
                return Ok(spans.clone());
            }
            Some(spans) => {
                let (sources, hashes, entries, marks, floors) = spans.known();
                let rows = client
                    .query(
                        &since_sql(),
                        &[
                            &sources,
                            &hashes,
                            &entries,
                            &marks,
                            &floors,
                            &WINDOW,
                            &SLACK_SECONDS,
                        ],
                    )
                    .await?;
                spans.advanced(Reading::of(&rows)?).map(Arc::new)
            }
            None => None,
        };
        let spans = match advanced {
            Some(spans) => spans,
            None => {
                let rows = client.query(&afresh_sql(), &[&WINDOW]).await?;
                Arc::new(Spans::afresh(Reading::of(&rows)?))
            }
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(spans.clone());
        Ok(spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap()
    }

    fn part(oid: i64, day: u32, ids: Option<(i64, i64)>) -> Part {
        Part {
            oid,
            range: Some((at(day), at(day + 1))),
            ids,
        }
    }

    fn source(id: i16, entries: i64, n: i64, newest: Newest) -> SourceRow {
        SourceRow {
            id,
            hash: vec![entries as u8],
            entries,
            n,
            mark: None,
            newest,
        }
    }

    /// Source 1 with 10 entries, the newest id 100; three partitions.
    fn spans() -> Spans {
        let mut one = source(1, 10, 0, Some((100, at(3))));
        one.mark = Some(100);
        Spans::afresh(Reading {
            ledger: "l".into(),
            sources: vec![one],
            parts: vec![
                part(7, 1, Some((1, 50))),
                part(8, 2, Some((51, 60))),
                part(9, 3, None),
            ],
        })
    }

    type Newest = Option<(i64, DateTime<Utc>)>;

    fn since(entries: i64, n: i64, newest: Newest, parts: Vec<Part>) -> Reading {
        Reading {
            ledger: "l".into(),
            sources: vec![source(1, entries, n, newest)],
            parts,
        }
    }

    #[test]
    fn entries_since_widen_their_partitions_when_the_count_adds_up() {
        let s = spans();
        assert_eq!(s.range(), (1, 61));
        assert_eq!(s.sources[&1].floor, Some(floor(at(3))));
        // Three more, one late into the first partition.
        let next = s
            .advanced(since(
                13,
                3,
                Some((120, at(3))),
                vec![part(7, 1, Some((115, 115))), part(9, 3, Some((101, 120)))],
            ))
            .expect("counted in full");
        assert_eq!(next.parts[0].ids, Some((1, 115)));
        assert_eq!(next.parts[2].ids, Some((101, 120)));
        assert_eq!(next.sources[&1].mark, 120);
        assert_eq!(next.range(), (1, 121));
        let held = next.holding(110, 116).unwrap();
        assert_eq!(
            held.iter().map(|h| (h.lo, h.hi)).collect::<Vec<_>>(),
            vec![(1, 115), (101, 120)]
        );
        // Unmoved: the same spans.
        assert!(next.unmoved(&since(13, 0, None, Vec::new())));
        assert!(!next.unmoved(&since(14, 0, None, Vec::new())));
    }

    #[test]
    fn a_count_that_does_not_add_up_reads_afresh() {
        let s = spans();
        // The head grew by 3 but 2 were found: one lay outside the range read.
        assert_eq!(
            s.advanced(since(13, 2, Some((120, at(3))), Vec::new())),
            None
        );
        assert_eq!(
            s.advanced(since(13, 4, Some((120, at(3))), Vec::new())),
            None
        );
        // A changed ledger, a new source, a partition not known.
        let mut other = since(10, 0, None, Vec::new());
        other.ledger = "l2".into();
        assert_eq!(s.advanced(other), None);
        let mut more = since(10, 0, None, Vec::new());
        more.sources.push(source(2, 1, 0, None));
        assert_eq!(s.advanced(more), None);
        assert_eq!(
            s.advanced(since(
                11,
                1,
                Some((130, at(3))),
                vec![part(99, 3, Some((130, 130)))]
            )),
            None
        );
    }

    #[test]
    fn a_partition_the_ledger_does_not_know_bounds_nothing() {
        let mut s = spans();
        assert!(s.whole() && s.holding(0, 10).is_some());
        s.parts.push(Part {
            oid: 10,
            range: None,
            ids: Some((70, 80)),
        });
        assert!(!s.whole());
        assert_eq!(s.holding(0, 100), None);
    }

    #[test]
    fn adjacent_partitions_are_one_range() {
        let held = |day: u32| Held {
            from: at(day),
            to: at(day + 1),
            lo: 1,
            hi: 2,
        };
        let mut sql = Sql::new("");
        push_within(&mut sql, &[held(3), held(1), held(2), held(5)]);
        assert_eq!(
            sql.text,
            " AND ((committed_at >= $1 AND committed_at < $2) OR (committed_at >= $3 AND committed_at < $4))"
        );
        let mut none = Sql::new("");
        push_within(&mut none, &[]);
        assert_eq!(none.text, " AND false");
    }
}
