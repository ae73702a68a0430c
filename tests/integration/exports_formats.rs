//! `pgtrail export` in every format, each read back by an independent reader and compared with
//! the store entry by entry: serde_json for JSON Lines, the `csv` crate (with and without a BOM),
//! a CEF parser written here from the specification's escaping rules, calamine for XLSX (numbers
//! are numbers, times are dates, frozen header and filters checked in the sheet's XML), and the
//! `age` crate for encrypted exports. Values are hostile on purpose: `|`, `=`, `\`, line breaks,
//! quotes, unicode, a value longer than an Excel cell, a table name with a pipe and a newline.
//! Every export leaves exactly one EVENT entry with the right details, also one that fails part
//! way; `require_encryption` makes a plain export impossible.

use std::path::Path;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_every_format_read_back_and_recorded() {
    let env = TestEnv::start().await;
    let store = capture_hostile(&env).await;
    record_ipv6_event(&store).await;
    let me = os_user_name();
    let dir = env.trail.dir().to_owned();
    let path = |name: &str| dir.join(name).display().to_string();

    let cases: [(&str, &[&str]); 5] = [
        ("jsonl", &[]),
        ("csv", &[]),
        ("csv", &["--bom"]),
        ("cef", &[]),
        ("xlsx", &[]),
    ];
    for (format, extra) in cases {
        // Everything stored so far, including the events of the exports before this one.
        let want = rows_where(&store, "true").await;
        assert!(want.iter().any(|r| r.table.contains('|')));
        let events_before = export_events(&store).await.len();
        let out = path(&format!("all-{format}{}", extra.len()));
        let mut args = vec!["export", "--format", format, "--out", &out];
        args.extend_from_slice(extra);
        env.trail.cli(&args).await.assert_success();
        let bytes = std::fs::read(&out).unwrap();
        check_export(format, &bytes, &want, !extra.is_empty());
        let events = export_events(&store).await;
        assert_eq!(events.len(), events_before + 1, "one event per export");
        let ev = events.last().unwrap();
        assert_export_event(ev, format, json!({}), want.len(), false, true);
        assert_eq!(ev.json("details")["bom"], !extra.is_empty());
        assert_eq!(ev.json("details")["destination"], out.as_str());
        assert_eq!(ev.context_of("actor"), Some(me.clone()), "the OS user");
        assert_eq!(
            ev.context_of("application_name").as_deref(),
            Some("pgtrail cli")
        );
        assert!(ev.id > want.last().unwrap().id, "written after the export");
    }

    // Standard output carries the text formats; an XLSX needs --out.
    let want = rows_where(&store, "true").await;
    let out = env.trail.cli(&["export", "--format", "cef"]).await;
    out.assert_success();
    check_cef(&out.stdout, &want);
    assert_eq!(
        export_events(&store).await.last().unwrap().json("details")["destination"],
        "stdout"
    );
    let events_before = export_events(&store).await.len();
    env.trail
        .cli(&["export", "--format", "xlsx"])
        .await
        .assert_clean_failure(&["--out"], std::time::Duration::from_secs(10));
    env.trail
        .cli(&["export", "--format", "jsonl", "--bom"])
        .await
        .assert_clean_failure(&["--bom", "csv"], std::time::Duration::from_secs(10));
    assert_eq!(
        export_events(&store).await.len(),
        events_before,
        "a refused request exports nothing and records nothing"
    );

    // Filters: --action, --actor, --table (repeatable) and time bounds, in CEF and XLSX.
    let t_updates =
        "schema_name = 'public' AND table_name = 't' AND action IN ('UPDATE', 'DELETE')";
    let want = rows_where(&store, t_updates).await;
    assert_eq!(want.len(), 2);
    let out = path("filtered.cef");
    env.trail
        .cli(&[
            "export", "--format", "cef", "--table", "public.t", "--action", "update", "--action",
            "DELETE", "--out", &out,
        ])
        .await
        .assert_success();
    check_cef(&std::fs::read_to_string(&out).unwrap(), &want);
    assert_export_event(
        export_events(&store).await.last().unwrap(),
        "cef",
        json!({"action": ["UPDATE", "DELETE"], "table": ["public.t"]}),
        2,
        false,
        true,
    );
    let want = rows_where(&store, "context->>'actor' = 'al|ice=\\ \"admin\"'").await;
    assert_eq!(want.len(), 2, "the update and the delete");
    let out = path("actor.xlsx");
    env.trail
        .cli(&[
            "export",
            "--format",
            "xlsx",
            "--actor",
            "al|ice=\\ \"admin\"",
            "--out",
            &out,
        ])
        .await
        .assert_success();
    check_xlsx(&std::fs::read(&out).unwrap(), &want);
    let since = want[0].committed_at.to_rfc3339();
    let until = (want[0].committed_at + chrono::Duration::hours(1)).to_rfc3339();
    let want = rows_where(
        &store,
        &format!("committed_at >= '{since}' AND committed_at < '{until}' AND action <> 'EVENT'"),
    )
    .await;
    let out = path("since.jsonl");
    env.trail
        .cli(&[
            "export", "--format", "jsonl", "--since", &since, "--until", &until, "--action",
            "INSERT", "--action", "UPDATE", "--action", "DELETE", "--action", "TRUNCATE",
            "--action", "DDL", "--out", &out,
        ])
        .await
        .assert_success();
    check_jsonl(&std::fs::read_to_string(&out).unwrap(), &want);
    let ev = export_events(&store).await;
    let filters = &ev.last().unwrap().json("details")["filters"];
    assert_eq!(
        filters["action"],
        json!(["INSERT", "UPDATE", "DELETE", "TRUNCATE", "DDL"])
    );
    assert!(
        filters["from"].is_string() && filters["to"].is_string(),
        "{filters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_is_recorded_as_incomplete() {
    let (env, store) = TestEnv::with_store().await;
    // Enough entries that the output overflows the write buffer many times.
    bulk_entries(&store, "bulk", 5000).await;
    // /dev/full accepts the open and fails every write with ENOSPC.
    let out = env
        .trail
        .cli(&["export", "--format", "csv", "--out", "/dev/full"])
        .await;
    out.assert_clean_failure(
        &["no space left", "incomplete", "recorded"],
        std::time::Duration::from_secs(60),
    );
    let events = export_events(&store).await;
    assert_eq!(events.len(), 1, "the failed export is recorded once");
    let ev = &events[0];
    assert_export_event(
        ev,
        "csv",
        json!({}),
        ev.json("details")["entries"].as_u64().unwrap() as usize,
        false,
        false,
    );
    let written = ev.json("details")["entries"].as_u64().unwrap();
    assert!(written < 5000, "failed part way: {written} entries");
    assert!(
        ev.json("details")["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("no space left"),
        "{}",
        ev.json("details")
    );
    assert!(ev.context_of("remarks").unwrap().contains("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_exports_decrypt_and_encryption_can_be_required() {
    let identity = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let recipients = format!(
        "\n[export]\nage_recipients = [{}, {}]\n",
        toml_str(&identity.to_public().to_string()),
        toml_str(&other.to_public().to_string())
    );
    let mut env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = recipients.clone()
    })
    .await;
    let store = capture_hostile(&env).await;
    let dir = env.trail.dir().to_owned();

    for format in ["csv", "jsonl", "cef", "xlsx"] {
        let want = rows_where(&store, "true").await;
        let asked = dir.join(format!("enc.{format}"));
        env.trail
            .export_to(format, &asked, &[])
            .await
            .assert_success();
        assert!(!asked.exists(), "the plain name is not written");
        let file = dir.join(format!("enc.{format}.age"));
        let sealed = std::fs::read(&file).expect(".age appended");
        assert!(
            sealed.starts_with(b"age-encryption.org/v1\n"),
            "an age file"
        );
        for id in [&identity, &other] {
            let plain = decrypt(&sealed, id);
            check_export(format, &plain, &want, false);
        }
        let ev = export_events(&store).await.pop().unwrap();
        assert_export_event(&ev, format, json!({}), want.len(), true, true);
        assert_eq!(
            ev.json("details")["destination"],
            file.display().to_string()
        );
    }
    // A name that already ends in .age is kept.
    let named = dir.join("named.age");
    env.trail
        .export_to("csv", &named, &[])
        .await
        .assert_success();
    assert!(decrypt(&std::fs::read(&named).unwrap(), &identity).starts_with(b"id,"));

    // Not required: --no-encrypt gives a plain file, recorded as such.
    let plain_path = dir.join("plain.csv");
    env.trail
        .export_to("csv", &plain_path, &["--no-encrypt"])
        .await
        .assert_success();
    let want = rows_where(
        &store,
        &format!("id < {}", export_events(&store).await.last().unwrap().id),
    )
    .await;
    check_csv(&std::fs::read(&plain_path).unwrap(), &want, false);
    let ev = export_events(&store).await.pop().unwrap();
    assert_eq!(ev.json("details")["encrypted"], false);

    // Required: no way out.
    let mut config = env.trail.config.clone();
    config.extra_toml = format!("{recipients}require_encryption = true\n");
    env.trail.rewrite(config);
    let events_before = export_events(&store).await.len();
    let refused = dir.join("refused.csv");
    env.trail
        .export_to("csv", &refused, &["--no-encrypt"])
        .await
        .assert_clean_failure(
            &["require_encryption", "--no-encrypt"],
            std::time::Duration::from_secs(10),
        );
    assert!(!refused.exists());
    assert_eq!(export_events(&store).await.len(), events_before);
    let still = dir.join("still.csv");
    env.trail
        .export_to("csv", &still, &[])
        .await
        .assert_success();
    assert!(
        decrypt(&std::fs::read(dir.join("still.csv.age")).unwrap(), &other).starts_with(b"id,")
    );

    // Required without recipients is a config error that names the key.
    let mut config = env.trail.config.clone();
    config.extra_toml = "\n[export]\nrequire_encryption = true\n".into();
    env.trail.rewrite(config);
    env.trail
        .cli(&["export", "--format", "csv"])
        .await
        .assert_clean_failure(
            &["export.require_encryption", "age_recipients"],
            std::time::Duration::from_secs(10),
        );
    // And a recipient that is not one.
    let mut config = env.trail.config.clone();
    config.extra_toml = "\n[export]\nage_recipients = [\"age1notakey\"]\n".into();
    env.trail.rewrite(config);
    env.trail
        .cli(&["export", "--format", "csv"])
        .await
        .assert_clean_failure(
            &["export.age_recipients", "age1notakey"],
            std::time::Duration::from_secs(10),
        );
    assert!(Path::new(&dir).exists());
}
