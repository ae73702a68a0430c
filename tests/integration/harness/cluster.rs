//! Private PostgreSQL 15 clusters: each an `initdb`'d server in its own temp dir on its own TCP
//! port (tests run in parallel threads, so nothing is shared), stopped and removed on drop.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;
use tokio_postgres::Client;

use super::{connect, new_temp_dir, quote_ident, quote_literal, read_lossy, tail, wait_until, Pki};

/// Where Debian's PostgreSQL 15 server binaries live.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

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

/// harness defaults (so they win), e.g. `wal_level=replica` or `dynamic_library_path=/nonexistent`.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub settings: Vec<(String, String)>,
    pub tls: Option<ServerTls>,
}

impl ClusterOptions {
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Start with `ssl = on`, serving `cert` (key `key`); `role` must then log in over TLS,
    /// with scram-sha-256 (so channel binding is offered), see [`Cluster::enable_tls`].
    pub fn tls(mut self, cert: &Path, key: &Path, role: &str) -> Self {
        self.tls = Some(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            role: role.to_owned(),
        });
        self
    }
}

/// The server's certificate and key, and the role that may only log in over TLS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub role: String,
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
        if let Some(tls) = &opts.tls {
            install_tls(&data, tls);
            conf.push_str("ssl = on\n");
        }
        append(&data.join("postgresql.conf"), &conf);

        // Password lines first: pg_hba.conf is read top-down and the first match wins.
        prepend_to_hba(
            &data,
            "# pgtrail integration tests: these roles must use passwords\n\
             host all         md5_user   127.0.0.1/32 md5\n\
             host replication md5_user   127.0.0.1/32 md5\n\
             host all         scram_user 127.0.0.1/32 scram-sha-256\n\
             host replication scram_user 127.0.0.1/32 scram-sha-256\n\n",
        );

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

    /// A connection string over the Unix socket (key=value form), as `user`.
    pub fn socket_conninfo(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    /// A superuser client on `db`; its connection task is spawned on the current runtime.
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

    /// Turns TLS on, serving a certificate for `localhost` from a fresh private CA ([`Pki`]),
    /// and makes `role` unable to log in without TLS; over TLS it logs in with scram-sha-256.
    pub async fn enable_tls(&self, role: &str) {
        let pki = Pki::new();
        let tls = ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            role: role.to_owned(),
        };
        install_tls(&self.data, &tls);
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

/// Copies the certificate and key to where the server looks for them (`server.crt` and
/// `server.key` in the data directory, the key private to the server's user), and makes
/// `tls.role` log in over TLS only, with scram-sha-256.
fn install_tls(data: &Path, tls: &ServerTls) {
    let (crt, key) = (data.join("server.crt"), data.join("server.key"));
    fs::copy(&tls.cert, &crt).expect("copy the server certificate");
    fs::copy(&tls.key, &key).expect("copy the server key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    if is_root() {
        let (uid, gid) = postgres_ids();
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid))
                .expect("chown certificate to postgres");
        }
    }
    let role = &tls.role;
    prepend_to_hba(
        data,
        &format!(
            "hostnossl all         {role} 127.0.0.1/32 reject\n\
             hostnossl replication {role} 127.0.0.1/32 reject\n\
             hostssl   all         {role} 127.0.0.1/32 scram-sha-256\n\
             hostssl   replication {role} 127.0.0.1/32 scram-sha-256\n"
        ),
    );
}

/// Puts `lines` before the data directory's pg_hba.conf, rewritten in place so that the file
/// keeps its owner.
fn prepend_to_hba(data: &Path, lines: &str) {
    let hba_path = data.join("pg_hba.conf");
    let original = fs::read_to_string(&hba_path).expect("read pg_hba.conf");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&hba_path)
        .expect("open pg_hba.conf");
    f.write_all(format!("{lines}{original}").as_bytes())
        .unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}
