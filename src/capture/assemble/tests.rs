//! The assembler's tests as a whole, and what the tests of its parts share.
//! Behaviour as data: records wal2json 2.5 really sent (captured from
//! PostgreSQL 15), and the entries they must become.

use super::*;
use crate::capture::signature::MessageKey;
use crate::entry::AuditEntry;
use crate::table::TablePattern;

const RECORDS: &str = include_str!("../../../tests/fixtures/wal2json_v2.jsonl");

/// The begin and commit records of a transaction 9, around hand-written records.
pub(super) const BEGIN_9: &str =
    r#"{"action":"B","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#;
pub(super) const COMMIT_9: &str =
    r#"{"action":"C","xid":9,"timestamp":"2026-01-01 00:00:00+00","lsn":"0/10","nextlsn":"0/20"}"#;

/// A filter that includes `patterns` and excludes nothing.
pub(super) fn filter(patterns: &[&str]) -> TableFilter {
    TableFilter {
        include: patterns
            .iter()
            .map(|p| TablePattern::parse(p).unwrap())
            .collect(),
        exclude: vec![],
    }
}

/// The key the tests' source signs its messages with.
pub(super) fn test_key() -> MessageKey {
    MessageKey::from_secret(b"the test source's message key")
}

/// An assembler that captures `patterns`, with nothing stored yet.
pub(super) fn assembler(patterns: &[&str]) -> Assembler {
    assembler_with(patterns, test_key())
}

/// The same, checking messages with `key`.
pub(super) fn assembler_with(patterns: &[&str], key: MessageKey) -> Assembler {
    Assembler::new(filter(patterns), Lsn::ZERO, key)
}

/// A record as pgtrail's source functions would have sent it: a message
/// with one of pgtrail's prefixes is signed with [`test_key`] for its xid.
/// Anything else is returned as it is.
pub(super) fn signed(record: &str) -> String {
    let Ok(mut json) = serde_json::from_str::<serde_json::Value>(record) else {
        return record.to_owned();
    };
    let (Some("M"), Some(prefix), Some(xid), Some(content)) = (
        json["action"].as_str(),
        json["prefix"].as_str(),
        json["xid"].as_u64(),
        json["content"].as_str(),
    ) else {
        return record.to_owned();
    };
    if !prefix.starts_with("pgtrail") {
        return record.to_owned();
    }
    json["content"] = test_key().sign(prefix, xid, content).into();
    json.to_string()
}

/// Pushes the records, signed as the source would ([`signed`]), the first at
/// LSN 1, the next at 2, and so on; returns what they yield.
pub(super) fn feed(a: &mut Assembler, records: &[&str]) -> Vec<Event> {
    let records: Vec<String> = records.iter().map(|r| signed(r)).collect();
    feed_as_sent(a, &records.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Pushes the records exactly as given.
pub(super) fn feed_as_sent(a: &mut Assembler, records: &[&str]) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, record) in records.iter().enumerate() {
        a.push(Lsn(i as u64 + 1), record.as_bytes(), &mut out)
            .unwrap();
    }
    out
}

pub(super) fn entries(events: &[Event]) -> Vec<&AuditEntry> {
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

/// The whole fixture through an assembler that captures `patterns`.
fn run(patterns: &[&str], stored_up_to: Lsn) -> Vec<Event> {
    let mut a = Assembler::new(filter(patterns), stored_up_to, test_key());
    let mut out = Vec::new();
    for (i, line) in RECORDS.lines().filter(|l| !l.is_empty()).enumerate() {
        a.push(Lsn(i as u64), signed(line).as_bytes(), &mut out)
            .unwrap();
    }
    assert!(!a.in_transaction());
    out
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
fn an_undecodable_record_is_kept_and_the_transaction_goes_on() {
    let mut a = assembler(&["*.*"]);
    let out = feed(
        &mut a,
        &[
            BEGIN_9,
            // No type OID: wal2json always sends one, so this is not a record of it.
            r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","value":1}]}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","typeoid":23,"value":1}],"pk":[]}"#,
            COMMIT_9,
        ],
    );
    assert!(matches!(&out[0], Event::Undecodable(f) if f.lsn == Lsn(2) && f.xid == Some(9)));
    assert!(matches!(&out[1], Event::Entry(e) if e.after.as_deref() == Some(r#"{"c":1}"#)));
    assert!(matches!(&out[2], Event::Commit(t) if t.xid == 9));
}

#[test]
fn an_undecodable_record_of_a_ruled_table_or_its_partition_is_withheld() {
    use crate::capture::partition::{Member, PartitionMap};
    use crate::capture::redact::{ColumnRule, RedactKey};
    let rule = |table, ignore: &[&str], redact: &[&str]| ColumnRule {
        table: TablePattern::parse(table).unwrap(),
        ignore: ignore.iter().map(|c| c.to_string()).collect(),
        redact: redact.iter().map(|c| c.to_string()).collect(),
    };
    // Rules name the roots only: s.t redacts c and ignores d, s.u only ignores d.
    let rules = ColumnRules::new(
        vec![rule("s.t", &["d"], &["c"]), rule("s.u", &["d"], &[])],
        Some(RedactKey::new(b"k")),
    )
    .unwrap();
    let t = TableName::new("s", "t");
    let map = PartitionMap::new([(
        TableName::new("s", "t_1"),
        Member {
            root: t.clone(),
            parent: t,
        },
    )]);
    let mut a = assembler(&["*.*"])
        .with_column_rules(rules)
        .with_partitions(map);
    let out = feed(
        &mut a,
        &[
            BEGIN_9,
            r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"c","typeoid":"s.q","value":"s3cret"}]}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"t_1","columns":[{"name":"c","typeoid":"s.q","value":"s3cret"},{"name":"d","typeoid":25,"value":"hidden"}]}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"u","columns":[{"name":"d","typeoid":"s.q","value":"hidden"}]}"#,
            r#"{"action":"I","xid":9,"schema":"s","table":"v","columns":[{"name":"d","typeoid":"s.q","value":"plain"}]}"#,
        ],
    );
    let kept: Vec<&str> = out
        .iter()
        .map(|e| match e {
            Event::Undecodable(f) => f.record.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    for record in &kept[..3] {
        assert!(
            record.starts_with("(withheld:")
                && !record.contains("s3cret")
                && !record.contains("hidden"),
            "{record}"
        );
    }
    assert!(
        kept[1].contains("s.t_1 (a partition of s.t)"),
        "{}",
        kept[1]
    );
    assert!(
        kept[3].contains("plain"),
        "a table without rules is kept whole"
    );
}

#[test]
fn a_row_outside_a_transaction_is_a_protocol_error() {
    let mut a = Assembler::new(TableFilter::default(), Lsn::ZERO, test_key());
    let r = a.push(
        Lsn(5),
        br#"{"action":"D","xid":1,"schema":"s","table":"t","identity":[]}"#,
        &mut Vec::new(),
    );
    assert!(matches!(r, Err(AssembleError::OutsideTransaction { .. })));
}
