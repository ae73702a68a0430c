//! Transaction assembly: turns the stream of decoded records (begin, rows,
//! commit) into audit entries and commit markers for the store.
//!
//! It drops what must not be stored: tables outside the capture filter and
//! transactions the store already holds (delivery from the server is
//! at-least-once; the store's checkpoint says what is already in). Rolled-back
//! transactions never reach it: the server decodes only committed ones.

use std::borrow::Cow;
use std::sync::Arc;

use crate::decode::{self, Record, RowAction, RowChange};
use crate::context;
use crate::entry::{json_object, push_json_string, Action, AuditEntry, RowImage, Transaction, EMPTY_CONTEXT};

/// The logical message prefix of the context trigger.
pub const CONTEXT_PREFIX: &str = "pgtrail";
use crate::lsn::Lsn;
use crate::table::TableFilter;

/// What the store receives, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Entry(AuditEntry),
    /// A record that could not be decoded: kept whole so nothing vanishes silently.
    Undecodable(DecodeFailure),
    /// Everything of this transaction has been sent; once stored, the slot may advance to `end_lsn`.
    Commit(Arc<Transaction>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    pub lsn: Lsn,
    pub xid: Option<u64>,
    pub record: String,
    pub error: String,
}

/// The stream broke wal2json's framing: the connection is not to be trusted further.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("wal2json sent a {what} at {lsn} outside a transaction")]
    OutsideTransaction { what: &'static str, lsn: Lsn },
    #[error("wal2json began transaction {new} at {lsn} while {open} was still open")]
    NestedBegin { open: u64, new: u64, lsn: Lsn },
}

pub struct Assembler {
    filter: TableFilter,
    /// End LSN of the last transaction already in the store.
    stored_up_to: Lsn,
    open: Option<OpenTxn>,
}

struct OpenTxn {
    txn: Arc<Transaction>,
    /// Already stored before a restart: swallow it.
    skip: bool,
    /// Who is making the changes, from the latest context message; shared by the entries it covers.
    context: Arc<str>,
}

impl Assembler {
    pub fn new(filter: TableFilter, stored_up_to: Lsn) -> Self {
        Assembler { filter, stored_up_to, open: None }
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
    pub fn push(&mut self, lsn: Lsn, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), AssembleError> {
        let record = match decode::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                let xid = self.open.as_ref().map(|o| o.txn.xid);
                tracing::error!(%lsn, ?xid, error = %e, "wal2json record could not be decoded; kept in pgtrail.decode_errors");
                if !self.open.as_ref().is_some_and(|o| o.skip) {
                    out.push(Event::Undecodable(DecodeFailure {
                        lsn,
                        xid,
                        record: String::from_utf8_lossy(bytes).into_owned(),
                        error: e.to_string(),
                    }));
                }
                return Ok(());
            }
        };
        match record {
            Record::Begin(b) => {
                if let Some(open) = &self.open {
                    return Err(AssembleError::NestedBegin { open: open.txn.xid, new: b.xid, lsn });
                }
                let skip = b.end_lsn <= self.stored_up_to;
                self.open = Some(OpenTxn { txn: Arc::new(b.into()), skip, context: Arc::from(EMPTY_CONTEXT) });
            }
            Record::Commit(_) => {
                let open = self.open.take().ok_or(AssembleError::OutsideTransaction { what: "commit", lsn })?;
                if !open.skip {
                    self.stored_up_to = open.txn.end_lsn;
                    out.push(Event::Commit(open.txn));
                }
            }
            Record::Row(row) => {
                let open = self.open.as_ref().ok_or(AssembleError::OutsideTransaction { what: "row change", lsn })?;
                if !open.skip && self.filter.matches(&row.table) {
                    out.push(Event::Entry(row_entry(&open.txn, &open.context, row)));
                }
            }
            Record::Truncate(table) => {
                let open = self.open.as_ref().ok_or(AssembleError::OutsideTransaction { what: "truncate", lsn })?;
                if !open.skip && self.filter.matches(&table) {
                    out.push(Event::Entry(AuditEntry {
                        txn: open.txn.clone(),
                        table,
                        action: Action::Truncate,
                        primary_key: None,
                        before: None,
                        after: None,
                        changed_columns: None,
                        context: open.context.clone(),
                    }));
                }
            }
            Record::Message { prefix, content, transactional } => {
                // Non-transactional messages are not tied to a transaction's changes.
                if prefix != CONTEXT_PREFIX || !transactional {
                    return Ok(());
                }
                let open = self.open.as_mut().ok_or(AssembleError::OutsideTransaction { what: "context message", lsn })?;
                if open.skip {
                    return Ok(());
                }
                match context::from_message(&content) {
                    Ok(json) => open.context = Arc::from(json),
                    Err(e) => {
                        tracing::warn!(%lsn, xid = open.txn.xid, error = %e, "context message could not be read; kept in pgtrail.decode_errors");
                        out.push(Event::Undecodable(DecodeFailure {
                            lsn,
                            xid: Some(open.txn.xid),
                            record: String::from_utf8_lossy(bytes).into_owned(),
                            error: format!("context message: {e}"),
                        }));
                    }
                }
            }
        }
        Ok(())
    }
}

fn row_entry(txn: &Arc<Transaction>, context: &Arc<str>, row: RowChange<'_>) -> AuditEntry {
    let new = RowImage::from_columns(&row.columns);
    let old = RowImage::from_columns(&row.identity);
    let (action, before, after) = match row.action {
        RowAction::Insert => (Action::Insert, None, Some(new)),
        RowAction::Update => {
            let before = (!old.columns.is_empty()).then_some(&old);
            (Action::Update, before, Some(with_unchanged_toast(new, &old)))
        }
        RowAction::Delete => (Action::Delete, Some(&old), None),
    };
    let key_source = after.as_ref().or(before);
    let primary_key = key_source.and_then(|image| {
        if row.key.is_empty() {
            return None;
        }
        let values: Option<Vec<(&str, &str)>> =
            row.key.iter().map(|k| image.get(&k.name).map(|v| (k.name.as_ref(), v))).collect();
        values.map(|v| json_object(v.into_iter()))
    });
    let changed_columns = match (before, &after) {
        (Some(before), Some(after)) => changed_columns(before, after),
        _ => None,
    };
    AuditEntry {
        txn: txn.clone(),
        table: row.table,
        action,
        primary_key,
        before: before.map(RowImage::to_json),
        after: after.as_ref().map(RowImage::to_json),
        changed_columns,
        context: context.clone(),
    }
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
            let value = new.get(name).map(|v| Cow::Owned(v.to_owned())).unwrap_or_else(|| old_value.clone());
            (*name, value)
        })
        .collect();
    columns.extend(new.columns.iter().filter(|(name, _)| old.get(name).is_none()).cloned());
    RowImage { columns }
}

/// The columns whose values differ, as a JSON array; `None` when the before
/// image lacks a column, since then what changed cannot be known.
fn changed_columns(before: &RowImage<'_>, after: &RowImage<'_>) -> Option<String> {
    let mut out = String::from("[");
    for (name, value) in &after.columns {
        let old = before.get(name)?;
        if old != value.as_ref() {
            if out.len() > 1 {
                out.push(',');
            }
            push_json_string(&mut out, name);
        }
    }
    out.push(']');
    Some(out)
}

#[cfg(test)]
mod tests {
    //! Behaviour as data: records wal2json 2.5 really sent (captured from
    //! PostgreSQL 15), and the entries they must become.
    use super::*;
    use crate::table::TablePattern;

    const RECORDS: &str = include_str!("../tests/fixtures/wal2json_v2.jsonl");

    fn run(filter: &[&str], stored_up_to: Lsn) -> Vec<Event> {
        let filter = TableFilter {
            include: filter.iter().map(|p| TablePattern::parse(p).unwrap()).collect(),
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
        events.iter().filter_map(|e| if let Event::Entry(e) = e { Some(e) } else { None }).collect()
    }

    #[test]
    fn every_action_becomes_the_expected_entry() {
        let events = run(&["*.*"], Lsn::ZERO);
        let e = entries(&events);
        let summary: Vec<_> = e.iter().map(|e| format!("{} {} {}", e.action, e.table, e.txn.xid)).collect();
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
        assert_eq!(e[4].primary_key, None, "a table without a primary key has none");
        assert_eq!(e[5].primary_key.as_deref(), Some(r#"{"id":1,"k":2}"#));
        assert_eq!(e[7].primary_key, None);
    }

    #[test]
    fn every_transaction_commits_once_in_order() {
        let events = run(&["*.*"], Lsn::ZERO);
        let commits: Vec<u64> =
            events.iter().filter_map(|e| if let Event::Commit(t) = e { Some(t.xid) } else { None }).collect();
        assert_eq!(commits, (724..=737).collect::<Vec<_>>());
    }

    #[test]
    fn filtered_tables_yield_no_entries_but_still_commit() {
        let events = run(&["public.nopk"], Lsn::ZERO);
        assert_eq!(entries(&events).len(), 2);
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Commit(_))).count(), 14);
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
        let mut a = Assembler::new(TableFilter { include: vec![TablePattern::parse("*.*").unwrap()], exclude: vec![] }, Lsn::ZERO);
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
        let mut a = Assembler::new(TableFilter { include: vec![TablePattern::parse("*.*").unwrap()], exclude: vec![] }, Lsn::ZERO);
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
        let mut a = Assembler::new(TableFilter { include: vec![TablePattern::parse("*.*").unwrap()], exclude: vec![] }, Lsn::ZERO);
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
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.context).unwrap()["actor"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(actors, [None, Some("alice".into()), Some("bob".into()), None]);
        assert_eq!(&*entries(&out)[0].context, EMPTY_CONTEXT);
    }

    #[test]
    fn a_row_outside_a_transaction_is_a_protocol_error() {
        let mut a = Assembler::new(TableFilter::default(), Lsn::ZERO);
        let r = a.push(Lsn(5), br#"{"action":"D","xid":1,"schema":"s","table":"t","identity":[]}"#, &mut Vec::new());
        assert!(matches!(r, Err(AssembleError::OutsideTransaction { .. })));
    }
}
