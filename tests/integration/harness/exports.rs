//! For the export tests: synthetic entries written straight into the store, and a watch on the
//! temporary directories an XLSX export makes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

/// Inserts `n` synthetic UPDATE entries of table `public.<table>` into the store, one second
/// apart and ending now, about 500 bytes each as JSON Lines (a key, before and after images with
/// a note of 128 characters, one changed column, a context with an actor).
pub async fn bulk_entries(store: &Client, table: &str, n: i64) {
    store
        .execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, \
                 primary_key, before, after, changed_columns, context) \
             SELECT now() - make_interval(secs => ($2::int - g)::float8), 5000 + g / 4, '0/1'::pg_lsn, 'public', $1, 'UPDATE', \
                    json_build_object('id', g), \
                    json_build_object('id', g, 'status', 'new', 'note', repeat(md5(g::text), 4)), \
                    json_build_object('id', g, 'status', 'paid', 'note', repeat(md5(g::text), 4)), \
                    '[\"status\"]'::json, \
                    json_build_object('db_user', 'app', 'client_addr', '10.0.0.7', 'actor', 'user' || (g % 97)) \
             FROM generate_series(1, $2::int) g",
            &[&table, &(n as i32)],
        )
        .await
        .expect("insert synthetic entries");
}

/// What [`ScratchWatch`] saw: each directory that appeared in the watched directory, with its
/// permission bits, and how many of the files the process held open were inside one of them.
#[derive(Debug, Default, Clone)]
pub struct ScratchSeen {
    pub dirs: BTreeMap<PathBuf, u32>,
    pub open_files_inside: usize,
}

/// Looks at a directory every few milliseconds, from a thread of its own, until stopped: the
/// directories made in it and the files process `pid` holds open below it (from /proc/PID/fd;
/// a file created unlinked still shows its directory there).
pub struct ScratchWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ScratchSeen>,
}

impl ScratchWatch {
    pub fn start(base: &Path, pid: u32) -> ScratchWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let base = base.to_owned();
        let thread = std::thread::spawn(move || {
            let mut seen = ScratchSeen::default();
            let fds = format!("/proc/{pid}/fd");
            loop {
                let done = flag.load(Ordering::SeqCst);
                for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                    if let Ok(meta) = entry.metadata() {
                        if meta.is_dir() {
                            seen.dirs
                                .insert(entry.path(), meta.permissions().mode() & 0o7777);
                        }
                    }
                }
                let inside = std::fs::read_dir(&fds)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| {
                        target.starts_with(&base) && target.parent() != Some(base.as_path())
                    })
                    .count();
                seen.open_files_inside = seen.open_files_inside.max(inside);
                if done {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        ScratchWatch { stop, thread }
    }

    /// Stops watching (after one last look) and says what was seen.
    pub fn stop(self) -> ScratchSeen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the watch thread")
    }
}

/// The names in `dir`, for asserting that nothing is left there.
pub fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
