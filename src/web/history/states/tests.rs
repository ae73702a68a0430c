//! The state as of a time on chains built to show each rule: the latest
//! image, carried columns, a DELETE, a TRUNCATE, an audit gap, before the
//! first entry; and the statements that restore a state.

use chrono::TimeZone;

use super::*;

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 10, minute, 0).unwrap()
}

fn entry(id: i64, minute: u32, action: &str, after: Option<&str>) -> StoredEntry {
    StoredEntry {
        id,
        committed_at: t(minute),
        xid: Some(id),
        lsn: None,
        schema: "public".into(),
        table: "accounts".into(),
        action: action.into(),
        source: "shop".into(),
        json: [
            Some(r#"{"id":1}"#.into()),
            None,
            after.map(Into::into),
            None,
            Some("{}".into()),
            None,
        ],
    }
}

fn gap(from: u32, to: Option<u32>) -> Gap {
    Gap {
        source: "app".into(),
        slot: "pgtrail".into(),
        from: Some(t(from)),
        from_lsn: None,
        to: to.map(t),
        to_lsn: None,
        found: String::new(),
        missing: false,
        moved: None,
        anchor: 100,
        found_at: t(from + 1),
        ended_by: None,
    }
}

/// The state as `name=value` pairs (`name=?` unknown, `name=value<N` carried from entry N), or its kind and reason.
fn shown(state: &RowState) -> String {
    match state {
        RowState::Present { columns, from } => {
            let cols: Vec<String> = columns
                .iter()
                .map(|c| {
                    let v = c.value.as_deref().map_or("?", |v| v.get());
                    match c.carried_from {
                        Some(n) => format!("{}={v}<{n}", c.name),
                        None => format!("{}={v}", c.name),
                    }
                })
                .collect();
            format!("present@{} {}", from.id, cols.join(" "))
        }
        RowState::Absent { why, from } => format!("absent@{}: {why}", from.id),
        RowState::Unknown { why } => format!("unknown: {why}"),
    }
}

fn state_at(entries: &[StoredEntry], gaps: &[Gap], minute: u32) -> String {
    let upto: Vec<StoredEntry> = entries
        .iter()
        .filter(|e| e.committed_at <= t(minute))
        .cloned()
        .collect();
    shown(&as_of(
        &Chain {
            entries: &upto,
            truncate: None,
            ddl: None,
            gaps,
        },
        t(minute),
    ))
}

fn life() -> Vec<StoredEntry> {
    vec![
        entry(1, 1, "INSERT", Some(r#"{"id":1,"name":"a","doc":"big"}"#)),
        // REPLICA IDENTITY DEFAULT: the unchanged TOASTed `doc` is not in the image.
        entry(2, 2, "UPDATE", Some(r#"{"id":1,"name":"b"}"#)),
        entry(3, 3, "UPDATE", Some(r#"{"id":1,"name":"c","doc":"new"}"#)),
        entry(4, 4, "DELETE", None),
        entry(5, 5, "INSERT", Some(r#"{"id":1,"name":"d","doc":"again"}"#)),
    ]
}

#[test]
fn the_latest_image_at_or_before_the_time() {
    let life = life();
    assert_eq!(
        state_at(&life, &[], 1),
        r#"present@1 id=1 name="a" doc="big""#
    );
    assert_eq!(
        state_at(&life, &[], 2),
        r#"present@2 id=1 name="b" doc="big"<1"#,
        "the column the image lacks is carried from the entry before"
    );
    assert_eq!(
        state_at(&life, &[], 3),
        r#"present@3 id=1 name="c" doc="new""#
    );
    assert!(state_at(&life, &[], 4)
        .starts_with("absent@4: The row was deleted at 2026-11-01 10:04:00 UTC"));
    assert_eq!(
        state_at(&life, &[], 9),
        r#"present@5 id=1 name="d" doc="again""#
    );
}

#[test]
fn before_the_first_entry_the_state_is_unknown() {
    let s = state_at(&life(), &[], 0);
    assert!(
        s.starts_with("unknown: No entry of this row was captured at or before"),
        "{s}"
    );
}

#[test]
fn an_audit_gap_makes_the_state_unknown() {
    let life = life();
    // A gap between minutes 3 and 5, closed: after entry 3 (minute 3) and before the time, unknown.
    let gaps = [gap(3, Some(5))];
    assert!(state_at(&life[..3], &gaps, 4).starts_with("unknown: Changes between"));
    // At the gap's own start, nothing was missed yet.
    assert_eq!(
        state_at(&life[..3], &gaps, 3),
        r#"present@3 id=1 name="c" doc="new""#
    );
    // A gap capture has not come back from: everything after its start is unknown.
    let open = [gap(6, None)];
    assert!(state_at(&life, &open, 7).starts_with("unknown: Changes after"));
    // A column carried across a gap is unknown, and no statement guesses it.
    let gaps = [gap(1, Some(2))];
    let upto: Vec<StoredEntry> = life[..2].to_vec();
    let chain = Chain {
        entries: &upto,
        truncate: None,
        ddl: None,
        gaps: &gaps,
    };
    let state = as_of(&chain, t(2));
    assert_eq!(shown(&state), r#"present@2 id=1 name="b" doc=?"#);
    let key = Members::parse(Some(r#"{"id":1}"#));
    assert!(restore_sql(&state, "public", "accounts", &key, "then")
        .unwrap_err()
        .contains("the values of doc then are not in the audit trail"));
}

#[test]
fn a_truncate_removes_the_row() {
    let life = life();
    let truncate = entry(9, 6, "TRUNCATE", None);
    let state = as_of(
        &Chain {
            entries: &life,
            truncate: Some(&truncate),
            ddl: None,
            gaps: &[],
        },
        t(7),
    );
    assert!(
        shown(&state).starts_with("absent@9: The table was truncated at 2026-11-01 10:06:00 UTC")
    );
}

#[test]
fn restore_statements_end_the_row_in_the_state() {
    let life = life();
    let key = Members::parse(Some(r#"{"id":1}"#));
    let present = as_of(
        &Chain {
            entries: &life[..2],
            truncate: None,
            ddl: None,
            gaps: &[],
        },
        t(2),
    );
    let sql = restore_sql(&present, "public", "accounts", &key, "2026-11-01 10:02").unwrap();
    assert!(
        sql.ends_with(
            "INSERT INTO \"public\".\"accounts\" (\"id\", \"name\", \"doc\") OVERRIDING SYSTEM VALUE\nVALUES ('1', 'b', 'big')\n\
             ON CONFLICT (\"id\") DO UPDATE\nSET \"name\" = EXCLUDED.\"name\",\n    \"doc\" = EXCLUDED.\"doc\";"
        ),
        "{sql}"
    );
    assert!(sql.starts_with(
        "-- Brings the row back to its state as of 2026-11-01 10:02, which entry 2 (UPDATE"
    ));
    let absent = as_of(
        &Chain {
            entries: &life[..4],
            truncate: None,
            ddl: None,
            gaps: &[],
        },
        t(4),
    );
    let sql = restore_sql(&absent, "public", "accounts", &key, "then").unwrap();
    assert!(
        sql.ends_with("DELETE FROM \"public\".\"accounts\"\nWHERE \"id\" = '1';"),
        "{sql}"
    );
    let unknown = as_of(
        &Chain {
            entries: &[],
            truncate: None,
            ddl: None,
            gaps: &[],
        },
        t(0),
    );
    assert!(restore_sql(&unknown, "public", "accounts", &key, "then").is_err());
}

#[test]
fn a_whole_before_image_holds_the_missing_columns_and_nothing_older() {
    // REPLICA IDENTITY FULL: the UPDATE's before image is the whole row. `doc`
    // (TOASTed, unchanged) is taken from it; `legacy`, which only the INSERT
    // held (the column was dropped or is ignored since), is not carried.
    let mut update = entry(2, 2, "UPDATE", Some(r#"{"id":1,"name":"b"}"#));
    update.json[1] = Some(r#"{"id":1,"name":"a","doc":"big"}"#.into());
    let life = [
        entry(
            1,
            1,
            "INSERT",
            Some(r#"{"id":1,"name":"a","doc":"big","legacy":7}"#),
        ),
        update,
    ];
    assert_eq!(
        state_at(&life, &[], 2),
        r#"present@2 id=1 name="b" doc="big""#
    );
}

#[test]
fn a_column_is_not_carried_across_a_change_of_the_table() {
    // REPLICA IDENTITY DEFAULT, and an ALTER TABLE between the INSERT and the
    // UPDATE: the INSERT's `doc` may be a column that no longer exists.
    let life = &life()[..2];
    let state = as_of(
        &Chain {
            entries: life,
            truncate: None,
            ddl: Some(t(1) + chrono::Duration::seconds(30)),
            gaps: &[],
        },
        t(2),
    );
    assert_eq!(shown(&state), r#"present@2 id=1 name="b" doc=?"#);
    let key = Members::parse(Some(r#"{"id":1}"#));
    let err = restore_sql(&state, "public", "accounts", &key, "then").unwrap_err();
    assert!(err.contains("doc"), "{err}");
    // A change of the table before the carried image does not matter.
    let state = as_of(
        &Chain {
            entries: life,
            truncate: None,
            ddl: Some(t(0)),
            gaps: &[],
        },
        t(2),
    );
    assert_eq!(shown(&state), r#"present@2 id=1 name="b" doc="big"<1"#);
}
