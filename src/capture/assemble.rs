//! Transaction assembly: turns the stream of decoded records (begin, rows,
//! commit) into audit entries and commit markers for the store.
//!
//! It drops what must not be stored: tables outside the capture filter and
//! transactions the store already holds (delivery from the server is
//! at-least-once; the store's checkpoint says what is already in). Rolled-back
//! transactions never reach it: the server decodes only committed ones.
//!
//! It also runs the redaction stage ([`crate::capture::redact`]) on each row image
//! before it is serialized: ignored columns go, redacted values become keyed
//! hashes, and an UPDATE that changed only ignored columns is no entry.
//!
//! A change of a partition becomes an entry of its root table, with the
//! partition in `details` ([`crate::capture::partition`]); the capture filter decides
//! on the root. A TRUNCATE entry carries its options in `details`
//! ([`crate::capture::truncate`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::capture::context;
use crate::capture::decode::{self, Record, RowAction, RowChange};
use crate::capture::values::RowImage;
use crate::entry::{Action, AuditEntry, DecodeFailure, Event, Transaction, EMPTY_CONTEXT};
use crate::text::{json_object, push_json_string};

use crate::capture::partition::{self, PartitionMap};
use crate::capture::redact::{ColumnRules, TableRules};
use crate::capture::truncate::{self, Tracker};
use crate::pg::Lsn;
use crate::table::{TableFilter, TableName, Wal2jsonFilter};

/// The stream broke wal2json's framing: the connection is not to be trusted further.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("wal2json sent a {what} at {lsn} outside a transaction")]
    OutsideTransaction { what: &'static str, lsn: Lsn },
    #[error("wal2json began transaction {new} at {lsn} while {open} was still open")]
    NestedBegin { open: u64, new: u64, lsn: Lsn },
    /// wal2json's table filter, fixed when the session started, would drop
    /// the changes of a partition announced since: the session must restart
    /// (from the store's checkpoint, before this transaction) with a filter
    /// that includes the partition's schema.
    #[error("transaction {xid} made {partition} a partition of the captured table {root}, outside the tables this session decodes; restarting with schema {:?} included", partition.schema)]
    PartitionOutsideStream {
        xid: u64,
        partition: TableName,
        root: TableName,
        /// The map as the stream had it when this transaction began, which
        /// the next session replays from: closer to that past than the
        /// catalog, which may be far ahead.
        partitions: Box<PartitionMap>,
    },
}

pub struct Assembler {
    filter: TableFilter,
    /// End LSN of the last transaction already in the store.
    stored_up_to: Lsn,
    open: Option<OpenTxn>,
    column_rules: ColumnRules,
    /// The column rules of each table seen so far, resolved once per table;
    /// `None` for the (usual) table without any.
    table_rules: HashMap<TableName, Option<Arc<TableRules>>>,
    partitions: PartitionMap,
    /// What wal2json was asked to send; `None`: everything.
    stream_filter: Option<Wal2jsonFilter>,
}

struct OpenTxn {
    txn: Arc<Transaction>,
    /// Already stored before a restart: swallow it.
    skip: bool,
    /// Who is making the changes, from the latest context message; shared by the entries it covers.
    context: Arc<str>,
    /// TRUNCATE options announced by the context trigger, until their truncate records arrive.
    truncates: Tracker,
    /// The tables of the truncate records just seen, one statement's worth:
    /// truncating a partitioned table also sends a record for each of its
    /// partitions, which that one entry already covers.
    truncated: std::collections::HashSet<TableName>,
    /// A partition tree announcement changed the map.
    partitions_changed: bool,
    /// The map as it was when the transaction began, kept from its first
    /// change of the map on.
    partitions_before: Option<PartitionMap>,
}

impl Assembler {
    pub fn new(filter: TableFilter, stored_up_to: Lsn) -> Self {
        Assembler {
            filter,
            stored_up_to,
            open: None,
            column_rules: ColumnRules::default(),
            table_rules: HashMap::new(),
            partitions: PartitionMap::default(),
            stream_filter: None,
        }
    }

    /// Names partitions' changes by their root, starting from this map (the
    /// catalog at session start); announcements in the stream keep it current.
    pub fn with_partitions(mut self, partitions: PartitionMap) -> Self {
        self.partitions = partitions;
        self
    }

    /// The filter wal2json was started with: a partition announced outside it
    /// ends the session ([`AssembleError::PartitionOutsideStream`]).
    pub fn with_stream_filter(mut self, filter: Wal2jsonFilter) -> Self {
        self.stream_filter = Some(filter);
        self
    }

    /// Applies per-table column rules (ignored and redacted columns) to the entries.
    pub fn with_column_rules(mut self, rules: ColumnRules) -> Self {
        self.column_rules = rules;
        self.table_rules.clear();
        self
    }

    /// End LSN of the last transaction handed on (or found already stored).
    pub fn last_commit_end(&self) -> Lsn {
        self.stored_up_to
    }

    /// True between a begin and its commit.
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one wal2json record that started at `lsn` and appends what it yields to `out`.
    pub fn push(
        &mut self,
        lsn: Lsn,
        bytes: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        let record = match decode::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                let xid = self.open.as_ref().map(|o| o.txn.xid);
                tracing::error!(%lsn, ?xid, error = %e, "wal2json record could not be decoded; kept in pgtrail.decode_errors");
                if !self.open.as_ref().is_some_and(|o| o.skip) {
                    out.push(Event::Undecodable(DecodeFailure {
                        lsn,
                        xid,
                        record: self.column_rules.undecodable_record(bytes),
                        error: e.to_string(),
                    }));
                }
                return Ok(());
            }
        };
        match record {
            Record::Begin(b) => {
                if let Some(open) = &self.open {
                    return Err(AssembleError::NestedBegin {
                        open: open.txn.xid,
                        new: b.xid,
                        lsn,
                    });
                }
                let skip = b.end_lsn <= self.stored_up_to;
                self.open = Some(OpenTxn {
                    txn: Arc::new(b.into()),
                    skip,
                    context: Arc::from(EMPTY_CONTEXT),
                    truncates: Tracker::default(),
                    truncated: Default::default(),
                    partitions_changed: false,
                    partitions_before: None,
                });
            }
            Record::Commit(_) => {
                let open = self.open.take().ok_or(AssembleError::OutsideTransaction {
                    what: "commit",
                    lsn,
                })?;
                if !open.skip {
                    self.stored_up_to = open.txn.end_lsn;
                    if open.partitions_changed {
                        out.push(Event::Partitions(self.partitions.to_json()));
                    }
                    out.push(Event::Commit(open.txn));
                }
            }
            Record::Row(row) => {
                let open = self
                    .open
                    .as_mut()
                    .ok_or(AssembleError::OutsideTransaction {
                        what: "row change",
                        lsn,
                    })?;
                open.truncated.clear();
                // No lookup, and no copy of the name, for a source without partitions.
                let root = if self.partitions.is_empty() {
                    None
                } else {
                    self.partitions.root_of(&row.table).cloned()
                };
                let table = root.as_ref().unwrap_or(&row.table);
                if !open.skip && self.filter.matches(table) {
                    let rules = rules_for(&self.column_rules, &mut self.table_rules, table);
                    if let Some(mut entry) =
                        row_entry(&open.txn, &open.context, row, rules.as_deref())
                    {
                        // Named by the root, so are the rules, the filter and the
                        // row key: one history however the row is partitioned.
                        if let Some(root) = root {
                            let partition = std::mem::replace(&mut entry.table, root);
                            entry.details = Some(
                                serde_json::json!({ "partition": partition.to_string() })
                                    .to_string(),
                            );
                        }
                        out.push(Event::Entry(entry));
                    }
                }
            }
            Record::Truncate(leaf) => {
                let open = self
                    .open
                    .as_mut()
                    .ok_or(AssembleError::OutsideTransaction {
                        what: "truncate",
                        lsn,
                    })?;
                let options = open.truncates.take(&leaf);
                // Looked up by ancestor, not by scanning what was truncated:
                // one statement may truncate thousands of partitions.
                let covered = self
                    .partitions
                    .root_of(&leaf)
                    .is_some_and(|r| open.truncated.contains(r))
                    || self
                        .partitions
                        .ancestors(&leaf)
                        .any(|a| open.truncated.contains(a));
                open.truncated.insert(leaf.clone());
                let (table, partition) = match self.partitions.root_of(&leaf) {
                    Some(root) => (root.clone(), Some(leaf)),
                    None => (leaf, None),
                };
                if !open.skip && !covered && self.filter.matches(&table) {
                    out.push(Event::Entry(AuditEntry {
                        txn: open.txn.clone(),
                        table,
                        action: Action::Truncate,
                        primary_key: None,
                        before: None,
                        after: None,
                        changed_columns: None,
                        context: open.context.clone(),
                        details: truncate_details(partition.as_ref(), options),
                    }));
                }
            }
            Record::Message {
                prefix,
                content,
                transactional,
            } => {
                // Non-transactional messages are not tied to a transaction's changes.
                let kind = match prefix.as_ref() {
                    context::CONTEXT_PREFIX => MessageKind::Context,
                    context::DDL_PREFIX => MessageKind::Ddl,
                    partition::PARTITIONS_PREFIX => MessageKind::Partitions,
                    truncate::TRUNCATE_PREFIX => MessageKind::Truncate,
                    _ => return Ok(()),
                };
                if !transactional {
                    return Ok(());
                }
                let open = self
                    .open
                    .as_mut()
                    .ok_or(AssembleError::OutsideTransaction {
                        what: "pgtrail message",
                        lsn,
                    })?;
                open.truncated.clear();
                let parsed =
                    match kind {
                        // Followed even in a transaction already stored, so that
                        // the map is current for the ones after it.
                        MessageKind::Partitions => match partition::tree_from_message(&content) {
                            Ok(tree) => {
                                if !open.skip && self.filter.matches(&tree.root) {
                                    let outside = self.stream_filter.as_ref().and_then(|f| {
                                        tree.members.iter().find(|(m, _)| !f.covers(m))
                                    });
                                    if let Some((partition, _)) = outside {
                                        return Err(AssembleError::PartitionOutsideStream {
                                            xid: open.txn.xid,
                                            partition: partition.clone(),
                                            root: tree.root.clone(),
                                            partitions: Box::new(
                                                open.partitions_before
                                                    .take()
                                                    .unwrap_or_else(|| self.partitions.clone()),
                                            ),
                                        });
                                    }
                                }
                                if open.partitions_before.is_none() {
                                    open.partitions_before = Some(self.partitions.clone());
                                }
                                self.partitions.apply(&tree);
                                open.partitions_changed = true;
                                Ok(())
                            }
                            Err(e) => Err(e),
                        },
                        // A dropped table leaves the partition map; like
                        // announcements, followed in stored transactions too.
                        MessageKind::Ddl if open.skip => {
                            if let Ok(ddl) = context::ddl_from_message(&content) {
                                forget_dropped(&mut self.partitions, &ddl);
                            }
                            return Ok(());
                        }
                        _ if open.skip => return Ok(()),
                        MessageKind::Truncate => open.truncates.message(&content, &self.partitions),
                        MessageKind::Ddl => context::ddl_from_message(&content).map(|ddl| {
                            let before = (open.partitions_before.is_none()
                                && ddl.command_tag == "DROP TABLE")
                                .then(|| self.partitions.clone());
                            if forget_dropped(&mut self.partitions, &ddl) {
                                open.partitions_before = open.partitions_before.take().or(before);
                                open.partitions_changed = true;
                            }
                            let table = TableName::new(ddl.schema, ddl.name);
                            let excluded = self.filter.exclude.iter().any(|p| p.matches(&table));
                            if self.filter.captures_schema(&table.schema) && !excluded {
                                out.push(Event::Entry(AuditEntry {
                                    txn: open.txn.clone(),
                                    table,
                                    action: Action::Ddl,
                                    primary_key: None,
                                    before: None,
                                    after: Some(ddl.detail),
                                    changed_columns: None,
                                    context: Arc::from(ddl.context),
                                    details: None,
                                }));
                            }
                        }),
                        MessageKind::Context => context::from_message(&content)
                            .map(|json| open.context = Arc::from(json)),
                    };
                if let Err(e) = parsed {
                    tracing::warn!(%lsn, xid = open.txn.xid, error = %e, "pgtrail message could not be read; kept in pgtrail.decode_errors");
                    if !open.skip {
                        out.push(Event::Undecodable(DecodeFailure {
                            lsn,
                            xid: Some(open.txn.xid),
                            record: String::from_utf8_lossy(bytes).into_owned(),
                            error: format!("{prefix} message: {e}"),
                        }));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A dropped table is no partition any more: the announcements cover trees
/// that still exist, not this. (A rename or move of a partition is announced.)
fn forget_dropped(partitions: &mut PartitionMap, ddl: &context::Ddl) -> bool {
    ddl.object_type == "table"
        && ddl.command_tag == "DROP TABLE"
        && partitions.forget(&TableName::new(ddl.schema.clone(), ddl.name.clone()))
}

#[derive(Clone, Copy)]
enum MessageKind {
    Context,
    Ddl,
    Partitions,
    Truncate,
}

/// A TRUNCATE entry's `details`: the partition, and the options when the
/// context trigger announced them (`null` where they could not be told).
fn truncate_details(
    partition: Option<&TableName>,
    options: Option<truncate::Options>,
) -> Option<String> {
    let mut details = serde_json::Map::new();
    if let Some(p) = partition {
        details.insert("partition".into(), p.to_string().into());
    }
    if let Some(o) = options {
        details.insert("cascade".into(), o.cascade.into());
        details.insert("restart_identity".into(), o.restart_identity.into());
        if o.via_cascade {
            details.insert("via_cascade".into(), true.into());
        }
    }
    (!details.is_empty()).then(|| serde_json::Value::Object(details).to_string())
}

/// The column rules of `table`, looked up once per table. A table without
/// rules costs one hash lookup and no allocation; no rules at all, not even that.
fn rules_for(
    rules: &ColumnRules,
    cache: &mut HashMap<TableName, Option<Arc<TableRules>>>,
    table: &TableName,
) -> Option<Arc<TableRules>> {
    if rules.is_empty() {
        return None;
    }
    if let Some(found) = cache.get(table) {
        return found.clone();
    }
    let found = rules.for_table(table);
    cache.insert(table.clone(), found.clone());
    found
}

/// The entry for one row change; `None` for an UPDATE that changed only ignored columns.
fn row_entry(
    txn: &Arc<Transaction>,
    context: &Arc<str>,
    row: RowChange<'_>,
    rules: Option<&TableRules>,
) -> Option<AuditEntry> {
    let new = RowImage::from_columns(&row.columns);
    let old = RowImage::from_columns(&row.identity);
    let (action, mut before, mut after) = match row.action {
        RowAction::Insert => (Action::Insert, None, Some(new)),
        RowAction::Update => {
            let after = with_unchanged_toast(new, &old);
            (
                Action::Update,
                (!old.columns.is_empty()).then_some(old),
                Some(after),
            )
        }
        RowAction::Delete => (Action::Delete, Some(old), None),
    };
    // On the raw values, before redaction.
    let changed_columns = match (&before, &after) {
        (Some(before), Some(after)) => changed_columns(before, after, rules),
        _ => None,
    };
    if let Some(rules) = rules {
        if changed_columns.as_ref().is_some_and(|c| c.only_ignored) {
            return None;
        }
        for image in before.iter_mut().chain(after.iter_mut()) {
            rules.apply(image);
        }
    }
    // From the image as stored: a redacted key column is hashed here too, and
    // with an ignored one the entry has no key, as for a table without one.
    let key_source = after.as_ref().or(before.as_ref());
    let primary_key = key_source.and_then(|image| {
        if row.key.is_empty() {
            return None;
        }
        let values: Option<Vec<(&str, &str)>> = row
            .key
            .iter()
            .map(|k| image.get(&k.name).map(|v| (k.name.as_ref(), v)))
            .collect();
        values.map(|v| json_object(v.into_iter()))
    });
    Some(AuditEntry {
        txn: txn.clone(),
        table: row.table,
        action,
        primary_key,
        before: before.as_ref().map(RowImage::to_json),
        after: after.as_ref().map(RowImage::to_json),
        changed_columns: changed_columns.map(|c| c.json),
        context: context.clone(),
        details: None,
    })
}

/// wal2json leaves unchanged TOASTed columns out of an UPDATE's new row; under
/// REPLICA IDENTITY FULL the old row has them, and they did not change.
fn with_unchanged_toast<'a>(new: RowImage<'a>, old: &RowImage<'a>) -> RowImage<'a> {
    if old.columns.iter().all(|(name, _)| new.get(name).is_some()) {
        return new;
    }
    let mut columns: Vec<(&'a str, Cow<'a, str>)> = old
        .columns
        .iter()
        .map(|(name, old_value)| {
            let value = new
                .get(name)
                .map(|v| Cow::Owned(v.to_owned()))
                .unwrap_or_else(|| old_value.clone());
            (*name, value)
        })
        .collect();
    columns.extend(
        new.columns
            .iter()
            .filter(|(name, _)| old.get(name).is_none())
            .cloned(),
    );
    RowImage { columns }
}

struct Changed {
    /// The changed columns that are not ignored, as a JSON array.
    json: String,
    /// Columns did change, but every one of them is ignored.
    only_ignored: bool,
}

/// The columns whose values differ; `None` when the before image lacks a
/// column, since then what changed cannot be known. Ignored columns are
/// compared but not listed.
fn changed_columns(
    before: &RowImage<'_>,
    after: &RowImage<'_>,
    rules: Option<&TableRules>,
) -> Option<Changed> {
    let mut json = String::from("[");
    let mut ignored = false;
    for (name, value) in &after.columns {
        let old = before.get(name)?;
        if old != value.as_ref() {
            if rules.is_some_and(|r| r.ignores(name)) {
                ignored = true;
                continue;
            }
            if json.len() > 1 {
                json.push(',');
            }
            push_json_string(&mut json, name);
        }
    }
    json.push(']');
    let only_ignored = ignored && json.len() == 2;
    Some(Changed { json, only_ignored })
}

#[cfg(test)]
mod tests {
    //! Behaviour as data: records wal2json 2.5 really sent (captured from
    //! PostgreSQL 15), and the entries they must become.
    use super::*;
    use crate::table::TablePattern;

    const RECORDS: &str = include_str!("../../tests/fixtures/wal2json_v2.jsonl");

    fn run(filter: &[&str], stored_up_to: Lsn) -> Vec<Event> {
        let filter = TableFilter {
            include: filter
                .iter()
                .map(|p| TablePattern::parse(p).unwrap())
                .collect(),
            exclude: vec![],
        };
        let mut a = Assembler::new(filter, stored_up_to);
        let mut out = Vec::new();
        for (i, line) in RECORDS.lines().filter(|l| !l.is_empty()).enumerate() {
            a.push(Lsn(i as u64), line.as_bytes(), &mut out).unwrap();
        }
        assert!(!a.in_transaction());
        out
    }

    fn entries(events: &[Event]) -> Vec<&AuditEntry> {
        events
            .iter()
            .filter_map(|e| {
                if let Event::Entry(e) = e {
                    Some(e)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn every_action_becomes_the_expected_entry() {
        let events = run(&["*.*"], Lsn::ZERO);
        let e = entries(&events);
        let summary: Vec<_> = e
            .iter()
            .map(|e| format!("{} {} {}", e.action, e.table, e.txn.xid))
            .collect();
        assert_eq!(
            summary,
            [
                "INSERT public.a 727",
                "UPDATE public.a 728",
                "UPDATE public.a 730",
                "DELETE public.a 731",
                "INSERT public.nopk 732",
                "INSERT public.Order Items 735",
                "INSERT public.a 736",
                "TRUNCATE public.a 737",
                "TRUNCATE public.nopk 737",
            ]
        );
        let insert = e[0];
        assert_eq!(insert.primary_key.as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(insert.before, None);
        assert_eq!(
            insert.after.as_deref(),
            Some(concat!(
                r#"{"id":1,"n":"10.50","j":{"a": [1, 2]},"b":"\\xdeadbeef","t":"2026-11-22 02:52:43.198686+00","#,
                r#""big":9223372036854775807,"f":null,"arr":"{a,\"b c\"}","s":"line\nq\"\\ ü"}"#
            ))
        );
        // Identity DEFAULT: the before image is the key only, so what changed is unknown.
        assert_eq!(e[1].before.as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(e[1].changed_columns, None);
        // Identity FULL: the whole old row, and exactly the changed column.
        assert!(e[2].before.as_deref().unwrap().ends_with(r#""s":"x"}"#));
        assert_eq!(e[2].changed_columns.as_deref(), Some(r#"["s"]"#));
        assert_eq!(e[3].after, None);
        assert_eq!(e[3].primary_key.as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(
            e[4].primary_key, None,
            "a table without a primary key has none"
        );
        assert_eq!(e[5].primary_key.as_deref(), Some(r#"{"id":1,"k":2}"#));
        assert_eq!(e[7].primary_key, None);
    }

    #[test]
    fn every_transaction_commits_once_in_order() {
        let events = run(&["*.*"], Lsn::ZERO);
        let commits: Vec<u64> = events
            .iter()
            .filter_map(|e| {
                if let Event::Commit(t) = e {
                    Some(t.xid)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(commits, (724..=737).collect::<Vec<_>>());
    }

    #[test]
    fn filtered_tables_yield_no_entries_but_still_commit() {
        let events = run(&["public.nopk"], Lsn::ZERO);
        assert_eq!(entries(&events).len(), 2);
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Commit(_)))
                .count(),
            14
        );
    }

    #[test]
    fn transactions_already_stored_are_skipped() {
        // 0/15349A0 is the end of xid 731's commit.
        let events = run(&["*.*"], "0/15349A0".parse().unwrap());
        let xids: Vec<u64> = entries(&events).iter().map(|e| e.txn.xid).collect();
        assert_eq!(xids, [732, 735, 736, 737, 737]);
    }

    #[test]
    fn unchanged_toast_columns_are_taken_from_the_before_image() {
        let mut a = Assembler::new(
            TableFilter {
                include: vec![TablePattern::parse("*.*").unwrap()],
                exclude: vec![],
            },
            Lsn::ZERO,
        );
        let mut out = Vec::new();
        for rec in [
            r#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
            r#"{"action":"U","xid":9,"schema":"s","table":"t","columns":[{"name":"id","type":"integer","value":1},{"name":"n","type":"text","value":"b"}],"identity":[{"name":"id","type":"integer","value":1},{"name":"big","type":"text","value":"long"},{"name":"n","type":"text","value":"a"}],"pk":[{"name":"id","type":"integer"}]}"#,
            r#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
        ] {
            a.push(Lsn::ZERO, rec.as_bytes(), &mut out).unwrap();
        }
        let e = entries(&out)[0];
        assert_eq!(e.after.as_deref(), Some(r#"{"id":1,"big":"long","n":"b"}"#));
        assert_eq!(e.changed_columns.as_deref(), Some(r#"["n"]"#));
    }

    #[test]
    fn an_undecodable_record_is_kept_and_the_transaction_goes_on() {
        let mut a = Assembler::new(
            TableFilter {
                include: vec![TablePattern::parse("*.*").unwrap()],
                exclude: vec![],
            },
            Lsn::ZERO,
        );
        let mut out = Vec::new();
        a.push(Lsn(1), br#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#, &mut out).unwrap();
        a.push(Lsn(2), br#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","type":"s."q"","value":1}]}"#, &mut out).unwrap();
        a.push(Lsn(3), br#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","type":"integer","value":1}],"pk":[]}"#, &mut out).unwrap();
        a.push(Lsn(4), br#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#, &mut out).unwrap();
        assert!(matches!(&out[0], Event::Undecodable(f) if f.lsn == Lsn(2) && f.xid == Some(9)));
        assert!(matches!(&out[1], Event::Entry(e) if e.after.as_deref() == Some(r#"{"c":1}"#)));
        assert!(matches!(&out[2], Event::Commit(t) if t.xid == 9));
    }

    #[test]
    fn context_messages_apply_to_the_changes_after_them() {
        let mut a = Assembler::new(
            TableFilter {
                include: vec![TablePattern::parse("*.*").unwrap()],
                exclude: vec![],
            },
            Lsn::ZERO,
        );
        let mut out = Vec::new();
        for rec in [
            r#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","type":"integer","value":0}],"pk":[]}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail","content":"{\"session_user\" : \"app\", \"actor\" : \"alice\"}"}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","type":"integer","value":1}],"pk":[]}"#,
            r#"{"action":"M","xid":9,"transactional":false,"prefix":"pgtrail","content":"{\"actor\" : \"mallory\"}"}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail","content":"{\"session_user\" : \"app\", \"actor\" : \"bob\"}"}"#,
            r#"{"action":"T","xid":9,"schema":"s","table":"t"}"#,
            r#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
            r#"{"action":"B","xid":10,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/30","nextlsn":"0/40"}"#,
            r#"{"action":"I","xid":10,"schema":"s","table":"t","columns":[{"name":"id","type":"integer","value":2}],"pk":[]}"#,
            r#"{"action":"C","xid":10,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/30","nextlsn":"0/40"}"#,
        ] {
            a.push(Lsn::ZERO, rec.as_bytes(), &mut out).unwrap();
        }
        let actors: Vec<Option<String>> = entries(&out)
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.context).unwrap()["actor"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(
            actors,
            [None, Some("alice".into()), Some("bob".into()), None]
        );
        assert_eq!(&*entries(&out)[0].context, EMPTY_CONTEXT);
    }

    /// Column rules as data: each record of one transaction, and the entry it
    /// must become (`None`: no entry). In the expected text, `"~v"` stands for
    /// the hash of the JSON string `"v"` under the test key.
    #[test]
    fn column_rules_ignore_and_redact() {
        use crate::capture::redact::{ColumnRule, RedactKey};
        let key = || RedactKey::new(b"test key");
        let rule = |table: &str, ignore: &[&str], redact: &[&str]| ColumnRule {
            table: TablePattern::parse(table).unwrap(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            redact: redact.iter().map(|s| s.to_string()).collect(),
        };
        let rules = ColumnRules::new(
            vec![
                rule("s.users", &["seen"], &["pw", "ssn"]),
                rule("s.tok*", &[], &["token"]),
                rule("s.odd", &["id"], &[]),
            ],
            Some(key()),
        )
        .unwrap();
        let expand = |text: &str| -> String {
            let mut out = String::new();
            let mut rest = text;
            while let Some(at) = rest.find('~') {
                out.push_str(&rest[..at - 1]);
                let word: String = rest[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                out.push_str(&key().hash(&format!("\"{word}\"")));
                rest = &rest[at + 1 + word.len() + 1..];
            }
            out.push_str(rest);
            out
        };
        let cols = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(n, val)| format!(r#"{{"name":"{n}","type":"text","value":{val}}}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let users = |action: &str, new: &[(&str, &str)], old: &[(&str, &str)]| {
            format!(
                r#"{{"action":"{action}","xid":9,"schema":"s","table":"users","columns":[{}],"identity":[{}],"pk":[{{"name":"id","type":"integer"}}]}}"#,
                cols(new),
                cols(old)
            )
        };
        let row1 = [
            ("id", "1"),
            ("name", r#""a""#),
            ("pw", r#""x1""#),
            ("ssn", "null"),
            ("seen", r#""t1""#),
        ];
        let seen2 = [
            ("id", "1"),
            ("name", r#""a""#),
            ("pw", r#""x1""#),
            ("ssn", "null"),
            ("seen", r#""t2""#),
        ];
        let pw2 = [
            ("id", "1"),
            ("name", r#""a""#),
            ("pw", r#""x2""#),
            ("ssn", "null"),
            ("seen", r#""t3""#),
        ];
        type Expected = Option<(
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        )>;
        let cases: Vec<(String, Expected)> = vec![
            // INSERT: the ignored column is gone, the redacted one hashed, null stays null.
            (users("I", &row1, &[]), Some((Some(r#"{"id":1}"#), None, Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#), None))),
            // Only the ignored column changed: no entry.
            (users("U", &seen2, &row1), None),
            // A redacted column changed (and an ignored one): listed, hashes differ.
            (
                users("U", &pw2, &seen2),
                Some((
                    Some(r#"{"id":1}"#),
                    Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#),
                    Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#),
                    Some(r#"["pw"]"#),
                )),
            ),
            // Nothing changed at all: still an entry, as without rules.
            (users("U", &pw2, &pw2), Some((Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), Some("[]")))),
            // Identity DEFAULT: what changed is unknown, so the entry stays, without the ignored column.
            (
                users("U", &row1, &[("id", "1")]),
                Some((Some(r#"{"id":1}"#), Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x1","ssn":null}"#), None)),
            ),
            (users("D", &[], &pw2), Some((Some(r#"{"id":1}"#), Some(r#"{"id":1,"name":"a","pw":"~x2","ssn":null}"#), None, None))),
            // A redacted key column is hashed in primary_key too.
            (
                r#"{"action":"D","xid":9,"schema":"s","table":"tokens","identity":[{"name":"token","type":"text","value":"t0k"},{"name":"n","type":"integer","value":5}],"pk":[{"name":"token","type":"text"}]}"#.into(),
                Some((Some(r#"{"token":"~t0k"}"#), Some(r#"{"token":"~t0k","n":5}"#), None, None)),
            ),
            // An ignored key column: no primary_key, as for a table without one.
            (
                r#"{"action":"I","xid":9,"schema":"s","table":"odd","columns":[{"name":"id","type":"integer","value":7},{"name":"v","type":"text","value":"x"}],"pk":[{"name":"id","type":"integer"}]}"#.into(),
                Some((None, None, Some(r#"{"v":"x"}"#), None)),
            ),
            // Rules are per table: the same column names elsewhere are stored as they are.
            (
                r#"{"action":"I","xid":9,"schema":"s","table":"other","columns":[{"name":"pw","type":"text","value":"x1"},{"name":"seen","type":"text","value":"t1"}],"pk":[]}"#.into(),
                Some((None, None, Some(r#"{"pw":"x1","seen":"t1"}"#), None)),
            ),
        ];
        for (record, expected) in cases {
            let mut a = Assembler::new(
                TableFilter {
                    include: vec![TablePattern::parse("*.*").unwrap()],
                    exclude: vec![],
                },
                Lsn::ZERO,
            )
            .with_column_rules(rules.clone());
            let mut out = Vec::new();
            for rec in [
                r#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
                &record,
                r#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
            ] {
                a.push(Lsn::ZERO, rec.as_bytes(), &mut out).unwrap();
            }
            assert!(
                matches!(out.last(), Some(Event::Commit(_))),
                "the transaction commits either way: {record}"
            );
            let got = entries(&out).first().map(|e| {
                (
                    e.primary_key.clone(),
                    e.before.clone(),
                    e.after.clone(),
                    e.changed_columns.clone(),
                )
            });
            let want = expected.map(|(k, b, a, c)| {
                (
                    k.map(expand),
                    b.map(expand),
                    a.map(expand),
                    c.map(str::to_owned),
                )
            });
            assert_eq!(got, want, "for {record}");
        }
    }

    #[test]
    fn an_undecodable_record_of_a_redacted_table_is_withheld() {
        use crate::capture::redact::{ColumnRule, RedactKey};
        let rules = ColumnRules::new(
            vec![ColumnRule {
                table: TablePattern::parse("s.t").unwrap(),
                ignore: vec![],
                redact: vec!["c".into()],
            }],
            Some(RedactKey::new(b"k")),
        )
        .unwrap();
        let mut a = Assembler::new(
            TableFilter {
                include: vec![TablePattern::parse("*.*").unwrap()],
                exclude: vec![],
            },
            Lsn::ZERO,
        )
        .with_column_rules(rules);
        let mut out = Vec::new();
        a.push(Lsn(1), br#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#, &mut out).unwrap();
        a.push(Lsn(2), br#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","type":"s."q"","value":"s3cret"}]}"#, &mut out).unwrap();
        let Event::Undecodable(f) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(
            !f.record.contains("s3cret") && f.record.contains("withheld"),
            "{f:?}"
        );
    }

    /// A two-level tree o → o_eu → o_eu_lo, and o → o_us, captured by the
    /// root's name only; records as wal2json 2.5 sent them for a row moved
    /// between partitions, a partition created while running, and TRUNCATEs.
    #[test]
    fn partitions_are_named_by_their_root_and_truncates_carry_options() {
        use crate::capture::partition::Member;
        let t = |n: &str| TableName::new("public", n);
        let member = |root: &str, parent: &str| Member {
            root: t(root),
            parent: t(parent),
        };
        let map = PartitionMap::new([
            (t("o_eu"), member("o", "o")),
            (t("o_eu_lo"), member("o", "o_eu")),
            (t("o_us"), member("o", "o")),
        ]);
        let mut filter = Wal2jsonFilter::from_patterns(&[TablePattern::parse("public.o").unwrap()]);
        filter.add_schema("public");
        let mut a = Assembler::new(
            TableFilter {
                include: vec![
                    TablePattern::parse("public.o").unwrap(),
                    TablePattern::parse("public.x").unwrap(),
                ],
                exclude: vec![],
            },
            Lsn::ZERO,
        )
        .with_partitions(map)
        .with_stream_filter(filter);
        let mut out = Vec::new();
        let q = "TRUNCATE o_eu; TRUNCATE public.x RESTART IDENTITY CASCADE; TRUNCATE o";
        for rec in [
            r#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
            r#"{"action":"D","xid":9,"schema":"public","table":"o_eu_lo","identity":[{"name":"id","type":"integer","value":1},{"name":"region","type":"text","value":"eu"}],"pk":[{"name":"id","type":"integer"},{"name":"region","type":"text"}]}"#,
            r#"{"action":"I","xid":9,"schema":"public","table":"o_us","columns":[{"name":"id","type":"integer","value":1},{"name":"region","type":"text","value":"us"}],"pk":[{"name":"id","type":"integer"},{"name":"region","type":"text"}]}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_partitions","content":"{\"root\" : {\"schema\" : \"public\", \"name\" : \"o\"}, \"members\" : [{\"schema\" : \"public\", \"name\" : \"o_eu\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}, {\"schema\" : \"public\", \"name\" : \"o_eu_lo\", \"parent_schema\" : \"public\", \"parent_name\" : \"o_eu\"}, {\"schema\" : \"public\", \"name\" : \"o_us\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}, {\"schema\" : \"public\", \"name\" : \"o_new\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}]}"}"#,
            r#"{"action":"I","xid":9,"schema":"public","table":"o_new","columns":[{"name":"id","type":"integer","value":2},{"name":"region","type":"text","value":"new"}],"pk":[{"name":"id","type":"integer"},{"name":"region","type":"text"}]}"#,
            &format!(
                r#"{{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{{\"schema\":\"public\",\"table\":\"o_eu\",\"statement_start\":\"s1\",\"query\":\"{q}\"}}"}}"#
            ),
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"o_eu_lo\",\"statement_start\":\"s1\"}"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o_eu"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o_eu_lo"}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"x\",\"statement_start\":\"s1\"}"}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"y\",\"statement_start\":\"s1\"}"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"x"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"y"}"#,
            r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"o\",\"statement_start\":\"s1\"}"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o_eu"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o_us"}"#,
            r#"{"action":"T","xid":9,"schema":"public","table":"o_eu_lo"}"#,
            r#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#,
        ] {
            a.push(Lsn::ZERO, rec.as_bytes(), &mut out).unwrap();
        }
        let got: Vec<(String, &str, Option<&str>)> = entries(&out)
            .iter()
            .map(|e| (e.table.to_string(), e.action.as_str(), e.details.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "public.o".into(),
                    "DELETE",
                    Some(r#"{"partition":"public.o_eu_lo"}"#)
                ),
                (
                    "public.o".into(),
                    "INSERT",
                    Some(r#"{"partition":"public.o_us"}"#)
                ),
                (
                    "public.o".into(),
                    "INSERT",
                    Some(r#"{"partition":"public.o_new"}"#)
                ),
                (
                    "public.o".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":false,"partition":"public.o_eu","restart_identity":false}"#)
                ),
                (
                    "public.x".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":true,"restart_identity":true}"#)
                ),
                (
                    "public.o".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":false,"restart_identity":false}"#)
                ),
            ],
            "y is not captured; a partition truncated with its parent is no entry of its own"
        );
        // Both rows of the moved row's history share one row key.
        let e = entries(&out);
        assert_eq!(
            crate::entry::row_key(&e[0].table, r#"{"id":1,"region":"eu"}"#),
            crate::entry::row_key(&e[1].table, r#"{"id":1,"region":"eu"}"#)
        );
    }

    #[test]
    fn a_partition_outside_the_stream_filter_restarts_the_session() {
        let mut a = Assembler::new(
            TableFilter {
                include: vec![TablePattern::parse("public.o").unwrap()],
                exclude: vec![],
            },
            Lsn::ZERO,
        )
        .with_stream_filter(Wal2jsonFilter::from_patterns(&[TablePattern::parse(
            "public.o",
        )
        .unwrap()]));
        let mut out = Vec::new();
        a.push(Lsn(1), br#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#, &mut out).unwrap();
        let r = a.push(
            Lsn(2),
            br#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_partitions","content":"{\"root\":{\"schema\":\"public\",\"name\":\"o\"},\"members\":[{\"schema\":\"archive\",\"name\":\"o_old\",\"parent_schema\":\"public\",\"parent_name\":\"o\"}]}"}"#,
            &mut out,
        );
        assert!(
            matches!(&r, Err(AssembleError::PartitionOutsideStream { partition, .. }) if partition.schema == "archive"),
            "{r:?}"
        );
    }

    #[test]
    fn a_row_outside_a_transaction_is_a_protocol_error() {
        let mut a = Assembler::new(TableFilter::default(), Lsn::ZERO);
        let r = a.push(
            Lsn(5),
            br#"{"action":"D","xid":1,"schema":"s","table":"t","identity":[]}"#,
            &mut Vec::new(),
        );
        assert!(matches!(r, Err(AssembleError::OutsideTransaction { .. })));
    }
}
