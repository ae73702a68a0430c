//! The log's filters, each alone and combined, over the API and on the page (rows, count, and
//! the links and form that keep them); and the plain context columns the migration fills for
//! entries stored before it, which the actor and IP filters and sorts read.

use chrono::{DateTime, Duration as TimeDelta, Utc};

use crate::harness::*;

/// A filter (a query string) and the positions in [`filter_data`] it must select.
type Case = (String, Vec<usize>);

/// Ten entries of five tables, with every context field set on some and none on others.
pub(crate) fn filter_data(now: DateTime<Utc>) -> Vec<Synth> {
    let d = |days: i64| now - TimeDelta::days(days);
    let mut data = vec![
        // 0
        Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"status":"new","note":"Deliver to Berlin"}"#)
            .at(d(9))
            .who(Some("alice"), Some("app_rw"))
            .from(Some("10.0.0.5"), Some("shop"), Some("web")),
        // 1
        Synth::new("public.orders", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1,"status":"new","note":"Deliver to Berlin"}"#)
            .after(r#"{"id":1,"status":"paid","note":"Deliver to Berlin"}"#)
            .changed(r#"["status"]"#)
            .at(d(5))
            .who(Some("bob"), Some("app_rw"))
            .from(Some("10.1.2.3"), Some("shop"), Some("api")),
        // 2
        Synth::new("public.orders", "DELETE")
            .pk(r#"{"id":2}"#)
            .before(r#"{"id":2,"status":"void","note":"100% off_sale"}"#)
            .at(d(3))
            .who(None, Some("admin"))
            .from(Some("192.168.1.9"), Some("psql"), None),
        // 3
        Synth::new("public.customers", "INSERT")
            .pk(r#"{"id":7}"#)
            .after(r#"{"id":7,"name":"Ada","status":"vip"}"#)
            .at(d(2))
            .who(Some("alice"), Some("app_ro"))
            .from(Some("2001:db8::1"), Some("crm"), Some("web")),
        // 4
        Synth::new("public.customers", "UPDATE")
            .pk(r#"{"id":7}"#)
            .before(r#"{"id":7,"name":"Ada","status":"vip"}"#)
            .after(r#"{"id":7,"name":"Ada Lovelace","status":"vip"}"#)
            .changed(r#"["name"]"#)
            .at(now - TimeDelta::minutes(30))
            .who(Some("carol"), Some("app_rw"))
            .from(None, Some("crm"), Some("batch")),
        // 5: composite key, no context at all
        Synth::new("sales.Order Items", "INSERT")
            .pk(r#"{"order_id":1,"line":2}"#)
            .after(r#"{"order_id":1,"line":2,"sku":"A-1"}"#)
            .at(now - TimeDelta::minutes(10)),
        // 6: a text key "5"
        Synth::new("public.tags", "INSERT")
            .pk(r#"{"code":"5"}"#)
            .after(r#"{"code":"5","label":"five"}"#)
            .at(now - TimeDelta::minutes(5)),
        // 7: an integer key 5
        Synth::new("public.orders", "INSERT")
            .pk(r#"{"id":5}"#)
            .after(r#"{"id":5,"status":"new","note":"status unknown"}"#)
            .at(now - TimeDelta::minutes(4))
            .who(None, Some("app_rw"))
            .from(Some("10.0.0.77"), Some("shop"), Some("web")),
        // 8
        Synth::new("public.orders", "TRUNCATE")
            .at(now - TimeDelta::minutes(3))
            .who(None, Some("admin")),
        // 9: a table name with a dot
        Synth::new("public.we.ird", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1,"v":"x"}"#)
            .at(now - TimeDelta::minutes(2)),
    ];
    // "public.we.ird" split at the first dot above: fix the table name.
    data[9].schema = "public".into();
    data[9].table = "we.ird".into();
    data
}

/// Filters by one field each: action, table, actor, role, IP, application, source, time.
fn field_cases(now: DateTime<Utc>) -> Vec<Case> {
    let d = |days: i64| now - TimeDelta::days(days);
    let fmt = |t: DateTime<Utc>| enc(&t.to_rfc3339());
    vec![
        ("".into(), (0..10).collect()),
        ("action=DELETE".into(), vec![2]),
        (
            "action=insert&action=DELETE".into(),
            vec![0, 2, 3, 5, 6, 7, 9],
        ),
        ("action=UPDATE,TRUNCATE".into(), vec![1, 4, 8]),
        // Only rare actions: read through the index entries_rare_action.
        ("action=TRUNCATE".into(), vec![8]),
        ("action=TRUNCATE,DDL&table=public.orders".into(), vec![8]),
        ("table=public.orders".into(), vec![0, 1, 2, 7, 8]),
        (
            "table=public.orders&table=public.customers".into(),
            vec![0, 1, 2, 3, 4, 7, 8],
        ),
        (format!("table={}", enc("sales.\"Order Items\"")), vec![5]),
        (format!("table={}", enc("public.\"we.ird\"")), vec![9]),
        // Actor: the application actor, else the database role.
        ("actor=alice".into(), vec![0, 3]),
        ("actor=admin".into(), vec![2, 8]),
        ("actor=app_rw".into(), vec![7]),
        ("role=app_rw".into(), vec![0, 1, 4, 7]),
        ("ip=10.0.0.5".into(), vec![0]),
        (format!("ip={}", enc("10.0.0.0/8")), vec![0, 1, 7]),
        (format!("ip={}", enc("10.0.0.0/24")), vec![0, 7]),
        (format!("ip={}", enc("2001:db8::/32")), vec![3]),
        ("ip=192.168.1.9".into(), vec![2]),
        ("app=crm".into(), vec![3, 4]),
        ("source=web".into(), vec![0, 3, 7]),
        (format!("from={}", fmt(d(4))), vec![2, 3, 4, 5, 6, 7, 8, 9]),
        (format!("to={}", fmt(d(4))), vec![0, 1]),
        (
            format!("from={}&to={}", fmt(d(6)), fmt(d(1))),
            vec![1, 2, 3],
        ),
        ("last=1h".into(), vec![4, 5, 6, 7, 8, 9]),
        ("last=15m".into(), vec![5, 6, 7, 8, 9]),
        ("last=7d".into(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        // A date alone as the upper bound means the end of that day.
        (
            format!("to={}", (now + TimeDelta::days(1)).format("%Y-%m-%d")),
            (0..10).collect(),
        ),
    ]
}

/// Filters by primary key, by free text, and several at once.
fn key_text_and_combined_cases() -> Vec<Case> {
    vec![
        // Primary key: a value in any key column, or the key as JSON; with one table, by row_key.
        ("pk=5".into(), vec![6, 7]),
        ("pk=5&table=public.orders".into(), vec![7]),
        ("pk=5&table=public.tags".into(), vec![6]),
        ("pk=1&table=public.orders".into(), vec![0, 1]),
        (format!("pk={}", enc(r#"{"id": 1}"#)), vec![0, 1, 9]),
        (
            format!("pk={}&table=public.orders", enc(r#"{"id": 1}"#)),
            vec![0, 1],
        ),
        (
            format!("pk=2&table={}", enc("sales.\"Order Items\"")),
            vec![5],
        ),
        (
            format!(
                "pk={}&table={}",
                enc(r#"{"order_id":1,"line":2}"#),
                enc("sales.\"Order Items\"")
            ),
            vec![5],
        ),
        // Free text: values only (not column names), case-insensitive, wildcards literal.
        ("q=berlin".into(), vec![0, 1]),
        ("q=status".into(), vec![7]),
        (format!("q={}", enc("100%")), vec![2]),
        (format!("q={}", enc("100_")), vec![]),
        (format!("q={}", enc("1%0")), vec![]),
        (format!("q={}", enc("off_s")), vec![2]),
        ("q=lovelace".into(), vec![4]),
        // Combinations.
        ("action=INSERT&actor=alice&source=web".into(), vec![0, 3]),
        (
            format!("table=public.orders&ip={}&last=7d", enc("10.0.0.0/8")),
            vec![1, 7],
        ),
        ("role=app_rw&app=shop&action=UPDATE".into(), vec![1]),
        ("q=ada&table=public.customers&action=UPDATE".into(), vec![4]),
        ("actor=nobody".into(), vec![]),
    ]
}

/// The API and the page select exactly `which`, newest first, and the page counts them.
async fn check_filter(web: &Web, ids: &[i64], query: &str, which: &[usize]) {
    let want = sorted_desc(pick(ids, which));
    assert_eq!(web.ids(query).await, want, "API filter {query:?}");
    let html = web.page(&format!("/?{query}")).await;
    assert_eq!(row_ids(&html), want, "page filter {query:?}");
    let n = which.len();
    let expected_count = if n == 1 {
        "1 entry".to_string()
    } else {
        format!("{n} entries")
    };
    assert_eq!(count_text(&html), expected_count, "count for {query:?}");
}

/// The page keeps the filters in its sort and cell links, and shows them back in its form.
async fn filters_stay_in_links_and_form(web: &Web) {
    // The page keeps the filters in its links: a sort header link still filters.
    let html = web.page("/?table=public.orders&actor=alice").await;
    assert!(
        unescape(&html).contains("/?table=public.orders&actor=alice&sort=actor&dir=asc"),
        "sort links keep the filters"
    );
    // Clicking a cell narrows the current view.
    assert!(
        unescape(&html).contains("href=\"/?table=public.orders&actor=alice&ip=10.0.0.5\""),
        "IP cell narrows the view"
    );
    // The form shows the filter values back.
    let html = web
        .page("/?actor=alice&action=DELETE&table=public.orders&last=24h")
        .await;
    assert!(html.contains("name=\"actor\" value=\"alice\""));
    assert!(html.contains("value=\"DELETE\" checked"));
    assert!(html.contains("<input type=\"hidden\" name=\"table\" value=\"public.orders\">"));
    assert!(html.contains("<option value=\"24h\" selected>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_filters_each_and_combined() {
    let (_env, store, web) = store_and_web().await;
    let now = Utc::now();
    let ids = store_entries(&store, &filter_data(now)).await;
    let mut cases = field_cases(now);
    cases.extend(key_text_and_combined_cases());
    for (query, which) in &cases {
        check_filter(&web, &ids, query, which).await;
    }
    filters_stay_in_links_and_form(&web).await;
    // Stored last but committed two months before the rest, as a source catching up stores it:
    // the time filters find it by its commit time, out of id order and in an older partition.
    let d = |days: i64| now - TimeDelta::days(days);
    let fmt = |t: DateTime<Utc>| enc(&t.to_rfc3339());
    let late = Synth::new("public.orders", "INSERT")
        .pk(r#"{"id":9}"#)
        .after(r#"{"id":9}"#)
        .at(d(60));
    let mut ids = ids;
    ids.extend(store_entries(&store, &[late]).await);
    let late_cases = [
        (format!("to={}", fmt(d(4))), vec![0, 1, 10]),
        (format!("from={}&to={}", fmt(d(70)), fmt(d(50))), vec![10]),
        (format!("from={}", fmt(d(4))), vec![2, 3, 4, 5, 6, 7, 8, 9]),
    ];
    for (query, which) in &late_cases {
        check_filter(&web, &ids, query, which).await;
    }
    web.assert_quiet();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_context_columns_of_existing_entries_are_filled_by_the_migration() {
    let env = TestEnv::start().await;
    env.cluster.create_db("pgtrail").await;
    let store = env.store().await;
    // The store as migration 2 left it: no plain context columns.
    old_store_schema(&store, 3).await;
    let contexts: [(&str, Option<&str>, Option<&str>); 5] = [
        (
            r#"{"db_user":"app","client_addr":"10.0.0.5","actor":"alice"}"#,
            Some("alice"),
            Some("10.0.0.5"),
        ),
        (
            r#"{"db_user":"app","client_addr":"2001:db8::1","actor":null}"#,
            Some("app"),
            Some("2001:db8::1"),
        ),
        (
            r#"{"db_user":null,"client_addr":null,"actor":null}"#,
            None,
            None,
        ),
        (
            r#"{"db_user":"etl","client_addr":"not-an-address"}"#,
            Some("etl"),
            None,
        ),
        ("{}", None, None),
    ];
    let mut ids = Vec::new();
    for (i, (context, _, _)) in contexts.iter().enumerate() {
        let id: i64 = store
            .query_one(
                "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, after, context) VALUES (now(), $1::bigint, '0/1', 'public', 't', 'INSERT', \
                 json_build_object('id', $1::bigint), json_build_object('id', $1::bigint), $2::text::json) RETURNING id",
                &[&(i as i64 + 1), context],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }

    // setup applies what the store lacks: migration 3 fills the columns (and 16 moves the
    // entries into time partitions, the columns with them).
    env.setup().await;
    let got: Vec<(Option<String>, Option<String>)> = query_pairs(
        &store,
        "SELECT actor, host(client_addr) FROM pgtrail.entries ORDER BY id",
        &[],
    )
    .await;
    let expected: Vec<(Option<String>, Option<String>)> = contexts
        .iter()
        .map(|(_, a, ip)| (a.map(str::to_owned), ip.map(str::to_owned)))
        .collect();
    assert_eq!(got, expected);
    let generated: i64 = query_value(
        &store,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'pgtrail' \
         AND table_name = 'entries' AND column_name IN ('actor', 'client_addr') AND is_generated = 'NEVER'",
        &[],
    )
    .await;
    assert_eq!(generated, 2, "plain columns, filled by pgtrail from now on");

    // The web view finds the old entries through them.
    let web = Web::start(&env).await;
    assert_eq!(web.ids("actor=alice").await, vec![ids[0]]);
    assert_eq!(web.ids("actor=app").await, vec![ids[1]]);
    assert_eq!(web.ids("actor=etl").await, vec![ids[3]]);
    assert_eq!(web.ids("ip=10.0.0.5").await, vec![ids[0]]);
    assert_eq!(
        web.ids(&format!("ip={}", enc("2001:db8::1"))).await,
        vec![ids[1]]
    );
    assert_eq!(
        web.ids(&format!("ip={}", enc("2001:db8::/32"))).await,
        vec![ids[1]]
    );
    // Sorted by actor: none first (as the empty text), then A to Z; by IP likewise.
    assert_eq!(
        web.walk("sort=actor&dir=asc", 2).await,
        pick(&ids, &[2, 4, 0, 1, 3])
    );
    assert_eq!(
        web.walk("sort=ip&dir=desc", 2).await,
        pick(&ids, &[1, 0, 4, 3, 2])
    );
}
