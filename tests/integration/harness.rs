//! Shared harness for the integration tests: real PostgreSQL 15 clusters, the real `pgtrail`
//! binary, and readers and comparators for the audit store.
//!
//! Nothing here is mocked. A [`Cluster`] is a private `initdb`'d server in its own temp dir on its
//! own TCP port (tests run in parallel threads, so nothing is shared); a [`Daemon`] is the built
//! binary (`CARGO_BIN_EXE_pgtrail`) running `run` against a config file we write; one-shot
//! subcommands go through [`Pgtrail::cli`]. Tests synchronise by polling the store
//! ([`wait_until`], [`sync_via`]), never by sleeping.
//!
//! The central check is [`assert_store_matches_source`]: replay a table's audit entries in id
//! order and compare the result with the table's real rows, rendered in the store's value shapes
//! (see [`source_rows`]). Together with exact per-action [`Counts`] it catches losses, duplicates
//! and wrong images.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

pub mod exports;
pub use exports::*;

/// Where Debian's PostgreSQL 15 server binaries live.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Slot name used by every test config.
pub const SLOT: &str = "pgtrail";
/// How long a test waits for the daemon to catch up with ordinary workloads.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(90);
/// The table [`sync_via`] writes its markers to (in the source database, schema `public`).
pub const MARKER_TABLE: &str = "it_sync_marker";
/// Output settings a replication session pins (see the wal2json notes); the comparator renders
/// source values under the same settings so that text forms agree.
pub const OUTPUT_SETTINGS: &str = "SET DateStyle = 'ISO'; SET TimeZone = 'UTC'; \
     SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3;";

// ---------------------------------------------------------------------------------------------
// Processes and ports
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user (Debian's packages create it).
fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer to a static passwd record; we copy out of it
    // at once and never keep the pointer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` OS user to run the server as"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A command for one PostgreSQL binary; as root it runs as the `postgres` user, because the
/// server refuses to run as root.
fn pg_command(bin: &str) -> Command {
    let path = Path::new(PG_BIN).join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

static HANDED_OUT_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that was free a moment ago, chosen at random below the kernel's
/// range for ephemeral ports: a port is bound a while after it is chosen (by a
/// server the test starts), and in between every outgoing connection of the
/// whole machine takes an ephemeral port, which could be this one if it came
/// from that range (as a bind to port 0 does). Never hands out the same port
/// twice within this test process (tests run in parallel).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = if ephemeral_low > 15000 {
        (10000, ephemeral_low - 1)
    } else {
        // An unusual range: fall back to whatever the kernel gives.
        (0, 0)
    };
    loop {
        let port = if high == 0 {
            0
        } else {
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            low + (random % u64::from(high - low)) as u16
        };
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut guard = HANDED_OUT_PORTS.lock().unwrap();
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn new_temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// Extra server settings for [`Cluster::start_with`], written to postgresql.conf after the
/// harness defaults (so they win), e.g. `wal_level=replica` or `dynamic_library_path=/nonexistent`.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A private PostgreSQL 15 cluster in a fresh temp dir, on its own port, listening on
/// 127.0.0.1 only. Dropping it stops the server (`-m immediate`) and removes the directory.
///
/// pg_hba: the roles `md5_user` and `scram_user` must authenticate over `host 127.0.0.1/32`
/// with md5 and scram-sha-256 respectively (see [`Cluster::create_password_role`]); everyone
/// else is trusted.
pub struct Cluster {
    data: PathBuf,
    log: PathBuf,
    port: u16,
    running: bool,
    // Last: removed after the server is stopped.
    dir: TempDir,
}

impl Cluster {
    /// A cluster with the default settings (wal_level=logical etc.).
    pub fn start() -> Cluster {
        Self::start_with(ClusterOptions::default())
    }

    /// A cluster with extra settings. Blocking (initdb and pg_ctl are child processes).
    pub fn start_with(opts: ClusterOptions) -> Cluster {
        let dir = new_temp_dir("pgtrail-it-pg-");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown cluster dir to postgres");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");

        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(dir.path())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let mut conf = String::from("\n# --- pgtrail integration test harness ---\n");
        let defaults: &[(&str, String)] = &[
            ("listen_addresses", "127.0.0.1".into()),
            ("unix_socket_directories", dir.path().display().to_string()),
            ("wal_level", "logical".into()),
            ("max_replication_slots", "10".into()),
            ("max_wal_senders", "10".into()),
            ("fsync", "off".into()),
            ("full_page_writes", "off".into()),
            ("shared_buffers", "64MB".into()),
            ("log_min_messages", "warning".into()),
            ("log_line_prefix", "%m [%p] %a ".into()),
        ];
        for (k, v) in defaults {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        conf.push_str(&format!("port = {port}\n"));
        append(&data.join("postgresql.conf"), &conf);

        // Password lines first: pg_hba.conf is read top-down and the first match wins.
        let hba_path = data.join("pg_hba.conf");
        let original = fs::read_to_string(&hba_path).expect("read pg_hba.conf");
        let hba = format!(
            "# pgtrail integration tests: these roles must use passwords\n\
             host all         md5_user   127.0.0.1/32 md5\n\
             host replication md5_user   127.0.0.1/32 md5\n\
             host all         scram_user 127.0.0.1/32 scram-sha-256\n\
             host replication scram_user 127.0.0.1/32 scram-sha-256\n\n{original}"
        );
        // Rewrite in place so the file keeps its owner.
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&hba_path)
            .expect("open pg_hba.conf");
        f.write_all(hba.as_bytes()).unwrap();

        let mut cluster = Cluster {
            data,
            log,
            port,
            running: false,
            dir,
        };
        for attempt in 0.. {
            match cluster.pg_ctl_start() {
                Ok(()) => break,
                Err(e) if attempt < 5 && e.contains("already in use") => {
                    // Someone took "our" free port in the meantime: pick another.
                    cluster.port = free_port();
                    append(
                        &cluster.data.join("postgresql.conf"),
                        &format!("port = {}\n", cluster.port),
                    );
                }
                Err(e) => panic!("starting PostgreSQL failed:\n{e}"),
            }
        }
        cluster.running = true;
        cluster
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&read_lossy(&self.log), 30)
            ))
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stop (`-m fast`) and start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stop the server (`-m fast`), keeping the data directory.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|e| panic!("pg_ctl stop failed: {e}"));
        self.running = false;
    }

    /// Start a stopped server again, same data dir, same port.
    pub fn start_again(&mut self) {
        self.pg_ctl_start()
            .unwrap_or_else(|e| panic!("pg_ctl start (again) failed: {e}"));
        self.running = true;
    }

    /// Change one server setting (appended to postgresql.conf) and restart.
    pub fn set_and_restart(&mut self, name: &str, value: &str) {
        append(
            &self.data.join("postgresql.conf"),
            &format!("{name} = '{}'\n", value.replace('\'', "''")),
        );
        self.restart();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` (superuser, trusted).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db)
    }

    /// A URL for another role, with an optional password in it.
    pub fn url_as(&self, db: &str, user: &str, password: Option<&str>) -> String {
        match password {
            Some(pw) => format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// A superuser client on `db`; its connection task is spawned on the current runtime.
    /// A connection string over the Unix socket (key=value form), as `user`.
    pub fn socket_conninfo(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    pub async fn client(&self, db: &str) -> Client {
        connect(&self.url(db)).await.unwrap_or_else(|e| {
            panic!(
                "connect to {}: {e}\n--- server log ---\n{}",
                self.url(db),
                self.log_tail(30)
            )
        })
    }

    pub async fn create_db(&self, name: &str) {
        let c = self.client("postgres").await;
        c.batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .expect("CREATE DATABASE");
    }

    /// Create a LOGIN REPLICATION role whose password is stored with `encryption`
    /// (`md5` or `scram-sha-256`); pg_hba makes `md5_user` / `scram_user` use it.
    pub async fn create_password_role(&self, name: &str, password: &str, encryption: &str) {
        let c = self.client("postgres").await;
        c.batch_execute(&format!(
            "SET password_encryption = {}; CREATE ROLE {} LOGIN REPLICATION PASSWORD {};",
            quote_literal(encryption),
            quote_ident(name),
            quote_literal(password)
        ))
        .await
        .expect("CREATE ROLE");
    }

    /// Turns TLS on with a fresh self-signed certificate (made with the `openssl` command), and
    /// makes `role` unable to log in without TLS.
    pub async fn enable_tls(&self, role: &str) {
        let (crt, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
        if is_root() {
            let (uid, gid) = postgres_ids();
            for f in [&crt, &key] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid))
                    .expect("chown certificate to postgres");
            }
        }
        let hba_path = self.data.join("pg_hba.conf");
        let original = fs::read_to_string(&hba_path).expect("read pg_hba.conf");
        let hba = format!(
            "hostnossl all {role} 127.0.0.1/32 reject\nhostnossl replication {role} 127.0.0.1/32 reject\n{original}"
        );
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&hba_path)
            .expect("open pg_hba.conf");
        f.write_all(hba.as_bytes()).unwrap();
        let c = self.client("postgres").await;
        c.batch_execute("ALTER SYSTEM SET ssl = on")
            .await
            .expect("enable ssl");
        c.batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        // The reload is asynchronous: wait until the server says TLS is on.
        wait_until("ssl = on after reload", Duration::from_secs(10), || async {
            c.query_one("SHOW ssl", &[])
                .await
                .map(|r| r.get::<_, String>(0) == "on")
                .unwrap_or(false)
        })
        .await;
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&read_lossy(&self.log), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL log (port {}), last lines ---\n{}",
                self.port,
                self.log_tail(60)
            );
        }
        if self.running {
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

/// Connect with tokio-postgres and spawn the connection on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

// ---------------------------------------------------------------------------------------------
// Config and the binary
// ---------------------------------------------------------------------------------------------

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
        }
    }

    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        format!(
            "[source]\nurl = {}\nslot = {}\n\n[store]\nurl = {}\n\n[web]\nlisten = {}\n{}\n[capture]\ntables = [{}]\nexclude = [{}]\nbefore_images = {}\n{}",
            toml_str(&self.source_url),
            toml_str(&self.slot),
            toml_str(&self.store_url),
            toml_str(&self.web_listen),
            self.web_toml,
            list(&self.tables),
            list(&self.exclude),
            self.before_images,
            self.extra_toml
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

/// What a one-shot `pgtrail` invocation did.
pub struct CliOutput {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.status,
            self.elapsed,
            tail(&self.stdout, 200),
            tail(&self.stderr, 200)
        )
    }
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        assert_no_panic(&self.stderr, &self.cmd);
        self
    }

    /// stdout and stderr together (error messages may go to either), ANSI colours removed.
    pub fn combined(&self) -> String {
        strip_ansi(&format!("{}\n{}", self.stdout, self.stderr))
    }

    /// A failure as the spec wants it: non-zero exit within `max`, no panic, and every needle
    /// present (case-insensitive) in the output.
    pub fn assert_clean_failure(&self, needles: &[&str], max: Duration) {
        assert!(!self.success(), "expected a non-zero exit:\n{self}");
        assert!(
            self.status.code().is_some(),
            "expected an exit code, not a signal:\n{self}"
        );
        assert!(
            self.elapsed <= max,
            "expected to fail within {max:?}:\n{self}"
        );
        assert_no_panic(&self.stderr, &self.cmd);
        assert_no_panic(&self.stdout, &self.cmd);
        let hay = self.combined().to_lowercase();
        for n in needles {
            assert!(
                hay.contains(&n.to_lowercase()),
                "expected the output to mention {n:?}:\n{self}"
            );
        }
    }
}

/// Remove ANSI escape sequences (`ESC [ … letter`), so messages can be matched as plain text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn assert_no_panic(output: &str, what: &str) {
    assert!(
        !output.contains("panicked"),
        "`{what}` panicked:\n{}",
        tail(output, 100)
    );
}

/// Run the binary once with `args` (no `--config` added), extra environment `envs`, and a hard
/// `timeout` after which it is killed and the test fails. PGTRAIL_CONFIG and PGPASSWORD from the
/// test's own environment are removed first so only what a test passes counts.
pub async fn run_pgtrail(args: &[OsString], envs: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let mut out_file = tempfile::tempfile().unwrap();
    let mut err_file = tempfile::tempfile().unwrap();
    let cmd = format!(
        "{}pgtrail {}",
        envs.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("PGTRAIL_CONFIG")
        .env_remove("PGPASSWORD")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let read = |f: &mut File| {
                let mut s = String::new();
                f.seek(SeekFrom::Start(0)).unwrap();
                let _ = f.read_to_string(&mut s);
                s
            };
            panic!(
                "`{cmd}` did not exit within {timeout:?} (killed: {status})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                tail(&read(&mut out_file), 100),
                tail(&read(&mut err_file), 100)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let read = |f: &mut File| {
        let mut b = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut b).unwrap();
        String::from_utf8(b).unwrap_or_else(|e| panic!("`{cmd}` printed invalid UTF-8: {e}"))
    };
    CliOutput {
        stdout: read(&mut out_file),
        stderr: read(&mut err_file),
        cmd,
        status,
        elapsed,
    }
}

/// `pgtrail --config FILE ARGS…` with a generous timeout.
pub async fn pgtrail(config: &Path, args: &[&str]) -> CliOutput {
    pgtrail_env(config, args, &[]).await
}

/// `pgtrail --config FILE ARGS…` with extra environment variables.
pub async fn pgtrail_env(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> CliOutput {
    let mut all: Vec<OsString> = vec!["--config".into(), config.as_os_str().to_owned()];
    all.extend(args.iter().map(OsString::from));
    run_pgtrail(&all, envs, Duration::from_secs(180)).await
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

// ---------------------------------------------------------------------------------------------
// One test's world
// ---------------------------------------------------------------------------------------------

/// The usual setting: one cluster holding the source database `app` and the store `pgtrail`,
/// and a config for it.
pub struct TestEnv {
    pub trail: Pgtrail,
    pub cluster: Cluster,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with(ClusterOptions::default(), |_| {}).await
    }

    /// A cluster with `opts`, the database `app`, and a config adjusted by `adjust`.
    pub async fn start_with(opts: ClusterOptions, adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let cluster = tokio::task::block_in_place(|| Cluster::start_with(opts));
        cluster.create_db("app").await;
        create_marker_table(&cluster.client("app").await).await;
        let mut config = Config::for_cluster(&cluster);
        adjust(&mut config);
        TestEnv {
            trail: Pgtrail::new(config),
            cluster,
        }
    }

    /// A superuser client on the source database `app`.
    pub async fn source(&self) -> Client {
        self.cluster.client("app").await
    }

    /// A client on the store database.
    pub async fn store(&self) -> Client {
        connect(&self.trail.config.store_url)
            .await
            .expect("connect to the store")
    }

    pub async fn setup(&self) {
        self.trail.setup().await;
    }

    pub fn spawn(&self) -> Daemon {
        self.trail.spawn()
    }

    /// Write a marker to the source and wait until the store has it: then everything committed
    /// before it is stored too (entries are stored in commit order).
    pub async fn sync(&self) {
        let source = self.source().await;
        sync_via(&source, &self.trail.config.store_url, SYNC_TIMEOUT).await;
    }

    /// Wait until the slot is inactive (after a kill the server needs a moment to notice).
    pub async fn wait_slot_inactive(&self) {
        let c = self.cluster.client("postgres").await;
        wait_slot_inactive(&c, SLOT).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Poll `check` every 100 ms until it returns true; fail with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

static MARKER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Create `public.it_sync_marker` in the source database. Done before `setup`/`run` so the
/// daemon knows the table from the start ([`TestEnv`] does it for you).
pub async fn create_marker_table(source: &Client) {
    source
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS public.{MARKER_TABLE} (id bigserial PRIMARY KEY, token text NOT NULL)"
        ))
        .await
        .expect("create marker table");
}

/// Insert a unique token into `public.it_sync_marker` on `source` (see [`create_marker_table`])
/// and wait until the store at `store_url` holds its INSERT entry. The store may be restarting: it reconnects as needed.
pub async fn sync_via(source: &Client, store_url: &str, timeout: Duration) {
    let token = format!(
        "marker-{}-{}",
        std::process::id(),
        MARKER_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    source
        .execute(
            &format!("INSERT INTO public.{MARKER_TABLE} (token) VALUES ($1)"),
            &[&token],
        )
        .await
        .expect("insert marker");
    let mut store: Option<Client> = None;
    let started = Instant::now();
    let mut last_error = String::new();
    loop {
        if store.as_ref().is_none_or(|c| c.is_closed()) {
            store = match connect(store_url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    last_error = e.to_string();
                    None
                }
            };
        }
        if let Some(c) = &store {
            match c
                .query_opt(
                    "SELECT 1 FROM pgtrail.entries WHERE schema_name = 'public' AND table_name = $1 \
                     AND action = 'INSERT' AND after->>'token' = $2",
                    &[&MARKER_TABLE, &token],
                )
                .await
            {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => last_error = e.to_string(),
            }
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for the store to hold marker {token} (last error: {last_error})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// LSNs and slots
// ---------------------------------------------------------------------------------------------

/// "16/B374D848" → u64.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    (hi << 32) | lo
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The WAL insert position now.
pub async fn current_lsn(client: &Client) -> u64 {
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap();
    parse_lsn(&row.get::<_, String>(0))
}

#[derive(Debug, Clone)]
pub struct SlotState {
    pub active: bool,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub confirmed_flush: Option<u64>,
    pub restart: Option<u64>,
}

pub async fn slot_state(client: &Client, slot: &str) -> Option<SlotState> {
    let row = client
        .query_opt(
            "SELECT active, plugin::text, database::text, confirmed_flush_lsn::text, restart_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()?;
    Some(SlotState {
        active: row.get(0),
        plugin: row.get(1),
        database: row.get(2),
        confirmed_flush: row.get::<_, Option<String>>(3).map(|s| parse_lsn(&s)),
        restart: row.get::<_, Option<String>>(4).map(|s| parse_lsn(&s)),
    })
}

pub async fn wait_slot_inactive(client: &Client, slot: &str) {
    wait_until(
        &format!("slot {slot} to become inactive"),
        Duration::from_secs(30),
        || async { slot_state(client, slot).await.is_none_or(|s| !s.active) },
    )
    .await;
}

/// The store's checkpoint for `slot`.
pub async fn checkpoint_lsn(store: &Client, slot: &str) -> Option<u64> {
    store
        .query_opt(
            "SELECT lsn::text FROM pgtrail.checkpoints WHERE slot = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .map(|r| parse_lsn(&r.get::<_, String>(0)))
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// One row of `pgtrail.entries`. JSON columns are parsed (SQL NULL → `Value::Null`) and also
/// kept as the exact text the store holds (`*_text`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub committed_at: DateTime<Utc>,
    pub xid: i64,
    pub lsn: String,
    pub schema: String,
    pub table: String,
    pub action: String,
    pub primary_key: Value,
    pub before: Value,
    pub after: Value,
    pub changed_columns: Value,
    pub context: Value,
    pub details: Value,
    pub primary_key_text: Option<String>,
    pub before_text: Option<String>,
    pub after_text: Option<String>,
}

impl Entry {
    /// `primary_key.<col>` as an i64 (panics if absent).
    pub fn key_i64(&self, col: &str) -> i64 {
        self.primary_key
            .get(col)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("entry {} has no integer key {col}: {self:?}", self.id))
    }
}

use pgtrail::export::ENTRY_COLUMNS;

fn parse_json_col(text: Option<String>, what: &str, id: i64) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(&t)
            .unwrap_or_else(|e| panic!("entry {id}: {what} is not JSON ({e}): {t}")),
    }
}

fn entry_from_row(row: &tokio_postgres::Row) -> Entry {
    let r = Row::from_row(row);
    let id = r.id;
    let [pk, before, after, changed_columns, context, details] = r.json;
    Entry {
        id,
        committed_at: r.committed_at,
        xid: r
            .xid
            .unwrap_or_else(|| panic!("entry {id} has no xid: one of pgtrail's own events")),
        lsn: r
            .lsn
            .unwrap_or_else(|| panic!("entry {id} has no lsn: one of pgtrail's own events")),
        schema: r.schema,
        table: r.table,
        action: r.action,
        primary_key: parse_json_col(pk.clone(), "primary_key", id),
        before: parse_json_col(before.clone(), "before", id),
        after: parse_json_col(after.clone(), "after", id),
        changed_columns: parse_json_col(changed_columns, "changed_columns", id),
        context: parse_json_col(context, "context", id),
        details: parse_json_col(details, "details", id),
        primary_key_text: pk,
        before_text: before,
        after_text: after,
    }
}

/// Every entry, ordered by id.
pub async fn entries(store: &Client) -> Vec<Entry> {
    let rows = store
        .query(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries ORDER BY id"),
            &[],
        )
        .await
        .expect("read entries");
    rows.iter().map(entry_from_row).collect()
}

/// The entries of one table, ordered by id.
pub async fn table_entries(store: &Client, schema: &str, table: &str) -> Vec<Entry> {
    let rows = store
        .query(
            &format!("SELECT {ENTRY_COLUMNS} FROM pgtrail.entries WHERE schema_name = $1 AND table_name = $2 ORDER BY id"),
            &[&schema, &table],
        )
        .await
        .expect("read entries");
    rows.iter().map(entry_from_row).collect()
}

/// Number of entries per action for one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub truncates: i64,
}

impl Counts {
    pub fn new(inserts: i64, updates: i64, deletes: i64, truncates: i64) -> Counts {
        Counts {
            inserts,
            updates,
            deletes,
            truncates,
        }
    }

    pub fn total(&self) -> i64 {
        self.inserts + self.updates + self.deletes + self.truncates
    }
}

pub async fn counts(store: &Client, schema: &str, table: &str) -> Counts {
    let rows = store
        .query(
            // Row changes only: DDL entries are counted by the tests about DDL.
            "SELECT action, count(*) FROM pgtrail.entries WHERE schema_name = $1 AND table_name = $2 AND action <> 'DDL' GROUP BY action",
            &[&schema, &table],
        )
        .await
        .expect("count entries");
    let mut c = Counts::default();
    for r in rows {
        let n: i64 = r.get(1);
        match r.get::<_, &str>(0) {
            "INSERT" => c.inserts = n,
            "UPDATE" => c.updates = n,
            "DELETE" => c.deletes = n,
            "TRUNCATE" => c.truncates = n,
            other => panic!("unexpected action {other:?}"),
        }
    }
    c
}

pub async fn assert_counts(store: &Client, schema: &str, table: &str, expected: Counts) {
    let got = counts(store, schema, table).await;
    assert_eq!(
        got, expected,
        "entry counts for {schema}.{table} (got left, expected right)"
    );
}

/// Total number of entries in the store.
pub async fn entry_count(store: &Client) -> i64 {
    store
        .query_one("SELECT count(*) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0)
}

/// (schema, table) pairs that have entries, sorted.
pub async fn captured_tables(store: &Client) -> Vec<(String, String)> {
    store
        .query(
            "SELECT DISTINCT schema_name, table_name FROM pgtrail.entries ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The comparator
// ---------------------------------------------------------------------------------------------

/// The rows of `schema.table` as JSON objects in the store's value shapes: integers and floats as
/// numbers (NaN/±Infinity as null), numeric as its exact text, bool as bool, json/jsonb nested,
/// everything else (bytea, timestamps, arrays, uuid, domains, …) as its text output under the
/// replication session's output settings.
pub async fn source_rows(source: &Client, schema: &str, table: &str) -> Vec<Value> {
    let cols = source
        .query(
            "SELECT a.attname::text, t.typname::text, t.typtype::text \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = format('%I.%I', $1::text, $2::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .expect("read columns");
    assert!(
        !cols.is_empty() && cols.len() <= 50,
        "{schema}.{table}: {} columns (1..=50 supported)",
        cols.len()
    );
    let mut parts = Vec::new();
    for c in &cols {
        let name: String = c.get(0);
        let typ: String = c.get(1);
        let kind: String = c.get(2);
        let col = format!("t.{}", quote_ident(&name));
        // The type's output function, as wal2json uses it (a ::text cast would trim char(n)).
        let text =
            format!("CASE WHEN {col} IS NULL THEN NULL ELSE to_json(format('%s', {col})) END");
        let expr = if kind != "b" && kind != "e" {
            // Domains (and anything exotic) arrive as text.
            text
        } else {
            match typ.as_str() {
                "int2" | "int4" | "int8" | "oid" | "bool" => format!("to_json({col})"),
                "float4" | "float8" => {
                    format!("CASE WHEN {col}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE to_json({col}) END")
                }
                "numeric" => format!("CASE WHEN {col}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE to_json({col}::text) END"),
                "json" | "jsonb" => format!("{col}::json"),
                _ => text,
            }
        };
        parts.push(format!("{}, {expr}", quote_literal(&name)));
    }
    let sql = format!(
        "SELECT json_build_object({})::text FROM {} t",
        parts.join(", "),
        qualified(schema, table)
    );
    source
        .batch_execute(&format!("BEGIN; {OUTPUT_SETTINGS}"))
        .await
        .unwrap();
    let rows = source.query(&sql, &[]).await;
    source.batch_execute("COMMIT").await.unwrap();
    rows.expect("read source rows")
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).expect("row json"))
        .collect()
}

/// Does `row` contain every field of `subset` with an equal value?
fn contains_fields(row: &Value, subset: &Value) -> bool {
    match (row.as_object(), subset.as_object()) {
        (Some(r), Some(s)) => s.iter().all(|(k, v)| r.get(k) == Some(v)),
        _ => false,
    }
}

/// Key of `img` under the key columns `cols`, as canonical JSON text; None if a column is missing.
fn key_text(img: &Value, cols: &[String]) -> Option<String> {
    let obj = img.as_object()?;
    let vals: Option<Vec<&Value>> = cols.iter().map(|c| obj.get(c)).collect();
    Some(serde_json::to_string(&vals?).unwrap())
}

fn key_columns(pk: &Value) -> Vec<String> {
    pk.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Replay entries (of one table, in id order) into the multiset of rows they imply, checking the
/// per-action shape rules on the way: rows with a primary key are tracked by key (an INSERT of a
/// present key is a duplicate), rows without one as a multiset matched on the whole before image.
pub fn replay(entries: &[Entry]) -> Result<Vec<Value>, String> {
    replay_partitioned(entries, &HashMap::new())
}

/// [`replay`] for a partitioned table, whose entries name the partition in `details.partition`:
/// a TRUNCATE of one partition empties only the rows that were last written to it or to a
/// partition below it. `ancestors` maps each partition (`schema.name`) to the partitions above it.
pub fn replay_partitioned(
    entries: &[Entry],
    ancestors: &HashMap<String, Vec<String>>,
) -> Result<Vec<Value>, String> {
    // Each replayed row with the partition its last entry put it in.
    let mut keyed: HashMap<String, (Value, Option<String>)> = HashMap::new();
    let mut keyless: Vec<(Value, Option<String>)> = Vec::new();
    for e in entries {
        let partition = e
            .details
            .get("partition")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ctx = || format!("entry {} ({} {}.{})", e.id, e.action, e.schema, e.table);
        // Every primary_key field must agree with the image it was taken from.
        let check_key = |img: &Value| -> Result<(), String> {
            if !e.primary_key.is_null()
                && (!e.primary_key.is_object() || !contains_fields(img, &e.primary_key))
            {
                return Err(format!(
                    "{}: primary_key {} does not match the image {}",
                    ctx(),
                    e.primary_key,
                    img
                ));
            }
            Ok(())
        };
        let cols = key_columns(&e.primary_key);
        // Take the row the before image designates out of the replayed table.
        let mut take = |before: &Value| -> Result<Value, String> {
            if cols.is_empty() {
                let at = keyless
                    .iter()
                    .position(|(r, _)| contains_fields(r, before))
                    .ok_or_else(|| {
                        format!("{}: no replayed row matches before {}", ctx(), before)
                    })?;
                Ok(keyless.remove(at).0)
            } else {
                let k = key_text(before, &cols).ok_or_else(|| {
                    format!("{}: before {} lacks key columns {cols:?}", ctx(), before)
                })?;
                let (row, _) = keyed.remove(&k).ok_or_else(|| {
                    format!("{}: no replayed row with key {k} (before {before})", ctx())
                })?;
                if !contains_fields(&row, before) {
                    return Err(format!(
                        "{}: before {} differs from the replayed row {}",
                        ctx(),
                        before,
                        row
                    ));
                }
                Ok(row)
            }
        };
        match e.action.as_str() {
            "INSERT" | "UPDATE" => {
                if !e.after.is_object() {
                    return Err(format!("{}: no after image: {e:?}", ctx()));
                }
                check_key(&e.after)?;
                if e.action == "INSERT" {
                    if !e.before.is_null() || !e.changed_columns.is_null() {
                        return Err(format!(
                            "{}: INSERT must have before=null, changed_columns=null: {e:?}",
                            ctx()
                        ));
                    }
                } else {
                    let by = if e.before.is_object() {
                        e.before.clone()
                    } else {
                        e.primary_key.clone()
                    };
                    take(&by)?;
                }
                if cols.is_empty() {
                    keyless.push((e.after.clone(), partition.clone()));
                } else {
                    let k = key_text(&e.after, &cols).unwrap();
                    if keyed
                        .insert(k.clone(), (e.after.clone(), partition.clone()))
                        .is_some()
                    {
                        return Err(format!(
                            "{}: key {k} is already present (a duplicate?)",
                            ctx()
                        ));
                    }
                }
            }
            "DELETE" => {
                if !e.after.is_null() || !e.before.is_object() || !e.changed_columns.is_null() {
                    return Err(format!("{}: DELETE must have after=null, before=object, changed_columns=null: {e:?}", ctx()));
                }
                check_key(&e.before)?;
                take(&e.before)?;
            }
            "TRUNCATE" => {
                if !(e.primary_key.is_null()
                    && e.before.is_null()
                    && e.after.is_null()
                    && e.changed_columns.is_null())
                {
                    return Err(format!("{}: TRUNCATE must have primary_key/before/after/changed_columns null: {e:?}", ctx()));
                }
                match &partition {
                    None => {
                        keyed.clear();
                        keyless.clear();
                    }
                    Some(p) => {
                        let emptied = |row_partition: &Option<String>| {
                            row_partition.as_ref().is_some_and(|rp| {
                                rp == p || ancestors.get(rp).is_some_and(|a| a.contains(p))
                            })
                        };
                        keyed.retain(|_, (_, rp)| !emptied(rp));
                        keyless.retain(|(_, rp)| !emptied(rp));
                    }
                }
            }
            // A schema change: no row changes; DDL tests check these entries themselves.
            "DDL" => {}
            other => return Err(format!("{}: unknown action {other:?}", ctx())),
        }
    }
    Ok(keyed
        .into_values()
        .chain(keyless)
        .map(|(row, _)| row)
        .collect())
}

/// Each partition below `schema.table` (`schema.name`) with the partitions above it, from the
/// source's catalog; empty for a table that is not partitioned.
pub async fn partition_ancestors(
    source: &Client,
    schema: &str,
    table: &str,
) -> HashMap<String, Vec<String>> {
    let rows = source
        .query(
            "SELECT format('%s.%s', n.nspname, c.relname),
                    array(SELECT format('%s.%s', an.nspname, ac.relname)
                          FROM pg_partition_ancestors(t.relid) a(relid)
                          JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
                          WHERE a.relid <> t.relid)
             FROM pg_partition_tree(format('%I.%I', $1::text, $2::text)::regclass) t
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE t.level > 0",
            &[&schema, &table],
        )
        .await
        .expect("read the partition tree");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Replay the store's entries for `schema.table` and compare with the table's actual rows.
pub async fn assert_store_matches_source(
    source: &Client,
    store: &Client,
    schema: &str,
    table: &str,
) {
    let entries = table_entries(store, schema, table).await;
    let ancestors = partition_ancestors(source, schema, table).await;
    let replayed = replay_partitioned(&entries, &ancestors)
        .unwrap_or_else(|e| panic!("replaying {schema}.{table}: {e}"));
    let actual = source_rows(source, schema, table).await;
    let canon = |rows: &[Value]| {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        v.sort();
        v
    };
    let (replayed, actual) = (canon(&replayed), canon(&actual));
    if replayed != actual {
        let mut missing: BTreeMap<&String, i64> = BTreeMap::new();
        for r in &actual {
            *missing.entry(r).or_default() += 1;
        }
        for r in &replayed {
            *missing.entry(r).or_default() -= 1;
        }
        let only_source: Vec<_> = missing.iter().filter(|(_, n)| **n > 0).take(10).collect();
        let only_store: Vec<_> = missing.iter().filter(|(_, n)| **n < 0).take(10).collect();
        panic!(
            "{schema}.{table}: replaying {} entries gives {} rows, the source has {} rows\n\
             in the source but not the replay (first 10): {only_source:#?}\n\
             in the replay but not the source (first 10): {only_store:#?}",
            entries.len(),
            replayed.len(),
            actual.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// A JSON object with its keys in document order and each value as the exact JSON text.
#[derive(Debug)]
pub struct OrderedObject(pub Vec<(String, Box<RawValue>)>);

impl OrderedObject {
    pub fn parse(text: &str) -> OrderedObject {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"))
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The exact JSON text of `key`'s value.
    pub fn raw(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.get())
            .unwrap_or_else(|| panic!("no key {key:?} in {:?}", self.keys()))
    }

    pub fn value(&self, key: &str) -> Value {
        serde_json::from_str(self.raw(key)).unwrap()
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(OrderedObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// The top-level fields of a jsonl export line, in the order the spec fixes.
pub const EXPORT_FIELDS: [&str; 13] = [
    "id",
    "committed_at",
    "xid",
    "lsn",
    "schema",
    "table",
    "action",
    "primary_key",
    "before",
    "after",
    "changed_columns",
    "context",
    "details",
];

/// One line of `export --format jsonl`.
#[derive(Debug)]
pub struct ExportLine {
    pub raw: String,
    pub fields: OrderedObject,
    pub value: Value,
}

impl ExportLine {
    pub fn id(&self) -> i64 {
        self.value["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("export line without integer id: {}", self.raw))
    }
}

pub fn parse_jsonl(text: &str) -> Vec<ExportLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| ExportLine {
            raw: l.to_string(),
            fields: OrderedObject::parse(l),
            value: serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A pgbench-like workload
// ---------------------------------------------------------------------------------------------

/// A small bank in the source database: `bank_accounts`, `bank_tellers`, `bank_branches` with
/// primary keys and `bank_history` without one (REPLICA IDENTITY FULL).
pub mod bank {
    use super::*;

    pub const ACCOUNTS: i64 = 1000;
    pub const TELLERS: i64 = 10;
    pub const BRANCHES: i64 = 1;
    pub const TABLES: [&str; 4] = [
        "bank_accounts",
        "bank_tellers",
        "bank_branches",
        "bank_history",
    ];

    /// Create the (empty) tables. Run before `pgtrail setup` or after; they start empty either way.
    pub async fn create(source: &Client) {
        source
            .batch_execute(
                "CREATE TABLE bank_branches (bid int PRIMARY KEY, bbalance bigint NOT NULL, filler text);
                 CREATE TABLE bank_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance bigint NOT NULL, filler text);
                 CREATE TABLE bank_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance bigint NOT NULL, filler text);
                 CREATE TABLE bank_history (tid int, bid int, aid int, delta int, mtime timestamptz, filler text);
                 ALTER TABLE bank_history REPLICA IDENTITY FULL;",
            )
            .await
            .expect("create bank tables");
    }

    /// Fill the tables (captured: these are INSERTs the store must hold).
    pub async fn load(source: &Client) {
        source
            .batch_execute(&format!(
                "INSERT INTO bank_branches SELECT b, 0, 'branch' FROM generate_series(1, {BRANCHES}) b;
                 INSERT INTO bank_tellers SELECT t, 1, 0, 'teller' FROM generate_series(1, {TELLERS}) t;
                 INSERT INTO bank_accounts SELECT a, 1, 0, 'account ' || a FROM generate_series(1, {ACCOUNTS}) a;"
            ))
            .await
            .expect("load bank tables");
    }

    /// Run `txns` tpcb-like transactions on a new connection to `url`. Each commits three UPDATEs
    /// and one INSERT. Returns the number committed (always `txns`; any error panics).
    pub async fn run(url: String, txns: u64, seed: u64) -> u64 {
        run_while(url, seed, move |done| done < txns).await
    }

    /// Run tpcb-like transactions (as [`run`]) until `stop` is set, at least `min` of them.
    /// Returns how many committed. For tests that must still be writing at some later point,
    /// however fast the daemon is.
    pub async fn run_until(
        url: String,
        seed: u64,
        min: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> u64 {
        run_while(url, seed, move |done| {
            done < min || !stop.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await
    }

    async fn run_while(url: String, seed: u64, mut more: impl FnMut(u64) -> bool) -> u64 {
        let client = connect(&url).await.expect("bank client");
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            | 1;
        let mut next = move |n: i64| -> i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as i64
        };
        let mut done = 0u64;
        while more(done) {
            let aid = next(ACCOUNTS) + 1;
            let tid = next(TELLERS) + 1;
            let bid = next(BRANCHES) + 1;
            let delta = next(10000) - 5000;
            let delta = if delta == 0 { 1 } else { delta };
            client
                .batch_execute(&format!(
                    "BEGIN;
                     UPDATE bank_accounts SET abalance = abalance + {delta} WHERE aid = {aid};
                     UPDATE bank_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};
                     UPDATE bank_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};
                     INSERT INTO bank_history VALUES ({tid}, {bid}, {aid}, {delta}, now(), 'h');
                     COMMIT;"
                ))
                .await
                .expect("bank transaction");
            done += 1;
        }
        done
    }

    /// Exact expected counts after `load` and `txns` transactions, then compare every table.
    pub async fn assert_store_matches(source: &Client, store: &Client, txns: i64) {
        assert_counts(
            store,
            "public",
            "bank_accounts",
            Counts::new(ACCOUNTS, txns, 0, 0),
        )
        .await;
        assert_counts(
            store,
            "public",
            "bank_tellers",
            Counts::new(TELLERS, txns, 0, 0),
        )
        .await;
        assert_counts(
            store,
            "public",
            "bank_branches",
            Counts::new(BRANCHES, txns, 0, 0),
        )
        .await;
        assert_counts(store, "public", "bank_history", Counts::new(txns, 0, 0, 0)).await;
        for t in TABLES {
            assert_store_matches_source(source, store, "public", t).await;
        }
    }
}
