//! View Difference on real captures of json and jsonb columns: the changes are listed by key
//! path (nested keys, array elements grown and shrunk, keys with dots or markup quoted and
//! escaped), the text diff folded under them compares values, not lines with their commas, and
//! a document with thousands of changes lists the bounded first part and says what it leaves out.

use crate::harness::*;

/// Each `<li class="jp KIND"><code class="path">PATH</code>` of a page, as `PATH KIND`, unescaped.
fn path_items(html: &str) -> Vec<String> {
    html.split("<li class=\"jp ")
        .skip(1)
        .map(|s| {
            let kind = &s[..s.find('"').unwrap()];
            let at = s.find("<code class=\"path\">").unwrap() + 19;
            let path = &s[at..at + s[at..].find("</code>").unwrap()];
            format!("{} {kind}", unescape(path))
        })
        .collect()
}

/// The `<div class="dl TAG">` lines of a page's text diffs, as `TAG text`, unescaped.
fn diff_lines(html: &str) -> Vec<String> {
    html.split("<div class=\"dl ")
        .skip(1)
        .map(|s| {
            let tag = &s[..s.find('"').unwrap()];
            let line = &s[..s.find("</div>").unwrap()];
            // After the sign's span, up to the line's closing span; marks left out.
            let text = match line.find("aria-hidden=\"true\">") {
                Some(at) => {
                    let rest = &line[at..];
                    let start = rest.find("</span>").unwrap() + 7;
                    rest[start..rest.len() - 7]
                        .replace("<mark>", "")
                        .replace("</mark>", "")
                }
                None => String::new(),
            };
            format!("{tag} {}", unescape(&text).trim())
        })
        .collect()
}

const BEFORE: &str = r#"{"tier": "gold", "tags": ["new", "early"], "address": {"city": "Lyon", "zip": "69001"},
    "a.b": 1, "old": true, "<b>k</b>": "x"}"#;
const AFTER: &str = r#"{"tier": "platinum", "tags": ["new", "early", "vip"], "address": {"city": "Paris", "zip": "69001"},
    "a.b": 2, "<b>k</b>": "<script>alert(1)</script>", "score": 7}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_are_compared_by_key_path() {
    let (env, src, _daemon) = TestEnv::capturing(
        "CREATE TABLE customers (id int PRIMARY KEY, name text, profile jsonb, settings json);
         ALTER TABLE customers REPLICA IDENTITY FULL;",
    )
    .await;
    src.execute(
        "INSERT INTO customers VALUES (1, 'Ada', $1::text::jsonb, '{\"theme\": \"dark\", \"list\": [1, 2, 3]}')",
        &[&BEFORE],
    )
    .await
    .unwrap();
    src.execute(
        "UPDATE customers SET profile = $1::text::jsonb, settings = '{\"theme\": \"dark\", \"list\": [1, 3]}' WHERE id = 1",
        &[&AFTER],
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    let stored = table_entries(&store, "public", "customers").await;
    assert_eq!(
        stored.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["INSERT", "UPDATE"]
    );
    // The store holds the documents the source wrote, nested (jsonb normalised, as PostgreSQL keeps it).
    let source_doc: serde_json::Value = serde_json::from_str(AFTER).unwrap();
    assert_eq!(stored[1].after["profile"], source_doc);
    assert_eq!(
        stored[1].before["profile"],
        serde_json::from_str::<serde_json::Value>(BEFORE).unwrap()
    );

    let web = Web::start(&env).await;
    let html = web.page(&format!("/entries/{}", stored[1].id)).await;
    assert_eq!(
        path_items(&html),
        [
            "profile.\"<b>k</b>\" changed",
            "profile.\"a.b\" changed",
            "profile.address.city changed",
            "profile.old removed",
            "profile.score added",
            "profile.tags[2] added",
            "profile.tier changed",
            "settings.list[1] removed",
        ],
        "every difference by its key path, and nothing else"
    );
    assert!(
        !html.contains("<script>alert") && !html.contains("<b>k</b>"),
        "keys and values are escaped"
    );
    let text = unescape(&html);
    assert!(text.contains(
        r#"<code class="v before">"Lyon"</code> <span aria-label="becomes">→</span> <code class="v after">"Paris"</code>"#
    ));
    // The text diff is there, folded, and compares values: "early" gained a comma but is equal.
    assert!(html.contains("<details class=\"as-text\"><summary>The documents as text</summary>"));
    let lines = diff_lines(&html);
    assert!(lines.contains(&"eq \"early\",".to_owned()), "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"early\"") && !l.starts_with("eq")),
        "\"early\" → \"early\", is not a change: {lines:#?}"
    );
    assert!(lines.contains(&"ins \"vip\"".to_owned()), "{lines:#?}");
    // The settings array shrank: only its removed element is a change.
    assert!(
        lines.contains(&"del 2,".to_owned()) && lines.contains(&"eq 3".to_owned()),
        "{lines:#?}"
    );
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_with_thousands_of_changes_is_listed_in_part() {
    let (env, src, _daemon) = TestEnv::capturing(
        "CREATE TABLE docs (id int PRIMARY KEY, body jsonb); ALTER TABLE docs REPLICA IDENTITY FULL;",
    )
    .await;
    src.batch_execute(
        "INSERT INTO docs SELECT 1, jsonb_object_agg('k' || lpad(i::text, 5, '0'), 1) FROM generate_series(1, 5000) i;
         UPDATE docs SET body = (SELECT jsonb_object_agg('k' || lpad(i::text, 5, '0'), 2) FROM generate_series(1, 5000) i);",
    )
    .await
    .unwrap();
    env.sync().await;
    let store = env.store().await;
    let stored = table_entries(&store, "public", "docs").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].after["body"]["k05000"], 2);
    assert_eq!(stored[1].before["body"].as_object().unwrap().len(), 5000);

    let web = Web::start(&env).await;
    let html = web.page(&format!("/entries/{}", stored[1].id)).await;
    let items = path_items(&html);
    assert_eq!(items.len(), 200, "the first 200 differences are listed");
    assert_eq!(items[0], "body.k00001 changed");
    assert_eq!(items[199], "body.k00200 changed");
    assert!(
        html.contains("4800 more differences are not listed (the first 200 are)."),
        "and the page says how many it leaves out"
    );
}
