//! Where an XLSX export's plaintext waits: rust_xlsxwriter spills the rows to temporary files
//! until the workbook is assembled, also for an encrypted export. Each export makes a directory
//! of its own for them, mode 0700, in `export.temp_dir` or else the system's temporary directory,
//! and removes it when it ends: completed, failed, by the CLI or for a download. Watched from
//! outside while the export runs: the directory that appears, its mode, and the files the process
//! holds open in it (so the crate really writes there); afterwards nothing is left, neither there
//! nor in `$TMPDIR`.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

const N: i64 = 30_000;

/// `pgtrail export --format xlsx --table public.bulk --out OUT` with `$TMPDIR` set to `tmpdir`,
/// watched in `base` while it runs: whether it succeeded, its standard error, what was seen.
fn export_watched(
    env: &TestEnv,
    out: &str,
    base: &Path,
    tmpdir: &Path,
) -> (bool, String, ScratchSeen) {
    let mut all: Vec<OsString> = vec!["--config".into(), env.trail.config_path.clone().into()];
    let args = [
        "export",
        "--format",
        "xlsx",
        "--table",
        "public.bulk",
        "--out",
        out,
    ];
    all.extend(args.iter().map(OsString::from));
    let child = Command::new(bin())
        .args(&all)
        .env_remove("PGTRAIL_CONFIG")
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgtrail export");
    let watch = ScratchWatch::start(base, child.id());
    let out = child.wait_with_output().expect("wait for pgtrail export");
    let seen = watch.stop();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        seen,
    )
}

/// One private directory was used, and the export's files were in it.
fn assert_private(seen: &ScratchSeen, what: &str) {
    assert_eq!(
        seen.dirs.len(),
        1,
        "{what}: one directory of its own: {seen:?}"
    );
    for (dir, mode) in &seen.dirs {
        assert_eq!(*mode, 0o700, "{what}: {} is mode {mode:o}", dir.display());
        assert!(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pgtrail-export-"),
            "{what}: {}",
            dir.display()
        );
    }
    assert!(
        seen.open_files_inside > 0,
        "{what}: the workbook's temporary files were held open inside it: {seen:?}"
    );
}

/// The last export recorded is a completed XLSX of the `entries` entries of `public.bulk`.
async fn assert_last_export_whole(store: &tokio_postgres::Client, entries: usize) {
    let ev = export_events(store).await.pop().expect("an export event");
    assert_export_event(
        &ev,
        "xlsx",
        json!({"table": ["public.bulk"]}),
        entries,
        false,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xlsx_temporary_files_stay_in_a_private_directory_that_is_removed() {
    let spill = tempfile::tempdir().unwrap();
    let system_tmp = tempfile::tempdir().unwrap();
    let temp_toml = format!(
        "\n[export]\ntemp_dir = {}\n",
        toml_str(&spill.path().display().to_string())
    );
    let mut env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = temp_toml.clone()
    })
    .await;
    env.setup().await;
    let store = env.store().await;
    bulk_entries(&store, "bulk", N).await;
    let bulk = "schema_name = 'public' AND table_name = 'bulk'";
    let want = rows_where(&store, bulk).await;
    assert_eq!(want.len() as i64, N);
    let dir = env.trail.dir().to_owned();
    let nothing_left = |what: &str| {
        assert_eq!(
            names_in(spill.path()),
            Vec::<String>::new(),
            "{what}: left in export.temp_dir"
        );
        assert_eq!(
            names_in(system_tmp.path()),
            Vec::<String>::new(),
            "{what}: left in $TMPDIR"
        );
    };

    // The CLI, with export.temp_dir.
    let out = dir.join("cli.xlsx").display().to_string();
    let (ok, stderr, seen) =
        tokio::task::block_in_place(|| export_watched(&env, &out, spill.path(), system_tmp.path()));
    assert!(ok, "{stderr}");
    assert_private(&seen, "CLI");
    nothing_left("CLI");
    check_xlsx(&std::fs::read(&out).unwrap(), &want);
    assert_last_export_whole(&store, want.len()).await;

    // An export that fails at the end (the workbook cannot be written) removes it too.
    let (ok, stderr, seen) = tokio::task::block_in_place(|| {
        export_watched(&env, "/dev/full", spill.path(), system_tmp.path())
    });
    assert!(!ok && stderr.contains("incomplete"), "{stderr}");
    assert_private(&seen, "failed CLI export");
    nothing_left("failed CLI export");
    let ev = export_events(&store).await.pop().unwrap();
    assert_eq!(ev.json("details")["completed"], false);

    // Without export.temp_dir: the system's temporary directory, the same way.
    let mut config = env.trail.config.clone();
    config.extra_toml = String::new();
    env.trail.rewrite(config);
    let out = dir.join("tmpdir.xlsx").display().to_string();
    let (ok, stderr, seen) = tokio::task::block_in_place(|| {
        export_watched(&env, &out, system_tmp.path(), system_tmp.path())
    });
    assert!(ok, "{stderr}");
    assert_private(&seen, "CLI in $TMPDIR");
    nothing_left("CLI in $TMPDIR");
    check_xlsx(&std::fs::read(&out).unwrap(), &want);
    assert_last_export_whole(&store, want.len()).await;

    // A download.
    let web = Web::start_extra(&env, &temp_toml).await;
    let watch = ScratchWatch::start(spill.path(), web.pid());
    let (status, _, _, body) = download(&web.url("/export?format=xlsx&table=public.bulk")).await;
    let seen = watch.stop();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    check_xlsx(&body, &want);
    assert_private(&seen, "download");
    nothing_left("download");
    assert_last_export_whole(&store, want.len()).await;
}
