//! The binary under test: the daemon's config file as the tests write it, [`Pgtrail`] (a config
//! file plus every command and daemon run against it) and [`Daemon`] (a running `pgtrail run`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{
    assert_no_panic, free_port, new_temp_dir, parse_jsonl, pgtrail_env, read_lossy, tail,
    CliOutput, Cluster, ExportLine,
};

/// Slot name used by every test config.
pub const SLOT: &str = "pgtrail";

/// The daemon's TOML config, as the tests write it.
#[derive(Debug, Clone)]
pub struct Config {
    pub source_url: String,
    pub slot: String,
    pub store_url: String,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    /// `capture.before_images`: setup gives captured tables REPLICA IDENTITY FULL.
    pub before_images: bool,
    /// `web.listen`: a free port of its own, since tests run daemons side by side.
    pub web_listen: String,
    /// More `[web]` keys, verbatim (`auth = "none"\n`, `session_idle_seconds = 2\n`…).
    pub web_toml: String,
    /// More `[store]` keys, verbatim (`signing_key_file = "…"\n`).
    pub store_toml: String,
    /// More `[source]` keys, verbatim (`timeout_seconds = 3\n`).
    pub source_toml: String,
    /// Appended verbatim at the end of the TOML, which is inside `[capture]`: bare keys
    /// (`redact_key = …`) extend it; start with a header (`[[capture.columns]]`) for the rest.
    pub extra_toml: String,
}

impl Config {
    /// Source `app`, store `pgtrail`, both on `cluster`; capture `public.*`.
    pub fn for_cluster(cluster: &Cluster) -> Config {
        Config {
            source_url: cluster.url("app"),
            slot: SLOT.to_string(),
            store_url: cluster.url("pgtrail"),
            tables: vec!["public.*".to_string()],
            exclude: vec![],
            before_images: true,
            web_listen: format!("127.0.0.1:{}", free_port()),
            web_toml: String::new(),
            extra_toml: String::new(),
            store_toml: String::new(),
            source_toml: String::new(),
        }
    }

    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        // Daemons run side by side: none takes the default metrics port unless a test asks.
        let metrics = if self.extra_toml.contains("[metrics]") {
            ""
        } else {
            "\n[metrics]\nlisten = \"\"\n"
        };
        format!(
            "[source]\nurl = {}\nslot = {}\n{}\n[store]\nurl = {}\n{}\n[web]\nlisten = {}\n{}\n[capture]\ntables = [{}]\nexclude = [{}]\nbefore_images = {}\n{}{}",
            toml_str(&self.source_url),
            toml_str(&self.slot),
            self.source_toml,
            toml_str(&self.store_url),
            self.store_toml,
            toml_str(&self.web_listen),
            self.web_toml,
            list(&self.tables),
            list(&self.exclude),
            self.before_images,
            self.extra_toml,
            metrics
        )
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgtrail")
}

static DAEMON_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A config file (in its own temp dir) plus everything run against it. When a test fails, its
/// Drop prints the logs of every daemon it spawned.
pub struct Pgtrail {
    pub config: Config,
    pub config_path: PathBuf,
    /// Extra environment for every command and daemon (e.g. PGPASSWORD).
    pub envs: Vec<(String, String)>,
    logs: Mutex<Vec<PathBuf>>,
    dir: TempDir,
}

impl Pgtrail {
    pub fn new(config: Config) -> Pgtrail {
        let dir = new_temp_dir("pgtrail-it-cfg-");
        let config_path = dir.path().join("pgtrail.toml");
        fs::write(&config_path, config.to_toml()).unwrap();
        Pgtrail {
            config,
            config_path,
            envs: vec![],
            logs: Mutex::new(vec![]),
            dir,
        }
    }

    /// Replace the config file's contents.
    pub fn rewrite(&mut self, config: Config) {
        fs::write(&self.config_path, config.to_toml()).unwrap();
        self.config = config;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// `pgtrail --config FILE ARGS…`
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        pgtrail_env(&self.config_path, args, &self.env_pairs()).await
    }

    /// `pgtrail --config FILE ARGS…` with `input` on standard input (a pipe, not a terminal).
    pub async fn cli_with_stdin(&self, args: &[&str], input: &str) -> CliOutput {
        use std::io::Write as _;
        let mut all: Vec<OsString> =
            vec!["--config".into(), self.config_path.as_os_str().to_owned()];
        all.extend(args.iter().map(OsString::from));
        let cmd = format!("pgtrail {}", args.join(" "));
        let started = Instant::now();
        let output = tokio::task::block_in_place(|| {
            let mut child = Command::new(bin())
                .args(&all)
                .env_remove("PGTRAIL_CONFIG")
                .env_remove("PGPASSWORD")
                .envs(self.env_pairs())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
            // A command that fails before reading its input closes the pipe: not our error.
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
            child.wait_with_output().unwrap()
        });
        CliOutput {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            cmd,
            status: output.status,
            elapsed: started.elapsed(),
        }
    }

    /// `pgtrail setup`, which must succeed.
    pub async fn setup(&self) {
        self.cli(&["setup"]).await.assert_success();
    }

    /// `pgtrail --config FILE run` in the background, output to a log file.
    pub fn spawn(&self) -> Daemon {
        let n = DAEMON_SEQ.fetch_add(1, Ordering::SeqCst);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env_remove("PGTRAIL_CONFIG")
            .env_remove("PGPASSWORD")
            .envs(self.env_pairs())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} run: {e}", bin()));
        self.logs.lock().unwrap().push(log.clone());
        Daemon {
            pid: child.id() as i32,
            child: Some(child),
            log,
            exit: None,
        }
    }

    /// `status --json`, which must succeed and print one JSON object.
    pub async fn status_json(&self) -> Value {
        let out = self.cli(&["status", "--json"]).await;
        out.assert_success();
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json is not one JSON object ({e}):\n{out}"))
    }

    /// `export --format FORMAT EXTRA… --out OUT`.
    pub async fn export_to(&self, format: &str, out: &Path, extra: &[&str]) -> CliOutput {
        let out = out.display().to_string();
        let mut args = vec!["export", "--format", format];
        args.extend_from_slice(extra);
        args.extend(["--out", out.as_str()]);
        self.cli(&args).await
    }

    /// `export --format jsonl EXTRA…`, parsed line by line.
    pub async fn export_jsonl(&self, extra: &[&str]) -> Vec<ExportLine> {
        let mut args = vec!["export", "--format", "jsonl"];
        args.extend_from_slice(extra);
        let out = self.cli(&args).await;
        out.assert_success();
        parse_jsonl(&out.stdout)
    }
}

impl Drop for Pgtrail {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in self.logs.lock().unwrap().iter() {
                eprintln!(
                    "--- {} (last lines) ---\n{}",
                    log.display(),
                    tail(&read_lossy(log), 150)
                );
            }
        }
    }
}

/// A running `pgtrail run`. Drop kills it (SIGKILL) if it still runs.
pub struct Daemon {
    pub pid: i32,
    child: Option<Child>,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Daemon {
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// None while running; the exit status once it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.exit = child.try_wait().unwrap();
            }
        }
        self.exit
    }

    /// Fail the test (with the log) if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "the daemon exited unexpectedly with {status}\n--- log ---\n{}",
                tail(&self.log(), 150)
            );
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; the child is not reaped until we wait for it,
        // so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid);
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub async fn kill_9(&mut self) {
        self.assert_running();
        self.signal(libc::SIGKILL);
        let status = self
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("SIGKILLed daemon did not exit");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "daemon did not die of SIGKILL: {status}"
        );
    }

    /// SIGTERM; it must exit by itself with status 0 within 30 s and not panic.
    pub async fn terminate(&mut self) {
        self.stop_with(libc::SIGTERM).await;
    }

    /// Send `sig` (SIGTERM or SIGINT); it must exit 0 within 30 s and not panic.
    pub async fn stop_with(&mut self, sig: i32) {
        self.assert_running();
        self.signal(sig);
        match self.wait_exit(Duration::from_secs(30)).await {
            Some(status) => {
                assert!(
                    status.success(),
                    "daemon exited with {status} after signal {sig}, expected 0\n--- log ---\n{}",
                    tail(&self.log(), 150)
                );
                assert_no_panic(&self.log(), "pgtrail run");
            }
            None => panic!(
                "daemon did not exit within 30 s of signal {sig}\n--- log ---\n{}",
                tail(&self.log(), 150)
            ),
        }
    }

    /// Peak resident set size so far, in KiB (VmHWM from /proc/PID/status).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() && child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
