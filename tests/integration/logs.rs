//! Conventions a DBA expects of the command itself: `[log] format = "json"` makes every log line
//! one JSON object with the event's fields (and a wrong format is refused naming the key), and
//! without `--config` or `PGTRAIL_CONFIG` the config is /etc/pgtrail/pgtrail.toml, with an error
//! naming all three ways when that file is missing too.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// "Within a few seconds".
const QUICK: Duration = Duration::from_secs(10);

/// Every non-empty line of `log`, parsed as one JSON object (the test fails on any other line).
fn json_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            other => {
                panic!("a log line is not one JSON object ({other:?}):\n{l}\n--- log ---\n{log}")
            }
        })
        .collect()
}

/// The first event whose message is `message`.
fn event<'a>(
    events: &'a [serde_json::Map<String, Value>],
    message: &str,
) -> &'a serde_json::Map<String, Value> {
    events
        .iter()
        .find(|e| e.get("message").and_then(Value::as_str) == Some(message))
        .unwrap_or_else(|| panic!("no {message:?} event in {events:#?}"))
}

/// An LSN as PostgreSQL writes it: two hex numbers around a slash.
fn is_lsn(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.split_once('/'))
        .is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = "[log]\nformat = \"json\"\n".into();
    })
    .await;
    let src = env
        .source_with("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    env.setup().await;
    let mut daemon = env.spawn();
    src.batch_execute("INSERT INTO t VALUES (1, 'one')")
        .await
        .unwrap();
    env.sync().await;
    let stored = table_entries(&env.store().await, "public", "t").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].action, "INSERT");
    assert_eq!(stored[0].key_i64("id"), 1);
    daemon.terminate().await;

    let log = daemon.log();
    assert!(!log.contains('\u{1b}'), "escape codes in JSON logs:\n{log}");
    let events = json_lines(&log);
    for e in &events {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(e.contains_key(key), "no {key:?} in {e:?}");
        }
    }
    let streaming = event(&events, "streaming changes");
    assert_eq!(streaming["level"], "INFO");
    assert_eq!(streaming["slot"], SLOT);
    assert!(is_lsn(&streaming["from"]), "{streaming:?}");
    assert!(is_lsn(&streaming["server_lsn"]), "{streaming:?}");
    assert!(
        streaming["tables"].as_u64().is_some_and(|n| n >= 2),
        "t and the marker table are captured: {streaming:?}"
    );
    let stopped = event(&events, "stopped");
    assert!(is_lsn(&stopped["stored_up_to"]), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_log_format_is_refused_naming_the_key_and_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgtrail.toml");
    let port = free_port();
    std::fs::write(
        &path,
        format!("[source]\nurl = \"postgres://postgres@127.0.0.1:{port}/app\"\n[log]\nformat = \"xml\"\n"),
    )
    .unwrap();
    let args: Vec<OsString> = vec!["--config".into(), path.clone().into(), "run".into()];
    let needles = [
        "log.format",
        "\"xml\"",
        "\"text\" or \"json\"",
        path.to_str().unwrap(),
    ];
    let out = run_pgtrail(&args, &[], Duration::from_secs(30)).await;
    out.assert_clean_failure(&needles, QUICK);

    // PGTRAIL_LOG_FORMAT=json applies even when the config cannot be read: the error is an event.
    let out = run_pgtrail(
        &args,
        &[("PGTRAIL_LOG_FORMAT", "json")],
        Duration::from_secs(30),
    )
    .await;
    out.assert_clean_failure(&[], QUICK);
    let events = json_lines(&out.stderr);
    let last = events.last().expect("the error as an event");
    assert_eq!(last["level"], "ERROR", "{last:?}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(needles.iter().all(|n| message.contains(n)), "{last:?}");

    // A wrong PGTRAIL_LOG_FORMAT is refused in its turn, naming the variable.
    let out = run_pgtrail(
        &args,
        &[("PGTRAIL_LOG_FORMAT", "yaml")],
        Duration::from_secs(30),
    )
    .await;
    out.assert_clean_failure(
        &["PGTRAIL_LOG_FORMAT", "\"yaml\"", "\"text\" or \"json\""],
        QUICK,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_the_error_names_every_way_to_give_one() {
    let default = std::path::Path::new("/etc/pgtrail/pgtrail.toml");
    if default.exists() {
        println!(
            "note: {} exists on this machine, so pgtrail reads it: skipping",
            default.display()
        );
        return;
    }
    for command in ["run", "status"] {
        let out = run_pgtrail(&[command.into()], &[], Duration::from_secs(30)).await;
        out.assert_clean_failure(
            &[
                "--config",
                "PGTRAIL_CONFIG",
                "/etc/pgtrail/pgtrail.toml",
                "does not exist",
            ],
            QUICK,
        );
    }
}
