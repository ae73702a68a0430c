//! One entry as the web view shows it: View Difference for every action (added, changed with
//! long text and JSON diffed by line and word, unknown without the old row, removed), the
//! revert SQL, a row's history, a transaction, a schema change; and hostile values shown as
//! text everywhere.

use serde_json::Value;

use crate::harness::*;

/// A value that would run as script if a page let it through.
const HOSTILE: &str = "<script>alert(1)</script>";

/// `s` as a JSON string.
fn esc(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The entries of `public.docs` (0 to 4: every action on one row), two of a hostile table
/// (5, 6) and a schema change (7).
fn docs_entries() -> Vec<Synth> {
    let hostile = HOSTILE;
    let long_old = (1..=40)
        .map(|i| format!("line {i} of the contract"))
        .collect::<Vec<_>>()
        .join("\n");
    let long_new = long_old.replace("line 17 of the contract", "line 17 of the amended contract");
    let doc_old = r#"{"a":1,"nested":{"keep":[1,2,3],"flag":false},"z":"same"}"#;
    let doc_new = r#"{"a":1,"nested":{"keep":[1,2,3],"flag":true},"z":"same"}"#;
    let mut data = vec![
        // 0 INSERT
        Synth::new("public.docs", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(&format!(
                r#"{{"id":1,"title":"t","body":{},"doc":{doc_old},"price":"10.50","n":null}}"#,
                esc(&long_old)
            ))
            .xid(501),
        // 1 UPDATE of long text and JSON, REPLICA IDENTITY FULL
        Synth::new("public.docs", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(&format!(
                r#"{{"id":1,"title":"t","body":{},"doc":{doc_old},"price":"10.50","n":null}}"#,
                esc(&long_old)
            ))
            .after(&format!(
                r#"{{"id":1,"title":"t2","body":{},"doc":{doc_new},"price":"10.50","n":null}}"#,
                esc(&long_new)
            ))
            .changed(r#"["title","body","doc"]"#)
            .xid(502)
            .who(Some("alice"), Some("app_rw"))
            .from(Some("10.0.0.5"), Some("cms"), Some("web"))
            .remarks("ticket 42"),
        // 2 UPDATE under REPLICA IDENTITY DEFAULT: only the key before
        Synth::new("public.docs", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1}"#)
            .after(r#"{"id":1,"title":"t3","body":"b","doc":null,"price":"1","n":2}"#)
            .xid(503),
        // 3 DELETE
        Synth::new("public.docs", "DELETE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1,"title":"it's \\ here","body":"b","doc":null,"price":"1","n":2}"#)
            .xid(504),
        // 4 TRUNCATE
        Synth::new("public.docs", "TRUNCATE").xid(504),
        // 5 hostile everything
        Synth::new("public.x", "INSERT")
            .pk(&format!(r#"{{"id":{}}}"#, esc(hostile)))
            .after(&format!(
                r#"{{"id":{},{}:{},"q":"\" onmouseover=\"alert(2)"}}"#,
                esc(hostile),
                esc(hostile),
                esc(hostile)
            ))
            .who(Some(hostile), Some("<b>role</b>"))
            .from(Some("10.0.0.1"), Some(hostile), Some(hostile))
            .remarks(hostile)
            .xid(505),
        // 6 UPDATE with a hostile before and after
        Synth::new("public.x", "UPDATE")
            .pk(&format!(r#"{{"id":{}}}"#, esc(hostile)))
            .before(&format!(
                r#"{{"id":{},"v":{}}}"#,
                esc(hostile),
                esc(&format!("{hostile} old"))
            ))
            .after(&format!(
                r#"{{"id":{},"v":{}}}"#,
                esc(hostile),
                esc(&format!("{hostile} new"))
            ))
            .changed(r#"["v"]"#)
            .xid(506),
    ];
    data[5].table = "<script>t</script>".into();
    data[6].table = "<script>t</script>".into();
    data.push(
    Synth::new("public.docs", "DDL")
        .after(r#"{"command_tag":"ALTER TABLE","object_type":"table","object_identity":"public.docs","sql":"ALTER TABLE docs ADD COLUMN extra int"}"#)
        .xid(507),
);
    data
}

/// DDL: the command in the log, its detail on the entry page, no revert.
async fn ddl_entry(web: &Web, ids: &[i64]) {
    assert_eq!(web.ids("action=DDL").await, vec![ids[7]]);
    let html = web.page("/?action=ddl").await;
    assert!(html.contains(">ALTER TABLE public.docs<"), "{html}");
    let html = web.page(&format!("/entries/{}", ids[7])).await;
    assert!(
        html.contains("A schema change")
            && html.contains("ALTER TABLE docs ADD COLUMN extra int")
            && html.contains("No revert:")
    );
}

/// INSERT: every value added.
async fn insert_diff(web: &Web, ids: &[i64]) {
    let html = web.page(&format!("/entries/{}", ids[0])).await;
    let rows = diff_rows(&html);
    assert_eq!(
        rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["id", "title", "body", "doc", "price", "n"]
    );
    assert!(rows.iter().all(|r| r.0 == "added"), "{rows:?}");
    assert!(!html.contains("<details class=\"unchanged\">"));
    assert!(unescape(&html).contains("DELETE FROM \"public\".\"docs\"\nWHERE \"id\" = '1';"));
}

/// UPDATE: changed first and marked, unchanged folded, long text and JSON diffed by line and word.
async fn update_diff(web: &Web, ids: &[i64]) {
    let html = web.page(&format!("/entries/{}", ids[1])).await;
    let rows = diff_rows(&html);
    let names: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        names,
        ["title", "body", "doc", "id", "price", "n"],
        "changed columns first"
    );
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [
            "changed",
            "changed",
            "changed",
            "unchanged",
            "unchanged",
            "unchanged"
        ]
    );
    let details = html
        .find("<details class=\"unchanged\">")
        .expect("unchanged columns are collapsible");
    assert!(
        html[details..].contains("class=\"name\">id"),
        "unchanged columns are inside the details"
    );
    assert!(html.contains("3 unchanged columns"));
    let text = unescape(&html);
    assert!(
        text.contains("<mark>amended </mark>"),
        "the changed word is marked"
    );
    let columns_part = &text[..text.find("<section class=\"revert\"").unwrap()];
    assert!(
        !columns_part.contains("line 30 of the contract"),
        "unchanged stretches of long text are cut"
    );
    assert!(
        text.contains("\"flag\": <mark>false</mark>")
            && text.contains("\"flag\": <mark>true</mark>"),
        "JSON is pretty-printed and the key diffed:\n{columns_part}"
    );
    // The short title is shown before/after; body and doc get one changed line each.
    assert_eq!(html.matches("class=\"dl del\"").count(), 2);
    assert_eq!(html.matches("class=\"dl ins\"").count(), 2);
    for fact in [
        "alice",
        "app_rw",
        "10.0.0.5",
        "cms",
        "web",
        "ticket 42",
        "502",
    ] {
        assert!(text.contains(fact), "facts show {fact}");
    }
    // Links name the source database (the store's first source, named after its database).
    assert!(text.contains("href=\"/transactions/502?db=app\""));
    assert!(text.contains("href=\"/history?table=public.docs&pk=%7B%22id%22%3A1%7D&db=app\""));
    assert!(text.contains(
        "UPDATE \"public\".\"docs\"\nSET \"title\" = 't',\n    \"body\" = 'line 1 of the contract"
    ));
    assert!(text.contains("\"doc\" = '{\"a\":1,\"nested\":{\"keep\":[1,2,3],\"flag\":false},\"z\":\"same\"}'\nWHERE \"id\" = '1';"));
    let api = web.api(&format!("/api/v1/entries/{}", ids[1])).await;
    assert_eq!(api["entry"]["id"], ids[1]);
    assert_eq!(api["diff"][0]["column"], "title");
    assert_eq!(api["diff"][0]["change"], "changed");
    assert_eq!(api["diff"][0]["before"], "t");
    assert_eq!(api["diff"][0]["after"], "t2");
    assert_eq!(api["diff"][3]["change"], "unchanged");
    assert_eq!(
        api["diff"][5]["before"],
        Value::Null,
        "a NULL value is JSON null"
    );
    assert!(api["revert_sql"]
        .as_str()
        .unwrap()
        .starts_with("-- Reverts entry"));
    assert!(api["revert_unavailable"].is_null());
}

/// UPDATE without the old row: said so, and no revert.
async fn update_without_old_row(web: &Web, ids: &[i64]) {
    let html = web.page(&format!("/entries/{}", ids[2])).await;
    let rows = diff_rows(&html);
    assert!(
        rows[..5].iter().all(|r| r.0 == "unknown") && rows[5] == ("unchanged".into(), "id".into()),
        "{rows:?}"
    );
    assert!(html.contains("REPLICA IDENTITY is not FULL"));
    assert!(html.contains("No revert:"));
    assert_eq!(
        web.api(&format!("/api/v1/entries/{}", ids[2])).await["revert_sql"],
        Value::Null
    );
}

/// DELETE: every value removed, and a revert; TRUNCATE: a note and no revert.
async fn delete_and_truncate(web: &Web, ids: &[i64]) {
    // DELETE: every value removed; revert is an INSERT with quotes and backslashes right.
    let html = web.page(&format!("/entries/{}", ids[3])).await;
    assert!(diff_rows(&html).iter().all(|r| r.0 == "removed"));
    assert!(unescape(&html).contains(
        "INSERT INTO \"public\".\"docs\" (\"id\", \"title\", \"body\", \"doc\", \"price\", \"n\") OVERRIDING SYSTEM VALUE\nVALUES ('1', E'it''s \\\\ here', 'b', NULL, '1', '2');"
    ));

    // TRUNCATE: a note and no revert.
    let html = web.page(&format!("/entries/{}", ids[4])).await;
    assert!(html.contains("TRUNCATE removed every row"));
    assert!(diff_rows(&html).is_empty());
}

/// History: every entry of the row, oldest first, each diff in place; a transaction's entries.
async fn history_and_transaction(web: &Web, ids: &[i64]) {
    // History: every entry of the row, oldest first, each diff in place.
    let html = web
        .page("/history?table=public.docs&pk=%7B%22id%22%3A1%7D")
        .await;
    let items: Vec<i64> = html
        .split("<li class=\"hist-item\" id=\"e")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect();
    assert_eq!(items, ids[..4].to_vec());
    for item in html.split("<li class=\"hist-item\"").skip(1) {
        assert!(
            item.contains("<table class=\"columns\">"),
            "each entry has its diff in place"
        );
    }
    // The plain value works too for a one-column key, and whitespace in JSON does not matter.
    for pk in ["1", "%7B%20%22id%22%20%3A%201%20%7D"] {
        let again = web
            .page(&format!("/history?table=public.docs&pk={pk}"))
            .await;
        assert_eq!(
            again.matches("<li class=\"hist-item\"").count(),
            4,
            "pk={pk}"
        );
    }

    // Transaction: every entry with that xid.
    let html = web.page("/transactions/504").await;
    assert_eq!(row_ids(&html), vec![ids[3], ids[4]]);
    assert!(html.contains("2 entries committed together"));
}

/// Hostile values are text everywhere: the log, the diff, the history, the transaction, the API.
async fn hostile_values_are_text(web: &Web, ids: &[i64]) {
    let hostile = HOSTILE;
    let hist = format!(
        "/history?table={}&pk={}",
        enc("public.<script>t</script>"),
        enc(&format!(r#"{{"id":{}}}"#, esc(hostile)))
    );
    for path in [
        "/".to_string(),
        format!("/entries/{}", ids[5]),
        format!("/entries/{}", ids[6]),
        hist,
        "/transactions/505".into(),
        "/?actor=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
    ] {
        let html = web.page(&path).await;
        assert!(
            !html.contains("<script>alert") && !html.contains("<script>t<"),
            "{path}: a raw <script> from the data:\n{html}"
        );
        assert!(
            !html.contains("<b>role"),
            "{path}: raw markup from the data"
        );
        assert!(
            !html.contains("\" onmouseover=\"alert"),
            "{path}: an attribute broke out"
        );
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{path}: the value is shown, escaped"
        );
    }
    let html = web.page(&format!("/entries/{}", ids[5])).await;
    assert!(
        unescape(&html).contains("<script>alert(1)</script>"),
        "the hostile value is shown as text"
    );
    let api = web.api(&format!("/api/v1/entries/{}", ids[5])).await;
    assert_eq!(api["entry"]["context"]["actor"], hostile);
    assert_eq!(api["entry"]["table"], "<script>t</script>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_difference_history_transaction_and_escaping() {
    let (_env, store, web) = store_and_web().await;
    let ids = store_entries(&store, &docs_entries()).await;
    ddl_entry(&web, &ids).await;
    insert_diff(&web, &ids).await;
    update_diff(&web, &ids).await;
    update_without_old_row(&web, &ids).await;
    delete_and_truncate(&web, &ids).await;
    history_and_transaction(&web, &ids).await;
    hostile_values_are_text(&web, &ids).await;
}
