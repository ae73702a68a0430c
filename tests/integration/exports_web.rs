//! `GET /export`: the log's filters plus a format, streamed as an attachment. A download is the
//! same bytes as `pgtrail export` with the same filters, parsed back and compared with the store;
//! bad filters are the log page's 400s; the log page's Export form carries the current filters;
//! every download is recorded as an EVENT with the client's address, also one the client
//! abandons part way; at most four run at once; with recipients configured downloads are age files, and with
//! `require_encryption` a plain one cannot be had.

use std::fs;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_downloads_match_the_cli_and_are_recorded() {
    let env = TestEnv::start().await;
    let store = capture_hostile(&env).await;
    let web = Web::start_extra(&env, "").await;
    let t_only = "schema_name = 'public' AND table_name = 't'";
    let want = rows_where(&store, t_only).await;
    assert!(want.len() >= 6);

    for (format, ct) in [
        ("csv", "text/csv; charset=utf-8"),
        ("jsonl", "application/x-ndjson; charset=utf-8"),
        ("cef", "text/plain; charset=utf-8"),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ] {
        let events_before = export_events(&store).await.len();
        let (status, content_type, disposition, body) =
            download(&web.url(&format!("/export?table=public.t&format={format}"))).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(content_type, ct);
        assert!(
            disposition.starts_with("attachment; filename=\"pgtrail-export-")
                && disposition.ends_with(&format!(".{format}\"")),
            "{disposition}"
        );
        let cli_out = env.trail.dir().join(format!("cli.{format}"));
        env.trail
            .export_to(format, &cli_out, &["--table", "public.t"])
            .await
            .assert_success();
        let cli = fs::read(&cli_out).unwrap();
        check_export(format, &body, &want, false);
        if format == "xlsx" {
            // The workbook carries its creation time; the content is what must agree.
            check_xlsx(&cli, &want);
        } else {
            assert_eq!(body, cli, "the download is the CLI's output, byte for byte");
        }
        let events = export_events(&store).await;
        assert_eq!(
            events.len(),
            events_before + 2,
            "one event for the download, one for the CLI"
        );
        let ev = &events[events_before];
        assert_export_event(
            ev,
            format,
            json!({"table": ["public.t"]}),
            want.len(),
            false,
            true,
        );
        assert_eq!(ev.context_of("client_addr").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            ev.context_of("application_name").as_deref(),
            Some("pgtrail web")
        );
        assert_eq!(
            ev.context_of("actor").as_deref(),
            Some("anonymous"),
            "auth = \"none\": the actor is anonymous"
        );
        assert!(ev.json("details")["destination"]
            .as_str()
            .unwrap()
            .starts_with("download pgtrail-export-"));
        assert_eq!(
            events[events_before + 1]
                .context_of("application_name")
                .as_deref(),
            Some("pgtrail cli")
        );
    }

    // CSV with a BOM, and the filters the page uses.
    let want_upd = rows_where(&store, &format!("{t_only} AND action = 'UPDATE'")).await;
    let (status, _, _, body) =
        download(&web.url("/export?table=public.t&action=UPDATE&format=csv&bom=1&last=24h")).await;
    assert_eq!(status, StatusCode::OK);
    check_csv(&body, &want_upd, true);
    assert_export_event(
        export_events(&store).await.last().unwrap(),
        "csv",
        json!({"action": ["UPDATE"], "table": ["public.t"], "last": "24h"}),
        want_upd.len(),
        false,
        true,
    );

    // Bad input: the log page's 400s, and nothing exported or recorded.
    let events_before = export_events(&store).await.len();
    for (query, needle) in [
        ("format=csv&from=yesterday", "from"),
        ("format=pdf", "pdf"),
        ("table=public.t", "format"),
        ("format=csv&ip=10.0.0.0/33", "prefix"),
        ("format=jsonl&bom=1", "csv only"),
        ("format=csv&cursor=x", "cursor"),
        ("format=csv&colour=red", "unknown parameter"),
    ] {
        let (status, _, _, body) = download(&web.url(&format!("/export?{query}"))).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        assert!(text.contains(needle), "{query}: {text}");
    }
    assert_eq!(export_events(&store).await.len(), events_before);

    // The log page offers the export of what it shows.
    let (status, _, _, page) =
        download(&web.url("/?table=public.t&action=UPDATE&actor=al%7Cice")).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    let form = &page[page.find("action=\"/export\"").expect("an export form")..];
    let form = &form[..form.find("</form>").unwrap()];
    for hidden in [
        r#"name="action" value="UPDATE""#,
        r#"name="table" value="public.t""#,
        r#"name="actor" value="al|ice""#,
    ] {
        assert!(form.contains(hidden), "{hidden} in {form}");
    }
    assert!(form.contains(r#"name="format""#) && form.contains(r#"value="xlsx""#));
}

/// How many of the store's statements from a web export the server cancelled, from its log.
fn cancelled_exports(env: &TestEnv) -> usize {
    env.cluster
        .log_tail(1_000_000)
        .lines()
        .filter(|l| {
            l.contains("pgtrail web export")
                && l.contains("canceling statement due to user request")
        })
        .count()
}

/// Waits until no store backend of a web export runs a statement.
async fn wait_no_export_query(store: &tokio_postgres::Client) {
    wait_until(
        "the export queries are gone from pg_stat_activity",
        Duration::from_secs(10),
        || async {
            store
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'pgtrail web export' AND state <> 'idle'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
        },
    )
    .await;
}

/// The export events once there are `n`, waiting for them a bounded time; never more.
async fn wait_export_events(store: &tokio_postgres::Client, n: usize) -> Vec<Row> {
    let started = Instant::now();
    loop {
        let events = export_events(store).await;
        assert!(events.len() <= n, "one event per download: {events:?}");
        if events.len() == n {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {n} export events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_download_cancels_its_query_and_is_recorded_as_abandoned() {
    let (env, store) = TestEnv::with_store().await;
    // About 40 MB of JSON Lines: far more than the channel and the sockets hold, so a download
    // read only to its first chunk leaves its query blocked part way.
    const N: i64 = 80_000;
    bulk_entries(&store, "bulk", N).await;
    let spill = tempfile::tempdir().unwrap();
    let temp_toml = format!(
        "\n[export]\ntemp_dir = {}\n",
        toml_str(&spill.path().display().to_string())
    );
    let web = Web::start_extra(&env, &temp_toml).await;
    // Four downloads at once, each read only to its first chunk: the most the server runs.
    let mut running = Vec::new();
    for _ in 0..4 {
        let mut resp = reqwest::get(web.url("/export?format=jsonl")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let first = resp.chunk().await.unwrap().expect("the download starts");
        assert!(first.starts_with(b"{\"id\":"));
        running.push(resp);
    }
    // A fifth is refused with when to try again, for a person and for a client that retries.
    let fifth = reqwest::get(web.url("/export?format=csv")).await.unwrap();
    assert_eq!(fifth.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fifth.headers()["retry-after"], "10");
    assert!(fifth
        .text()
        .await
        .unwrap()
        .contains("try again when one has finished"));
    assert_eq!(cancelled_exports(&env), 0);
    // The clients go away part way: their queries are cancelled, not read to the end.
    drop(running);
    wait_no_export_query(&store).await;
    let events = wait_export_events(&store, 4).await;
    assert_eq!(cancelled_exports(&env), 4, "each query was cancelled");
    for ev in &events {
        let d = ev.json("details");
        let entries = d["entries"].as_u64().unwrap() as usize;
        assert!(entries < N as usize, "stopped part way: {entries}");
        assert_export_event(ev, "jsonl", json!({}), entries, false, false);
        assert_eq!(d["abandoned"], true, "{d}");
        assert!(
            d["error"]
                .as_str()
                .unwrap()
                .contains("stopped the download"),
            "{d}"
        );
        assert!(
            ev.context_of("remarks")
                .unwrap()
                .contains("abandoned by the client"),
            "{d}"
        );
    }
    // Their places are free again.
    let mut resp = reqwest::get(web.url("/export?format=cef&action=DDL"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.chunk().await.unwrap(),
        None,
        "no DDL entries: an empty file"
    );
    wait_export_events(&store, 5).await;

    // An XLSX sends nothing before its last row: the client going away is noticed all the same,
    // the query is cancelled and the workbook's temporary directory removed.
    let resp = reqwest::get(web.url("/export?format=xlsx&table=public.bulk"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    wait_until(
        "the XLSX export has made its directory",
        Duration::from_secs(10),
        || async { !names_in(spill.path()).is_empty() },
    )
    .await;
    drop(resp);
    wait_no_export_query(&store).await;
    let events = wait_export_events(&store, 6).await;
    assert_eq!(cancelled_exports(&env), 5, "the XLSX's query was cancelled");
    let d = events[5].json("details");
    assert_export_event(
        &events[5],
        "xlsx",
        json!({"table": ["public.bulk"]}),
        d["entries"].as_u64().unwrap() as usize,
        false,
        false,
    );
    assert_eq!(d["abandoned"], true, "{d}");
    assert!(d["entries"].as_u64().unwrap() < N as u64, "{d}");
    assert_eq!(names_in(spill.path()), Vec::<String>::new());

    // A complete download after all that: every entry, and a normal event.
    let (status, _, _, body) = download(&web.url("/export?format=jsonl&table=public.bulk")).await;
    assert_eq!(status, StatusCode::OK);
    let want = rows_where(&store, "schema_name = 'public' AND table_name = 'bulk'").await;
    check_jsonl(std::str::from_utf8(&body).unwrap(), &want);
    let events = wait_export_events(&store, 7).await;
    assert_export_event(
        &events[6],
        "jsonl",
        json!({"table": ["public.bulk"]}),
        N as usize,
        false,
        true,
    );
    assert_eq!(events[6].json("details")["abandoned"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_downloads_are_encrypted_when_configured() {
    let identity = age::x25519::Identity::generate();
    let recipients = format!(
        "\n[export]\nage_recipients = [{}]\n",
        toml_str(&identity.to_public().to_string())
    );
    let env = TestEnv::start().await;
    let store = capture_hostile(&env).await;
    let want = rows_where(&store, "schema_name = 'public' AND table_name = 't'").await;

    let web = Web::start_extra(&env, &recipients).await;
    let (status, ct, cd, body) = download(&web.url("/export?table=public.t&format=xlsx")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/octet-stream");
    assert!(cd.ends_with(".xlsx.age\""), "{cd}");
    check_xlsx(&decrypt(&body, &identity), &want);
    let ev = export_events(&store).await.pop().unwrap();
    assert_export_event(
        &ev,
        "xlsx",
        json!({"table": ["public.t"]}),
        want.len(),
        true,
        true,
    );
    // Not required: a plain file on request.
    let (status, ct, _, body) =
        download(&web.url("/export?table=public.t&format=csv&encrypt=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "text/csv; charset=utf-8");
    check_csv(&body, &want, false);
    drop(web);

    let web = Web::start_extra(&env, &format!("{recipients}require_encryption = true\n")).await;
    let events_before = export_events(&store).await.len();
    let (status, _, _, body) =
        download(&web.url("/export?table=public.t&format=csv&encrypt=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("encrypted"));
    assert_eq!(export_events(&store).await.len(), events_before);
    let (status, _, _, body) = download(&web.url("/export?table=public.t&format=cef")).await;
    assert_eq!(status, StatusCode::OK);
    check_cef(
        std::str::from_utf8(&decrypt(&body, &identity)).unwrap(),
        &want,
    );
}
