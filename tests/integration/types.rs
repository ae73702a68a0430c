//! Value representation, byte for byte: every column type the spec names (integers up to bigint
//! max, floats incl. NaN/Infinity, numeric with its scale, bool, json/jsonb nested, NULL, bytea,
//! timestamps, arrays, uuid, text with Unicode/quotes/backslashes/newlines/control characters)
//! checked in the store's JSON text and in the jsonl export, for after images (INSERT, UPDATE)
//! and before images (UPDATE, DELETE under REPLICA IDENTITY FULL).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::harness::*;

/// How a value must appear.
#[derive(Clone, Debug)]
enum Expect {
    /// Exactly this JSON text (numbers in PostgreSQL's text form, true/false, null).
    Raw(&'static str),
    /// A JSON string that decodes to exactly this.
    Str(&'static str),
    /// Nested JSON equal to this (not a string holding JSON).
    Json(Value),
}
use Expect::*;

struct Col {
    name: &'static str,
    sql_type: &'static str,
    /// SQL expression inserted into row 1 (`$1` is the nasty text parameter).
    literal: &'static str,
    expect: Expect,
}

/// Text that must survive unchanged: accents, CJK, astral plane, ZWJ emoji, quotes, backslashes,
/// a literal `\u0000` escape sequence, CR/LF/tab and other control characters.
const NASTY: &str = "héllo wörld ✓ 𝄞 日本語 — it's \"quoted\" back\\slash \\x41 \\u0000 line1\nline2\r\n\ttab \u{1}\u{1f}\u{7f} end 👩‍👩‍👧";

const JSON_TEXT: &str = r#"{"b": [1, 2.50, {"c": null}], "a": "x\"y\\z", "u": "\u00e9\n"}"#;

fn columns() -> Vec<Col> {
    let c = |name, sql_type, literal, expect| Col {
        name,
        sql_type,
        literal,
        expect,
    };
    vec![
        c("c_int2", "smallint", "-32768", Raw("-32768")),
        c("c_int4", "integer", "2147483647", Raw("2147483647")),
        c(
            "c_int8",
            "bigint",
            "9223372036854775807",
            Raw("9223372036854775807"),
        ),
        c(
            "c_int8_min",
            "bigint",
            "-9223372036854775808",
            Raw("-9223372036854775808"),
        ),
        c("c_float4", "real", "0.1", Raw("0.1")),
        c("c_float8", "double precision", "1.5", Raw("1.5")),
        c(
            "c_float8_pi",
            "double precision",
            "3.141592653589793",
            Raw("3.141592653589793"),
        ),
        c("c_float8_big", "double precision", "1e100", Raw("1e+100")),
        c(
            "c_float8_small",
            "double precision",
            "-0.000025",
            Raw("-2.5e-05"),
        ),
        c("c_nan", "double precision", "'NaN'", Raw("null")),
        c("c_inf", "double precision", "'Infinity'", Raw("null")),
        c("c_ninf", "real", "'-Infinity'", Raw("null")),
        c("c_numeric", "numeric(10,2)", "10.5", Str("10.50")),
        c(
            "c_numeric_big",
            "numeric",
            "123456789012345678901234567890.123456789000",
            Str("123456789012345678901234567890.123456789000"),
        ),
        c("c_numeric_neg", "numeric", "-0.001", Str("-0.001")),
        c("c_numeric_int", "numeric", "42", Str("42")),
        c("c_bool_t", "boolean", "true", Raw("true")),
        c("c_bool_f", "boolean", "false", Raw("false")),
        // The literal is built from JSON_TEXT in `literal()`.
        c(
            "c_json",
            "json",
            "",
            Json(serde_json::from_str(JSON_TEXT).unwrap()),
        ),
        c(
            "c_jsonb",
            "jsonb",
            r#"'{"k": [true, false], "n": 1, "s": "ü"}'"#,
            Json(json!({"k": [true, false], "n": 1, "s": "ü"})),
        ),
        c(
            "c_jsonb_str",
            "jsonb",
            r#"'"just a string"'"#,
            Json(json!("just a string")),
        ),
        c(
            "c_jsonb_arr",
            "jsonb",
            r#"'[1, "two", null]'"#,
            Json(json!([1, "two", null])),
        ),
        c("c_null_text", "text", "NULL", Raw("null")),
        c("c_null_int", "integer", "NULL", Raw("null")),
        c("c_bytea", "bytea", r"'\xdeadbeef'", Str(r"\xdeadbeef")),
        c("c_bytea_empty", "bytea", "''", Str(r"\x")),
        c(
            "c_tstz",
            "timestamptz",
            "'2026-11-22 04:52:43.198686+02'",
            Str("2026-11-22 02:52:43.198686+00"),
        ),
        c(
            "c_ts",
            "timestamp",
            "'2026-11-22 02:52:43.5'",
            Str("2026-11-22 02:52:43.5"),
        ),
        c("c_date", "date", "'2026-11-22'", Str("2026-11-22")),
        c(
            "c_time",
            "time",
            "'23:59:59.999999'",
            Str("23:59:59.999999"),
        ),
        c(
            "c_interval",
            "interval",
            "'1 year 2 months 3 days 04:05:06.5'",
            Str("1 year 2 mons 3 days 04:05:06.5"),
        ),
        c(
            "c_uuid",
            "uuid",
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
            Str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ),
        c("c_text", "text", "$1", Str(NASTY)),
        c("c_text_empty", "text", "''", Str("")),
        c("c_text_jsonlike", "text", r#"'{"a":1}'"#, Str(r#"{"a":1}"#)),
        c("c_varchar", "varchar(20)", r#"'a"b'"#, Str(r#"a"b"#)),
        c("c_char", "char(5)", "'ab'", Str("ab   ")),
        c("c_int_arr", "integer[]", "'{1,2,3}'", Str("{1,2,3}")),
        c(
            "c_text_arr",
            "text[]",
            r#"ARRAY['a b', 'c"d', NULL, 'e\f']"#,
            Str(r#"{"a b","c\"d",NULL,"e\\f"}"#),
        ),
        c("c_inet", "inet", "'192.0.2.1/24'", Str("192.0.2.1/24")),
        c("c_enum", "mood", "'happy'", Str("happy")),
    ]
}

fn literal(col: &Col) -> String {
    if col.name == "c_json" {
        quote_literal(JSON_TEXT)
    } else {
        col.literal.to_string()
    }
}

/// Check one image (the JSON text of before or after) against the expectations, with some
/// columns overridden. `what` names the image in failure messages.
fn check_image(what: &str, text: &str, id: i64, overrides: &[(&str, Expect)]) {
    let obj = OrderedObject::parse(text);
    let cols = columns();
    let want_keys: BTreeSet<&str> = cols.iter().map(|c| c.name).chain(["id"]).collect();
    let got_keys: BTreeSet<&str> = obj.keys().into_iter().collect();
    assert_eq!(got_keys, want_keys, "{what}: columns");
    assert_eq!(obj.raw("id"), id.to_string(), "{what}: id");
    for col in &cols {
        let expect = overrides
            .iter()
            .find(|(n, _)| *n == col.name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| col.expect.clone());
        let raw = obj.raw(col.name);
        match expect {
            Raw(r) => assert_eq!(
                raw, r,
                "{what}: {} must be exactly the JSON text {r}",
                col.name
            ),
            Str(s) => {
                let v: Value = serde_json::from_str(raw).unwrap();
                assert_eq!(
                    v,
                    Value::String(s.to_string()),
                    "{what}: {} (raw JSON {raw})",
                    col.name
                );
            }
            Json(j) => {
                let v: Value = serde_json::from_str(raw).unwrap();
                assert_eq!(
                    v, j,
                    "{what}: {} must be nested JSON (raw JSON {raw})",
                    col.name
                );
            }
        }
    }
}

/// Every column null except id.
fn check_all_null(what: &str, text: &str, id: i64) {
    let overrides: Vec<(&str, Expect)> = columns().iter().map(|c| (c.name, Raw("null"))).collect();
    check_image(what, text, id, &overrides);
}

/// The columns an UPDATE of row 1 changes, as they must appear after it.
fn after_update() -> [(&'static str, Expect); 2] {
    [("c_int4", Raw("-1")), ("c_text", Str("changed"))]
}

/// The table `typed`, one column of each kind, with REPLICA IDENTITY FULL.
async fn create_typed(src: &tokio_postgres::Client) {
    let cols = columns();
    let defs: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    src.batch_execute(&format!(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE typed (id int PRIMARY KEY, {});
         ALTER TABLE typed REPLICA IDENTITY FULL;",
        defs.join(", ")
    ))
    .await
    .unwrap();
}

/// Row 1 with a value in every column, row 2 with none, row 3 a copy of row 1.
async fn insert_rows(src: &tokio_postgres::Client) {
    let cols = columns();
    let names: Vec<&str> = cols.iter().map(|c| c.name).collect();
    let lits: Vec<String> = cols.iter().map(literal).collect();
    src.execute(
        &format!(
            "INSERT INTO typed (id, {}) VALUES (1, {})",
            names.join(", "),
            lits.join(", ")
        ),
        &[&NASTY],
    )
    .await
    .unwrap();
    src.batch_execute(&format!(
        "INSERT INTO typed (id) VALUES (2);
         INSERT INTO typed SELECT 3, {} FROM typed WHERE id = 1;",
        names.join(", ")
    ))
    .await
    .unwrap();
}

/// Self-check: the expected strings are what PostgreSQL itself prints under the replication
/// session's output settings (so a failure below is the daemon's, not this test's).
async fn expectations_are_what_postgres_prints(src: &tokio_postgres::Client) {
    src.batch_execute(&format!("BEGIN; {OUTPUT_SETTINGS}"))
        .await
        .unwrap();
    for c in &columns() {
        if let Str(s) = c.expect {
            // format('%s') uses the type's output function (a ::text cast would trim char(n)).
            let row = src
                .query_one(
                    &format!("SELECT format('%s', {}) FROM typed WHERE id = 1", c.name),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(
                row.get::<_, Option<String>>(0).as_deref(),
                Some(s),
                "self-check of {}",
                c.name
            );
        }
    }
    src.batch_execute("COMMIT").await.unwrap();
}

/// The store's own JSON text, checked value by value, and seen through SQL on the json column.
/// The entries of `typed`.
async fn the_store_holds_every_value(store: &tokio_postgres::Client) -> Vec<Entry> {
    let e = table_entries(store, "public", "typed").await;
    let shape: Vec<(&str, i64)> = e
        .iter()
        .map(|x| (x.action.as_str(), x.key_i64("id")))
        .collect();
    assert_eq!(
        shape,
        [
            ("INSERT", 1),
            ("INSERT", 2),
            ("INSERT", 3),
            ("UPDATE", 1),
            ("DELETE", 3)
        ]
    );
    let after_update = after_update();
    check_image(
        "store: INSERT 1 after",
        e[0].after_text.as_deref().unwrap(),
        1,
        &[],
    );
    check_all_null(
        "store: INSERT 2 after",
        e[1].after_text.as_deref().unwrap(),
        2,
    );
    check_image(
        "store: INSERT 3 after",
        e[2].after_text.as_deref().unwrap(),
        3,
        &[],
    );
    check_image(
        "store: UPDATE 1 before",
        e[3].before_text.as_deref().unwrap(),
        1,
        &[],
    );
    check_image(
        "store: UPDATE 1 after",
        e[3].after_text.as_deref().unwrap(),
        1,
        &after_update,
    );
    assert_eq!(
        e[3].changed_columns,
        json!(["c_int4", "c_text"]),
        "NaN/NaN and null/null are unchanged"
    );
    check_image(
        "store: DELETE 3 before",
        e[4].before_text.as_deref().unwrap(),
        3,
        &[],
    );

    // The same seen through SQL on the json column.
    let row = store
        .query_one(
            "SELECT json_typeof(after->'c_numeric'), (after->'c_int8')::text, json_typeof(after->'c_json'), \
                    json_typeof(after->'c_jsonb_str'), json_typeof(after->'c_nan'), after->>'c_text' \
             FROM pgtrail.entries WHERE table_name = 'typed' AND action = 'INSERT' AND (primary_key->>'id')::int = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "string");
    assert_eq!(row.get::<_, String>(1), "9223372036854775807");
    assert_eq!(row.get::<_, String>(2), "object");
    assert_eq!(row.get::<_, String>(3), "string");
    assert_eq!(row.get::<_, String>(4), "null");
    assert_eq!(row.get::<_, String>(5), NASTY);

    e
}

/// The jsonl export, byte for byte the same values.
async fn the_export_holds_every_value(env: &TestEnv, e: &[Entry]) {
    let after_update = after_update();
    let lines = env.trail.export_jsonl(&["--table", "public.typed"]).await;
    assert_eq!(lines.len(), 5, "export --table public.typed");
    for (l, x) in lines.iter().zip(e) {
        assert_eq!(l.id(), x.id);
        assert_eq!(l.fields.keys(), EXPORT_FIELDS, "field order of {}", l.raw);
    }
    check_image(
        "export: INSERT 1 after",
        lines[0].fields.raw("after"),
        1,
        &[],
    );
    check_all_null("export: INSERT 2 after", lines[1].fields.raw("after"), 2);
    check_image(
        "export: UPDATE 1 before",
        lines[3].fields.raw("before"),
        1,
        &[],
    );
    check_image(
        "export: UPDATE 1 after",
        lines[3].fields.raw("after"),
        1,
        &after_update,
    );
    check_image(
        "export: DELETE 3 before",
        lines[4].fields.raw("before"),
        3,
        &[],
    );
    assert_eq!(lines[4].fields.raw("after"), "null");
    assert_eq!(lines[0].fields.raw("before"), "null");
    assert_eq!(
        lines[3].value["changed_columns"],
        json!(["c_int4", "c_text"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_survives_byte_for_byte() {
    let env = TestEnv::start().await;
    let src = env.source().await;
    create_typed(&src).await;
    env.setup().await;
    let mut daemon = env.spawn();

    insert_rows(&src).await;
    expectations_are_what_postgres_prints(&src).await;

    src.batch_execute(
        "UPDATE typed SET c_int4 = -1, c_text = 'changed' WHERE id = 1;
         DELETE FROM typed WHERE id = 3;",
    )
    .await
    .unwrap();
    env.sync().await;

    let store = env.store().await;
    let e = the_store_holds_every_value(&store).await;
    the_export_holds_every_value(&env, &e).await;

    assert_counts(&store, "public", "typed", Counts::new(3, 1, 1, 0)).await;
    assert_store_matches_source(&src, &store, "public", "typed").await;
    daemon.terminate().await;
}
