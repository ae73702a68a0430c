//! `pgtrail verify`: recomputes the store's hash chains ([`crate::store::chain`]),
//! one per source and one of pgtrail's own events, and reports every entry
//! that does not match, and chain heads that disagree with the entries
//! ([`heads`]). Reads in one snapshot, streaming, so memory stays flat
//! whatever the size of the store. `--source NAME` checks that source's
//! chain and the events chain only.
//!
//! Each entry is checked against the stored hash of the entry before it in its
//! chain, so one change shows as one break: an UPDATE breaks the entry itself,
//! a DELETE breaks the entry after the gap, an INSERT breaks the inserted
//! entry and the one after it.
//!
//! The quarantine's records are checked against their `EVENT` entries too
//! ([`quarantine`]). `--archive FILE` checks an archive file instead ([`archive`]).

mod anchors;
pub mod archive;
mod heads;
mod orphans;
mod quarantine;

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::entry::row_key;
use crate::store::chain::{self, Chain, Content};
use crate::store::context::ContextColumns;
use crate::store::signing::{self, SignedHead};
use crate::store::sources::{self, SourceId, SourceName, ENTRY_SOURCE_SQL};
use crate::table::TableName;

/// At most this many breaks are listed; the rest are counted.
const LISTED_BREAKS: usize = 20;

/// What the command line asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// Start at this entry id (the entries before it are taken as they are stored; a
    /// quarantined transaction is checked when its EVENT entry is in the range).
    #[arg(long)]
    pub from: Option<i64>,
    /// Stop after this entry id (the chain heads are then not compared, nor quarantined
    /// records sought that no EVENT entry covers).
    #[arg(long)]
    pub to: Option<i64>,
    /// Print one JSON object instead of lines of text.
    #[arg(long)]
    pub json: bool,
    /// Also prove the chain is the one the daemon signed: check every signed head with this
    /// Ed25519 public key (PEM) and the chain against the newest one.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<std::path::PathBuf>,
    /// Check only this source's chain (its `[source] name`) and the chain of pgtrail's own
    /// events; with --public-key, only this source's signed heads.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Check an archive file (written before retention dropped its range) on its own, with no
    /// config or store: every entry's hash, every link, its count; prints each run's seam and
    /// the file's SHA-256.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "public_key", "source"])]
    pub archive: Option<std::path::PathBuf>,
    /// With --archive: the age identity file (secret key) that decrypts an encrypted archive.
    #[arg(long, value_name = "FILE", requires = "archive")]
    pub identity: Option<std::path::PathBuf>,
    /// With --archive: the longest line (entry) to read, e.g. "4GiB"; default 1025 MiB, above
    /// any pgtrail writes. A line is held in memory while it is checked: raise it only for an
    /// archive that holds an entry that long.
    #[arg(long, value_name = "SIZE", requires = "archive", value_parser = crate::config::parse_size)]
    pub max_line: Option<u64>,
}

/// The outcome.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub intact: bool,
    /// Entries read.
    pub entries: u64,
    /// Entries stored before the chain began (no hash): not covered.
    pub unchained: u64,
    /// By source name; `pgtrail` is the chain of pgtrail's own events.
    pub chains: BTreeMap<String, ChainReport>,
    /// The quarantined transactions checked against their `EVENT` entries.
    pub quarantine: quarantine::QuarantineReport,
    /// The first breaks: the chains' in id order, entry rows' without a transaction, the quarantine's.
    pub breaks: Vec<Break>,
    pub breaks_total: u64,
    /// With `--public-key`: the newest signed head the chains were checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_head: Option<SignedHead>,
    /// With `--public-key`: how many signed heads were checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures_checked: Option<u64>,
    /// Partitions retention dropped, each recorded by a `retention` event.
    pub partitions_dropped: u64,
    /// Dropped partitions restored from their archives and in the store again.
    pub partitions_restored: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ChainReport {
    /// Hashed entries of this chain read.
    pub entries: u64,
    /// The hash of the last entry read, hex.
    pub last_hash: Option<String>,
    pub last_id: Option<i64>,
    /// Entries of this chain retention dropped (counted by their anchors).
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct Break {
    /// The entry where the chain breaks.
    pub id: Option<i64>,
    /// The chain's source, or what else broke (`signed heads`, `quarantine`).
    pub chain: String,
    pub problem: String,
}

/// One chain's state while reading.
struct Walk {
    /// Its source's name.
    name: String,
    prev: [u8; 32],
    prev_id: Option<i64>,
    /// A hashed entry of this chain has been seen: from here on every entry must have one.
    hashed: bool,
    report: ChainReport,
    /// The signed count and hash this chain must pass through (`--public-key`).
    signed: Option<(i64, [u8; 32])>,
}

/// Runs the check. `Ok(report)` whether intact or not; `Err` when the store
/// could not be read.
pub async fn run(config: &Config, req: &Request) -> Result<Report> {
    let mut client = crate::store::open(&config.store).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .context("cannot start a read-only snapshot of the store")?;
    let from = req.from.unwrap_or(i64::MIN);
    let to = req.to.unwrap_or(i64::MAX);
    let mut report = Report::default();
    let scope = Scope::of(&tx, req.source.as_deref()).await?;
    let signed = match &req.public_key {
        Some(file) => {
            anyhow::ensure!(
                req.from.is_none() && req.to.is_none(),
                "--public-key checks the whole chain: leave out --from and --to"
            );
            let key = signing::public_key_from_file(file).map_err(anyhow::Error::msg)?;
            Some(heads::signed(&tx, &key, &scope, &mut report).await?)
        }
        None => None,
    };
    let (anchors, anchor_problems) = anchors::Anchors::load(&tx).await?;
    report.partitions_dropped = anchors.partitions_dropped;
    report.partitions_restored = anchors.partitions_restored;
    for problem in anchor_problems {
        push_break(&mut report, None, "anchors", problem);
    }
    let mut walks = BTreeMap::new();
    for (id, name) in &scope.chains {
        let c = Chain(*id);
        let prev = anchors::start_of(&tx, c, from).await?;
        let mut walk = Walk::new(name.clone(), prev);
        walk.signed = signed.as_ref().and_then(|s| s.point(c));
        walks.insert(c, walk);
    }
    // Of the entry rows: min and max through the view's join would read every entry.
    let sql = "SELECT min(id), max(id) FROM pgtrail.entry_rows WHERE id BETWEEN $1 AND $2";
    let r = tx.query_one(sql, &[&from, &to]).await?;
    let (low, high): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
    let bar = progress((low.unwrap_or(0), high.unwrap_or(0)));
    let rows = tx
        .query_raw(
            &format!(
                "SELECT id, committed_at, xid, lsn::text, schema_name, table_name, action, \
                        primary_key::text, before::text, after::text, changed_columns::text, \
                        context::text, details::text, hash, row_key, actor, host(client_addr), source \
                 FROM pgtrail.entries WHERE id BETWEEN $1 AND $2 {} ORDER BY id",
                scope.sql_condition()
            ),
            [&from, &to],
        )
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        report.entries += 1;
        let id: i64 = row.get(0);
        if report.entries % 4096 == 0 {
            if let (Some(bar), Some(low)) = (&bar, low) {
                bar.set_position((id - low) as u64);
            }
        }
        let stored = StoredRow::from_row(&row)?;
        let c = Chain::of_entry(stored.source, stored.lsn.is_some());
        // An entry of a source the store does not know: its chain is
        // checked on its own, and has no head.
        let walk = walks
            .entry(c)
            .or_insert_with(|| Walk::new(format!("unknown source {}", c.0 .0), None));
        let name = walk.name.clone();
        for (cut, problem) in walk.cross_drops(&anchors, c, Some(id)) {
            push_break(&mut report, Some(cut), &name, problem);
        }
        for problem in check(&stored, walk, &mut report) {
            push_break(&mut report, Some(id), &name, problem);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if req.to.is_none() {
        for (c, walk) in walks.iter_mut() {
            // A chain whose newest entries were all dropped ends at its last anchor.
            for (cut, problem) in walk.cross_drops(&anchors, *c, None) {
                push_break(&mut report, Some(cut), &walk.name, problem);
            }
        }
        for (c, walk) in &walks {
            for problem in heads::problems(&tx, *c, walk, req.from.is_none()).await? {
                push_break(&mut report, None, &walk.name, problem);
            }
        }
    }
    orphans::check(&tx, (from, to), &scope, &mut report).await?;
    quarantine::check(&tx, (from, to), req.to.is_none(), &scope, &mut report).await?;
    tx.commit().await?;
    report.intact = report.breaks_total == 0;
    report.chains = walks.into_values().map(|w| (w.name, w.report)).collect();
    Ok(report)
}

/// The sources a check covers: every one, or the one asked for and pgtrail's own events.
struct Scope {
    /// The chains to walk, by source id, with their names.
    chains: BTreeMap<SourceId, String>,
    /// The one source asked for (`--source`).
    only: Option<SourceId>,
    /// The store's first source: v1 signed heads and entries stored before
    /// sources had ids are its.
    first: String,
}

impl Scope {
    async fn of(tx: &tokio_postgres::Transaction<'_>, only: Option<&str>) -> Result<Scope> {
        let all = sources::all(tx).await?;
        let first = all
            .iter()
            .find(|(id, _)| *id == SourceId::FIRST)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let Some(name) = only else {
            return Ok(Scope {
                chains: all.into_iter().collect(),
                only: None,
                first,
            });
        };
        let Some(id) = all.iter().find(|(_, n)| n == name).map(|(id, _)| *id) else {
            let names: Vec<&str> = all
                .iter()
                .filter(|(id, _)| *id != SourceId::EVENTS)
                .map(|(_, n)| n.as_str())
                .collect();
            anyhow::bail!(
                "the store has no source named {name:?}; its sources: {}",
                names.join(", ")
            );
        };
        Ok(Scope {
            chains: all
                .into_iter()
                .filter(|(i, _)| *i == id || *i == SourceId::EVENTS)
                .collect(),
            only: Some(id),
            first,
        })
    }

    /// SQL (`AND …`) that keeps the entries of the chains checked, over `pgtrail.entries`.
    fn sql_condition(&self) -> String {
        match self.only {
            Some(id) => format!("AND {ENTRY_SOURCE_SQL} IN (0, {})", id.0),
            None => String::new(),
        }
    }
}

impl Walk {
    /// A walk starting after `prev` (the id and hash before the first entry
    /// it checks), or at the chain's beginning.
    fn new(name: String, prev: Option<(i64, [u8; 32])>) -> Walk {
        Walk {
            name,
            prev: prev.map_or(chain::GENESIS, |p| p.1),
            prev_id: prev.map(|p| p.0),
            hashed: prev.is_some(),
            report: ChainReport::default(),
            signed: None,
        }
    }
}

impl Walk {
    /// Moves the walk past entries retention dropped before `next` (`None`:
    /// the chain's end): across each anchor in id order, counting its run,
    /// on from its hash. Returns what is wrong at the anchors, by id.
    fn cross_drops(
        &mut self,
        anchors: &anchors::Anchors,
        c: Chain,
        next: Option<i64>,
    ) -> Vec<(i64, String)> {
        let mut problems = Vec::new();
        let crossed = anchors.between(c, self.prev_id, next);
        for (id, anchor) in &crossed {
            let at = (self.prev_id, self.prev);
            problems.extend(anchor.problems(*id, at).into_iter().map(|p| (*id, p)));
            self.prev = anchor.hash;
            self.prev_id = Some(*id);
            self.hashed = true;
            self.report.dropped += anchor.entries;
        }
        if let (None, Some((_, last))) = (next, crossed.last()) {
            self.report.last_hash = Some(chain::hex(&last.hash));
        }
        problems
    }

    /// The entries of the chain so far, present and dropped: its position.
    fn position(&self) -> u64 {
        self.report.entries + self.report.dropped
    }
}

fn push_break(report: &mut Report, id: Option<i64>, chain: &str, problem: String) {
    report.breaks_total += 1;
    if report.breaks.len() < LISTED_BREAKS {
        report.breaks.push(Break {
            id,
            chain: chain.to_owned(),
            problem,
        });
    }
}

/// One entry as read for checking.
struct StoredRow {
    id: i64,
    committed_at: i64,
    xid: Option<i64>,
    lsn: Option<u64>,
    schema: String,
    table: String,
    action: String,
    primary_key: Option<String>,
    before: Option<String>,
    after: Option<String>,
    changed_columns: Option<String>,
    context: String,
    details: Option<String>,
    hash: Option<Vec<u8>>,
    row_key: Option<i64>,
    actor: Option<String>,
    client_addr: Option<String>,
    source: Option<i16>,
}

impl StoredRow {
    fn from_row(row: &tokio_postgres::Row) -> Result<StoredRow> {
        let at: chrono::DateTime<chrono::Utc> = row.try_get(1)?;
        let lsn: Option<String> = row.try_get(3)?;
        Ok(StoredRow {
            id: row.try_get(0)?,
            committed_at: at.timestamp_micros(),
            xid: row.try_get(2)?,
            lsn: match lsn {
                Some(l) => Some(
                    l.parse::<crate::pg::Lsn>()
                        .with_context(|| {
                            format!("the store returned an LSN pgtrail cannot read: {l:?}")
                        })?
                        .0,
                ),
                None => None,
            },
            schema: row.try_get(4)?,
            table: row.try_get(5)?,
            action: row.try_get(6)?,
            primary_key: row.try_get(7)?,
            before: row.try_get(8)?,
            after: row.try_get(9)?,
            changed_columns: row.try_get(10)?,
            context: row.try_get(11)?,
            details: row.try_get(12)?,
            hash: row.try_get(13)?,
            row_key: row.try_get(14)?,
            actor: row.try_get(15)?,
            client_addr: row.try_get(16)?,
            source: row.try_get(17)?,
        })
    }

    fn content(&self) -> Content<'_> {
        Content {
            committed_at_micros: self.committed_at,
            xid: self.xid,
            lsn: self.lsn,
            schema: &self.schema,
            table: &self.table,
            action: &self.action,
            primary_key: self.primary_key.as_deref(),
            before: self.before.as_deref(),
            after: self.after.as_deref(),
            changed_columns: self.changed_columns.as_deref(),
            context: &self.context,
            details: self.details.as_deref(),
        }
    }
}

/// The problems of one entry, and the walk moved past it.
fn check(e: &StoredRow, walk: &mut Walk, report: &mut Report) -> Vec<String> {
    let mut problems = derived_problems(e);
    let Some(stored) = e.hash.as_deref() else {
        if walk.hashed {
            problems.push(
                "it has no hash although entries before it in the chain have one: it was inserted past pgtrail".into(),
            );
        } else {
            report.unchained += 1;
        }
        return problems;
    };
    let expected = e.content().hash(&walk.prev);
    if stored != expected {
        problems.push(match walk.prev_id {
            Some(p) => format!(
                "it does not match its hash following entry {p}: it was changed, or an entry between {p} and it was deleted or inserted"
            ),
            None => "it does not match its hash: it was changed, or an entry before it was deleted or inserted".into(),
        });
    }
    // Go on from what is stored, so that one change shows as one break.
    walk.prev = stored.try_into().unwrap_or([0xff; 32]);
    walk.prev_id = Some(e.id);
    walk.hashed = true;
    walk.report.entries += 1;
    if let Some((n, hash)) = walk.signed {
        if n == walk.position() as i64 && stored != hash {
            problems.push(format!(
                "the chain was rewritten: this is entry {n} of its chain, whose signed hash is {} but is {} here",
                chain::hex(&hash),
                chain::hex(stored)
            ));
        }
    }
    walk.report.last_id = Some(e.id);
    walk.report.last_hash = Some(chain::hex(stored));
    problems
}

/// Columns pgtrail derives from an entry's content, recomputed: a change to
/// them alone would mislead the web view's filters and row history.
fn derived_problems(e: &StoredRow) -> Vec<String> {
    let mut problems = Vec::new();
    let cols = ContextColumns::of(&e.context);
    if cols.actor != e.actor {
        problems.push(format!(
            "its actor column ({:?}) disagrees with its context ({:?})",
            e.actor, cols.actor
        ));
    }
    let addr = e.client_addr.as_deref().and_then(|a| a.parse().ok());
    if cols.client_addr != addr {
        problems.push(format!(
            "its client_addr column ({:?}) disagrees with its context",
            e.client_addr
        ));
    }
    let expected_key = match (&e.primary_key, e.action.as_str()) {
        (_, "EVENT") | (None, _) => None,
        (Some(pk), _) => Some(row_key(&TableName::new(&e.schema, &e.table), pk)),
    };
    if e.row_key != expected_key {
        problems.push("its row_key disagrees with its table and primary key".into());
    }
    problems
}

fn progress((low, high): (i64, i64)) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || high <= low {
        return None;
    }
    let bar = indicatif::ProgressBar::new((high - low) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {percent}% ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// How the text report names the chain of `source`.
fn chain_title(source: &str) -> String {
    match source {
        SourceName::PGTRAIL => "events chain".to_owned(),
        source => format!("chain of source {source}"),
    }
}

impl Report {
    /// Lines for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (name, c) in &self.chains {
            let dropped = match c.dropped {
                0 => String::new(),
                n => format!(" (and {n} dropped by retention)"),
            };
            out.push_str(&format!(
                "{}: {} entries{dropped}, head {}\n",
                chain_title(name),
                c.entries,
                c.last_hash.as_deref().unwrap_or("(empty)")
            ));
        }
        if self.partitions_dropped > 0 {
            out.push_str(&format!(
                "{} partition(s) dropped by retention, each recorded by its event\n",
                self.partitions_dropped
            ));
        }
        if self.partitions_restored > 0 {
            let n = self.partitions_restored;
            out.push_str(&format!("{n} partition(s) restored from archives\n"));
        }
        let q = &self.quarantine;
        if q.transactions > 0 {
            out.push_str(&format!(
                "quarantine: {} transactions, {} records checked against their EVENT entries\n",
                q.transactions, q.records
            ));
        }
        if let Some(h) = &self.signed_head {
            out.push_str(&format!(
                "newest signed head, of {} at {}, checked: the source's chain {} entries, events {} entries ({} signatures checked)\n",
                h.source.as_deref().unwrap_or("the first source"),
                h.signed_at.to_rfc3339(),
                h.capture_entries,
                h.events_entries,
                self.signatures_checked.unwrap_or(0)
            ));
        }
        if self.unchained > 0 {
            out.push_str(&format!(
                "{} entries were stored before the chain began and are not covered\n",
                self.unchained
            ));
        }
        for b in &self.breaks {
            match b.id {
                Some(id) => out.push_str(&format!(
                    "BROKEN: entry {id} ({}): {}\n",
                    chain_title(&b.chain),
                    b.problem
                )),
                None => out.push_str(&format!("BROKEN: {}\n", b.problem)),
            }
        }
        if self.breaks_total as usize > self.breaks.len() {
            out.push_str(&format!(
                "… and {} more\n",
                self.breaks_total as usize - self.breaks.len()
            ));
        }
        out.push_str(&if self.intact {
            format!("intact: {} entries verified\n", self.entries)
        } else {
            format!(
                "NOT INTACT: {} problem(s) in {} entries read\n",
                self.breaks_total, self.entries
            )
        });
        out
    }
}
