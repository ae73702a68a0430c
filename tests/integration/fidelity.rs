//! Full-fidelity rows: an UPDATE that leaves a large TOASTed value untouched still shows it in
//! `after` (taken from the before image) and not as changed; domains, enums, arrays of a
//! composite type and column names that need quoting survive; `changed_columns` lists exactly the
//! columns whose values differ.

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toast_domains_enums_composites_and_quoted_columns() {
    let env = TestEnv::start().await;
    let src = env.source().await;
    src.batch_execute(
        r#"CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
           CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');
           CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
           CREATE TYPE point3 AS (x int, y int, label text);
           CREATE TABLE doc (
               id int PRIMARY KEY,
               body text,
               "Weird ""Name"".x" int,
               qty positive_int,
               owner email,
               feeling mood,
               points point3[]
           );
           ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;"#,
    )
    .await
    .unwrap();
    env.setup().await;
    let mut daemon = env.spawn();

    // A body far over the TOAST threshold, stored out of line and not compressed.
    src.batch_execute(
        r#"INSERT INTO doc VALUES (1, repeat('long text ', 5000), 1, 3, 'a@b.c', 'ok',
                                  ARRAY[ROW(1, 2, 'p "q"')::point3, ROW(3, 4, NULL)::point3]);
           UPDATE doc SET "Weird ""Name"".x" = 2, feeling = 'happy' WHERE id = 1;
           UPDATE doc SET qty = qty WHERE id = 1;
           UPDATE doc SET body = body || '!' WHERE id = 1;"#,
    )
    .await
    .unwrap();
    env.sync().await;

    let store = env.store().await;
    let e = table_entries(&store, "public", "doc").await;
    assert_eq!(e.len(), 4);
    let body: String = src
        .query_one("SELECT repeat('long text ', 5000)", &[])
        .await
        .unwrap()
        .get(0);

    let insert = &e[0].after;
    assert_eq!(insert["body"], json!(body));
    assert_eq!(
        insert["Weird \"Name\".x"],
        json!(1),
        "a column name that needs quoting"
    );
    assert_eq!(
        insert["qty"],
        json!("3"),
        "a domain over an integer arrives from wal2json as a string"
    );
    assert_eq!(insert["owner"], json!("a@b.c"));
    assert_eq!(insert["feeling"], json!("ok"));
    assert_eq!(
        insert["points"],
        json!(r#"{"(1,2,\"p \"\"q\"\"\")","(3,4,)"}"#),
        "array of a composite type, as PostgreSQL prints it"
    );

    // The TOASTed body was not touched: wal2json leaves it out of the new row, pgtrail fills it in.
    let touch = &e[1];
    assert_eq!(
        touch.after["body"],
        json!(body),
        "unchanged TOASTed value taken from the before image"
    );
    assert_eq!(
        touch.changed_columns,
        json!(["Weird \"Name\".x", "feeling"])
    );
    assert_eq!(touch.after["feeling"], json!("happy"));

    assert_eq!(
        e[2].changed_columns,
        json!([]),
        "an UPDATE that changes nothing lists no column"
    );
    assert_eq!(e[2].after["body"], json!(body));

    assert_eq!(e[3].changed_columns, json!(["body"]));
    assert_eq!(e[3].after["body"], json!(format!("{body}!")));
    assert_eq!(e[3].before["body"], json!(body));

    assert_store_matches_source(&src, &store, "public", "doc").await;
    daemon.terminate().await;
}
