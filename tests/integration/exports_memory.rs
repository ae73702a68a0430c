//! A large export runs in flat memory: `pgtrail export` of about 20,000 and about 200,000
//! synthetic entries (inserted into the store with SQL) peaks at nearly the same resident size,
//! in CSV, CEF and XLSX and encrypted, and the large exports are complete.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use crate::harness::*;

/// Runs `pgtrail ARGS` to the end and returns its peak resident set size in KiB: VmHWM from
/// /proc/PID/status, read every few milliseconds while it runs (the last reading before it exits
/// is the peak, as VmHWM only rises). Not wait4's `ru_maxrss`: Linux carries that across exec
/// from the process that spawned the child, here the test binary itself.
fn peak_rss_kib(args: &[OsString]) -> u64 {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("PGTRAIL_CONFIG")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pgtrail");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "pgtrail {args:?} failed: {status}");
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_exports_run_in_flat_memory() {
    let identity = age::x25519::Identity::generate();
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.extra_toml = format!(
            "\n[export]\nage_recipients = [{}]\n",
            toml_str(&identity.to_public().to_string())
        )
    })
    .await;
    env.setup().await;
    let store = env.store().await;
    const SMALL: i64 = 20_000;
    const LARGE: i64 = 200_000;
    bulk_entries(&store, "small", SMALL).await;
    bulk_entries(&store, "large", LARGE).await;
    let dir = env.trail.dir().to_owned();

    let mut report = Vec::new();
    for (format, extra) in [
        ("csv", "--no-encrypt"),
        ("cef", "--no-encrypt"),
        ("xlsx", "--no-encrypt"),
        ("csv", ""),
    ] {
        let mut peaks = Vec::new();
        for (table, n) in [("small", SMALL), ("large", LARGE)] {
            let out = dir.join(format!("{table}.{format}"));
            let mut args: Vec<OsString> = vec![
                "--config".into(),
                env.trail.config_path.clone().into(),
                "export".into(),
                "--format".into(),
                format.into(),
                "--table".into(),
                format!("public.{table}").into(),
                "--out".into(),
                out.clone().into(),
            ];
            if !extra.is_empty() {
                args.push(extra.into());
            }
            let peak = tokio::task::block_in_place(|| peak_rss_kib(&args));
            peaks.push(peak);
            // The large export is whole: count what was written.
            let written = if extra.is_empty() {
                let sealed = std::fs::read(dir.join(format!("{table}.{format}.age"))).unwrap();
                let plain = decrypt(&sealed, &identity);
                csv::Reader::from_reader(&plain[..]).records().count() as i64
            } else {
                match format {
                    "xlsx" => {
                        use calamine::Reader;
                        let mut book: calamine::Xlsx<_> = calamine::open_workbook(&out).unwrap();
                        book.worksheet_range("entries").unwrap().height() as i64 - 1
                    }
                    "csv" => csv::Reader::from_path(&out).unwrap().records().count() as i64,
                    _ => std::fs::read_to_string(&out).unwrap().lines().count() as i64,
                }
            };
            assert_eq!(written, n, "{format} {extra} of {table}");
        }
        report.push(format!(
            "{format}{}: {} KiB → {} KiB",
            if extra.is_empty() { " (age)" } else { "" },
            peaks[0],
            peaks[1]
        ));
        // Ten times the entries: at most a quarter more memory, and a few MiB of noise.
        assert!(
            peaks[1] <= peaks[0] + peaks[0] / 4 + 4096,
            "{format} {extra}: peak RSS grew from {} KiB ({SMALL} entries) to {} KiB ({LARGE} entries)",
            peaks[0],
            peaks[1]
        );
        assert!(peaks[1] < 64 * 1024, "{format}: {} KiB", peaks[1]);
    }
    eprintln!("peak RSS, {SMALL} → {LARGE} entries: {}", report.join("; "));
}
