//! The store's tables with keyed entries and each capture source's key of
//! them ([`Book`]), kept by the web view between requests ([`KeyBook`]) and
//! brought up to date from the entries stored since, for matching a
//! primary-key value ([`super::keys::tables_with_keys`]).
//!
//! Read afresh, the book lists the tables by skipping through the table
//! index of every partition (322 ms at 20,000,000 entries in 27 partitions,
//! docs/benchmarks.md) and finds each table's newest keyed entry per source,
//! a probe of every partition each, which walks all of a table's entries for
//! a source that never had it. Kept, a request reads the chain heads, and
//! only when they moved the entries stored since, by id.
//!
//! Why the entries above a mark per source are enough, and how the book
//! knows it missed none:
//! - A capture source's entries are written by one writer at a time (its
//!   capture lock), one store transaction after another, each moving the
//!   source's chain head in `pgtrail.chain_heads` (`entries` counts them) in
//!   the same transaction, and ids come from one sequence; so a source's
//!   entries stored after a reading have ids above its largest one then.
//! - The book does not take that on trust, it counts: for each source its
//!   *mark* (an id), how many of its entries lay above the mark (`above`),
//!   and its head, all read in one statement (one snapshot). A later reading
//!   counts the source's entries above the mark again, within [`WINDOW`]
//!   ids; unless that is `above` plus what the head grew by, some were
//!   stored below the mark or beyond the window, and the book is read afresh.
//! - Entries leave only by retention's drop of a whole partition and come
//!   back only by a restore; both change the ledger (`pgtrail.partitions`),
//!   as detaching a partition by hand changes the partitions attached, and
//!   either makes the book be read afresh.
//! - pgtrail's own events (source 0) have no key and are left out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_postgres::{Client, Row};

use crate::table::TableName;
use crate::web::error::WebError;

/// `t(schema_name, table_name)`: every table with entries, found by skipping
/// through the index on `(schema_name, table_name, id)`, one probe per table
/// however many entries each has.
pub(super) const ALL_TABLES: &str = "WITH RECURSIVE t(schema_name, table_name) AS ( \
       (SELECT schema_name, table_name FROM pgtrail.entry_rows ORDER BY 1, 2 LIMIT 1) \
     UNION ALL \
       SELECT n.schema_name, n.table_name FROM t, LATERAL ( \
         SELECT schema_name, table_name FROM pgtrail.entry_rows e \
         WHERE (e.schema_name, e.table_name) > (t.schema_name, t.table_name) \
         ORDER BY 1, 2 LIMIT 1) n) ";

/// How many ids past the lowest mark of the sources that moved a reading
/// looks at: entries stored further on make it read the book afresh, which
/// costs what a reading did before the book was kept.
const WINDOW: i64 = 200_000;

/// The capture sources with their chain heads (none yet: empty, 0), and the
/// ledger with the partitions attached as one text.
const HEADS_AND_LEDGER: &str = "heads AS ( \
       SELECT s.id AS source, s.name, coalesce(h.hash, ''::bytea) AS hash, \
              coalesce(h.entries, 0) AS entries \
       FROM pgtrail.sources s LEFT JOIN pgtrail.chain_heads h ON h.source = s.id WHERE s.id > 0), \
     ledger AS (SELECT \
       (SELECT coalesce(string_agg(name || ' ' || coalesce(extract(epoch FROM dropped_at)::text, '-') \
                 || ' ' || coalesce(extract(epoch FROM restored_at)::text, '-'), ',' ORDER BY name), '') \
        FROM pgtrail.partitions) || ';' || \
       (SELECT coalesce(string_agg(inhrelid::text, ',' ORDER BY inhrelid), '') \
        FROM pg_inherits WHERE inhparent = 'pgtrail.entry_rows'::regclass) AS text)";

/// A reading's row has the columns kind, source, name, hash, entries, mark,
/// n, id, schema_name, table_name and key; the ledger's row only the kind
/// and the last, as text: these are the others.
const NONE_UP_TO_KEY: &str = "NULL::smallint, NULL::text, NULL::bytea, NULL::bigint, \
     NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::text";

/// Reads the book afresh ($1: [`WINDOW`]): every table's newest keyed entry
/// per source, each source's mark (its newest keyed entry, or [`WINDOW`]
/// ids below the newest id if that is later) and its entries above the mark.
fn afresh_sql() -> String {
    format!(
        "{ALL_TABLES}, {HEADS_AND_LEDGER}, \
         k AS MATERIALIZED (SELECT t.schema_name, t.table_name, h.source, p.id, p.key \
           FROM t CROSS JOIN heads h CROSS JOIN LATERAL ( \
             SELECT e.id, e.primary_key::text AS key FROM pgtrail.entry_rows e \
             WHERE e.schema_name = t.schema_name AND e.table_name = t.table_name \
               AND e.row_key IS NOT NULL AND e.source = h.source \
             ORDER BY e.id DESC LIMIT 1) p), \
         top AS MATERIALIZED (SELECT coalesce(max(id), 0) AS top FROM pgtrail.entry_rows), \
         marks AS MATERIALIZED (SELECT h.source, greatest( \
             coalesce((SELECT max(k.id) FROM k WHERE k.source = h.source), 0), \
             (SELECT top FROM top) - $1) AS mark FROM heads h), \
         above AS (SELECT e.source, count(*) AS n FROM pgtrail.entry_rows e \
           JOIN marks m ON m.source = e.source AND e.id > m.mark \
           WHERE e.id > (SELECT min(mark) FROM marks) AND e.id <= (SELECT top FROM top) \
           GROUP BY e.source) \
         SELECT 'source'::text AS kind, h.source, h.name, h.hash, h.entries, m.mark, \
                coalesce(a.n, 0) AS n, NULL::bigint AS id, NULL::text AS schema_name, \
                NULL::text AS table_name, NULL::text AS key \
         FROM heads h JOIN marks m USING (source) LEFT JOIN above a USING (source) \
         UNION ALL SELECT 'ledger', {NONE_UP_TO_KEY}, text FROM ledger \
         UNION ALL SELECT 'key', source, NULL::text, NULL::bytea, NULL::bigint, NULL::bigint, \
                NULL::bigint, id, schema_name, table_name, key FROM k"
    )
}

/// The heads and the ledger alone, which touch no partition: whether
/// anything moved since a book was read.
fn heads_sql() -> String {
    format!(
        "WITH {HEADS_AND_LEDGER} \
         SELECT 'source'::text AS kind, h.source, h.name, h.hash, h.entries, NULL::bigint AS mark, \
                0::bigint AS n, NULL::bigint AS id, NULL::text AS schema_name, \
                NULL::text AS table_name, NULL::text AS key FROM heads h \
         UNION ALL SELECT 'ledger', {NONE_UP_TO_KEY}, text FROM ledger"
    )
}

/// Brings a book up to date ($1 to $4: its sources, heads and marks; $5:
/// [`WINDOW`]): the heads now, and of each source whose head moved, its
/// entries above its mark (how many, the largest id) and, per table, the
/// newest keyed one among them.
fn since_sql() -> String {
    format!(
        "WITH {HEADS_AND_LEDGER}, \
         known(source, hash, entries, mark) AS ( \
           SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bigint[], $4::bigint[])), \
         moved AS MATERIALIZED (SELECT k.source, k.mark FROM known k JOIN heads h USING (source) \
           WHERE h.hash <> k.hash OR h.entries <> k.entries), \
         lo AS (SELECT min(mark) AS lo FROM moved), \
         win AS MATERIALIZED (SELECT e.id, e.source, e.schema_name, e.table_name, e.row_key, e.primary_key \
           FROM pgtrail.entry_rows e JOIN moved m ON m.source = e.source AND e.id > m.mark \
           WHERE e.id > (SELECT lo FROM lo) AND e.id <= (SELECT lo FROM lo) + $5 \
             AND (SELECT lo FROM lo) IS NOT NULL \
             AND (SELECT lo FROM lo) >= (SELECT coalesce(max(id), 0) FROM pgtrail.entry_rows) - $5) \
         SELECT 'source'::text AS kind, h.source, h.name, h.hash, h.entries, NULL::bigint AS mark, \
                coalesce(w.n, 0) AS n, w.top AS id, NULL::text AS schema_name, \
                NULL::text AS table_name, NULL::text AS key \
         FROM heads h LEFT JOIN (SELECT source, count(*) AS n, max(id) AS top FROM win GROUP BY source) w \
           USING (source) \
         UNION ALL SELECT 'ledger', {NONE_UP_TO_KEY}, text FROM ledger \
         UNION ALL (SELECT DISTINCT ON (schema_name, table_name, source) 'key'::text, source, \
                NULL::text, NULL::bytea, NULL::bigint, NULL::bigint, NULL::bigint, id, \
                schema_name, table_name, primary_key::text \
           FROM win WHERE row_key IS NOT NULL ORDER BY schema_name, table_name, source, id DESC)"
    )
}

/// One capture source as a book holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    name: String,
    /// Its chain head: hash and count.
    hash: Vec<u8>,
    entries: i64,
    /// Its entries with ids above this, `above` of them, are in the book.
    mark: i64,
    above: i64,
}

/// The tables with keyed entries, and each source's newest key of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    /// The ledger and the partitions attached ([`HEADS_AND_LEDGER`]).
    ledger: String,
    sources: BTreeMap<i16, Source>,
    /// Per table and source: the newest keyed entry's id and its key's text.
    keys: BTreeMap<(TableName, i16), (i64, String)>,
}

/// A reading's rows, as values.
#[derive(Debug, Default)]
struct Reading {
    ledger: String,
    sources: Vec<SourceRow>,
    /// Table, source, and the id and key text of its newest keyed entry read.
    keys: Vec<(TableName, i16, i64, String)>,
}

/// A source as a reading found it.
#[derive(Debug, Clone)]
struct SourceRow {
    id: i16,
    name: String,
    hash: Vec<u8>,
    entries: i64,
    /// Read afresh: its mark.
    mark: Option<i64>,
    /// How many of its entries above the mark were read, and the largest id among them.
    n: i64,
    top: Option<i64>,
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
                    name: row.try_get(2)?,
                    hash: row.try_get(3)?,
                    entries: row.try_get(4)?,
                    mark: row.try_get(5)?,
                    n: row.try_get(6)?,
                    top: row.try_get(7)?,
                }),
                _ => r.keys.push((
                    TableName::new(row.try_get::<_, String>(8)?, row.try_get::<_, String>(9)?),
                    row.try_get(1)?,
                    row.try_get(7)?,
                    row.try_get(10)?,
                )),
            }
        }
        Ok(r)
    }
}

impl Book {
    /// The book of a reading afresh.
    fn afresh(r: Reading) -> Book {
        Book {
            ledger: r.ledger,
            sources: r
                .sources
                .into_iter()
                .map(|found| {
                    let s = Source {
                        name: found.name,
                        hash: found.hash,
                        entries: found.entries,
                        mark: found.mark.unwrap_or(0),
                        above: found.n,
                    };
                    (found.id, s)
                })
                .collect(),
            keys: r
                .keys
                .into_iter()
                .map(|(t, s, id, key)| ((t, s), (id, key)))
                .collect(),
        }
    }

    /// This book brought up to date by a reading since ([`since_sql`]);
    /// `None` when the reading cannot vouch for every entry stored since
    /// (see the module's doc), and the book must be read afresh.
    fn advanced(&self, r: Reading) -> Option<Book> {
        if r.ledger != self.ledger || r.sources.len() != self.sources.len() {
            return None;
        }
        let mut next = self.clone();
        for found in r.sources {
            let old = self.sources.get(&found.id)?;
            if old.name != found.name {
                return None;
            }
            if old.hash == found.hash && old.entries == found.entries {
                continue;
            }
            let grown = found.entries - old.entries;
            if grown < 0 || found.n != old.above + grown {
                return None;
            }
            let s = next.sources.get_mut(&found.id)?;
            s.hash = found.hash;
            s.entries = found.entries;
            if let Some(top) = found.top {
                // Every entry of the source above the old mark was read: none is above this one.
                s.mark = s.mark.max(top);
                s.above = 0;
            }
        }
        for (table, source, id, key) in r.keys {
            let slot = next
                .keys
                .entry((table, source))
                .or_insert((id, String::new()));
            if id >= slot.0 {
                *slot = (id, key);
            }
        }
        Some(next)
    }

    /// Whether a reading of the heads ([`heads_sql`]) finds everything as
    /// this book has it: the ledger, and every source's head.
    fn unmoved(&self, r: &Reading) -> bool {
        r.ledger == self.ledger
            && r.sources.len() == self.sources.len()
            && r.sources.iter().all(|found| {
                self.sources.get(&found.id).is_some_and(|s| {
                    s.name == found.name && s.hash == found.hash && s.entries == found.entries
                })
            })
    }

    /// `(sources, hashes, entries, marks)`: the parameters of [`since_sql`].
    fn known(&self) -> (Vec<i16>, Vec<Vec<u8>>, Vec<i64>, Vec<i64>) {
        let mut k = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, s) in &self.sources {
            k.0.push(*id);
            k.1.push(s.hash.clone());
            k.2.push(s.entries);
            k.3.push(s.mark);
        }
        k
    }

    /// Each table (those of `only`, in that order, else all in name order)
    /// with the text of each source's newest keyed entry's key, of the
    /// sources named in `dbs` (all when empty), in source order.
    pub fn keys(&self, only: Option<&[TableName]>, dbs: &[String]) -> Vec<(TableName, String)> {
        let wanted = |source: &i16| {
            dbs.is_empty()
                || self
                    .sources
                    .get(source)
                    .is_some_and(|s| dbs.contains(&s.name))
        };
        let of = |table: &TableName| {
            self.keys
                .range((table.clone(), i16::MIN)..=(table.clone(), i16::MAX))
                .filter(|((_, s), _)| wanted(s))
                .map(|((t, _), (_, key))| (t.clone(), key.clone()))
                .collect::<Vec<_>>()
        };
        match only {
            Some(tables) => tables.iter().flat_map(of).collect(),
            None => self
                .keys
                .iter()
                .filter(|((_, s), _)| wanted(s))
                .map(|((t, _), (_, key))| (t.clone(), key.clone()))
                .collect(),
        }
    }
}

/// The web view's [`Book`], shared by its requests.
#[derive(Debug, Default)]
pub struct KeyBook {
    last: Mutex<Option<Arc<Book>>>,
}

impl KeyBook {
    /// The book as of now: the last one brought up to date, or read afresh.
    pub async fn read(&self, client: &Client) -> Result<Arc<Book>, WebError> {
        // A holder of the lock never panics, so a poisoned one still holds a whole value.
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let advanced = match &last {
            // First the heads alone: most often nothing moved, and then no
            // partition is read at all.
            Some(book) if book.unmoved(&Reading::of(&client.query(&heads_sql(), &[]).await?)?) => {
                Some(book.clone())
            }
            Some(book) => {
                let (sources, hashes, entries, marks) = book.known();
                let rows = client
                    .query(
                        &since_sql(),
                        &[&sources, &hashes, &entries, &marks, &WINDOW],
                    )
                    .await?;
                let reading = Reading::of(&rows)?;
                match book.advanced(reading) {
                    Some(next) if next == **book => Some(book.clone()),
                    Some(next) => Some(Arc::new(next)),
                    None => None,
                }
            }
            None => None,
        };
        let book = match advanced {
            Some(book) => book,
            None => {
                let rows = client.query(&afresh_sql(), &[&WINDOW]).await?;
                Arc::new(Book::afresh(Reading::of(&rows)?))
            }
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(book.clone());
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::new("public", name)
    }

    fn source(id: i16, name: &str, entries: i64, n: i64, top: Option<i64>) -> SourceRow {
        SourceRow {
            id,
            name: name.into(),
            hash: vec![entries as u8],
            entries,
            mark: None,
            n,
            top,
        }
    }

    /// Source 1 ("app") with 10 entries in its chain, mark 100 and 2 entries above it.
    fn book() -> Book {
        let mut app = source(1, "app", 10, 2, None);
        app.mark = Some(100);
        Book::afresh(Reading {
            ledger: "p1".into(),
            sources: vec![app],
            keys: vec![(t("a"), 1, 90, r#"{"id":1}"#.into())],
        })
    }

    type Keys = Vec<(TableName, i16, i64, String)>;

    fn since(entries: i64, n: i64, top: Option<i64>, keys: Keys) -> Reading {
        Reading {
            ledger: "p1".into(),
            sources: vec![source(1, "app", entries, n, top)],
            keys,
        }
    }

    #[test]
    fn an_unmoved_head_keeps_the_book() {
        let b = book();
        assert_eq!(b.advanced(since(10, 0, None, Vec::new())), Some(b.clone()));
        assert!(b.unmoved(&since(10, 0, None, Vec::new())));
        assert!(!b.unmoved(&since(11, 0, None, Vec::new())));
    }

    #[test]
    fn entries_since_are_taken_when_the_count_adds_up() {
        let b = book();
        // Three new entries: the two above the mark before, and three more.
        let next = b
            .advanced(since(
                13,
                5,
                Some(130),
                vec![(t("b"), 1, 120, r#"{"code":"x"}"#.into())],
            ))
            .expect("counted in full");
        assert_eq!(next.sources[&1].mark, 130);
        assert_eq!(next.sources[&1].above, 0);
        assert_eq!(next.sources[&1].entries, 13);
        assert_eq!(
            next.keys(None, &[]),
            vec![
                (t("a"), r#"{"id":1}"#.to_string()),
                (t("b"), r#"{"code":"x"}"#.to_string())
            ]
        );
        // A newer key of a table replaces the older one; an older one does not.
        let newer = next
            .advanced(since(
                14,
                1,
                Some(140),
                vec![(t("a"), 1, 140, r#"{"uid":1}"#.into())],
            ))
            .unwrap();
        assert_eq!(newer.keys(Some(&[t("a")]), &[])[0].1, r#"{"uid":1}"#);
        assert_eq!(newer.keys(Some(&[t("a")]), &["other".into()]), Vec::new());
    }

    #[test]
    fn a_count_that_does_not_add_up_reads_afresh() {
        let b = book();
        // The head grew by 3 but only 4 of the expected 5 entries are above the mark:
        // one was stored below it (or beyond the window).
        assert_eq!(b.advanced(since(13, 4, Some(130), Vec::new())), None);
        // More than expected is as wrong.
        assert_eq!(b.advanced(since(13, 6, Some(130), Vec::new())), None);
        // A changed ledger (a partition dropped or restored), a new source.
        let mut dropped = since(10, 0, None, Vec::new());
        dropped.ledger = "p1 dropped".into();
        assert_eq!(b.advanced(dropped), None);
        let mut more = since(10, 0, None, Vec::new());
        more.sources.push(source(2, "shop", 1, 0, None));
        assert_eq!(b.advanced(more), None);
    }
}
