//! The password file (`~/.pgpass`, `PGPASSFILE` or `passfile=`), read as
//! libpq reads it: lines `hostname:port:database:username:password`, `*`
//! matching anything in the first four fields, `\:` and `\\` for a colon and
//! a backslash, `#` starting a comment line, the first matching line winning.
//! A file that group or others may read, or that is not a plain file, is
//! ignored with a warning saying how to fix it, as libpq does.
//!
//! The file is read when a connection is opened, not when the config is: a
//! password changed in it is used from the next connection on, as with libpq.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::libpq_env::DEFAULT_SOCKET_DIR;

/// What a password is looked up for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The host name, or the socket directory for a Unix-socket connection.
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// Why a password file was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotPlainFile,
    /// The file's mode, which gives group or others some access.
    OpenToOthers(u32),
    Unreadable(String),
}

impl Refusal {
    /// The warning for `file`, with how to fix it.
    fn warning(&self, file: &Path) -> String {
        let file = file.display();
        match self {
            Refusal::NotPlainFile => {
                format!("password file {file} is not a plain file; it is ignored")
            }
            Refusal::OpenToOthers(mode) => format!(
                "password file {file} has group or world access (mode {mode:04o}); it is ignored \
                 until its permissions are u=rw (0600) or less: chmod 0600 {file}"
            ),
            Refusal::Unreadable(why) => format!(
                "cannot read the password file {file} ({why}); it is ignored: make it readable \
                 by the user pgtrail runs as, or point PGPASSFILE elsewhere"
            ),
        }
    }
}

/// The password for `target` from the file at `path`: None when the file
/// does not exist or has no matching line. A file refused is logged once per
/// file and reason (a daemon reconnecting would otherwise repeat it).
pub fn lookup(path: &Path, target: &Target<'_>) -> Option<String> {
    match read(path) {
        Ok(Some(text)) => find(&text, target),
        Ok(None) => None,
        Err(refusal) => {
            warn_once(path, &refusal);
            None
        }
    }
}

/// The file's text; None when it does not exist.
fn read(path: &Path) -> Result<Option<String>, Refusal> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Refusal::Unreadable(e.to_string())),
    };
    if !meta.is_file() {
        return Err(Refusal::NotPlainFile);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Refusal::OpenToOthers(mode));
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| Refusal::Unreadable(e.to_string()))
}

fn warn_once(path: &Path, refusal: &Refusal) {
    static WARNED: Mutex<BTreeSet<(PathBuf, String)>> = Mutex::new(BTreeSet::new());
    let warning = refusal.warning(path);
    let first = WARNED
        .lock()
        .map(|mut w| w.insert((path.to_owned(), warning.clone())))
        .unwrap_or(true);
    if first {
        tracing::warn!("{warning}");
    }
}

/// The password of the first line of `text` that matches `target`.
pub fn find(text: &str, target: &Target<'_>) -> Option<String> {
    // As libpq: a connection through the default socket directory is "localhost".
    let host = match target.host {
        "" | DEFAULT_SOCKET_DIR => "localhost",
        host => host,
    };
    let port = target.port.to_string();
    let wanted = [host, port.as_str(), target.dbname, target.user];
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let (patterns, password) = split(line)?;
            let matches = patterns.iter().zip(wanted).all(|(p, want)| match p {
                Pattern::Any => true,
                Pattern::Exact(text) => text == want,
            });
            matches.then_some(password)
        })
}

/// One of a line's first four fields.
#[derive(Debug, PartialEq, Eq)]
enum Pattern {
    /// `*` as written (an escaped `\*` is a literal star).
    Any,
    Exact(String),
}

/// A line's four patterns and its password, unescaped; None for a line with
/// fewer than five fields. The password is the rest of the line, colons included.
fn split(line: &str) -> Option<([Pattern; 4], String)> {
    let mut patterns = Vec::with_capacity(4);
    let mut field = String::new();
    let mut escaped = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                field.extend(chars.next());
                escaped = true;
            }
            ':' if patterns.len() < 4 => {
                let text = std::mem::take(&mut field);
                patterns.push(match (text.as_str(), escaped) {
                    ("*", false) => Pattern::Any,
                    _ => Pattern::Exact(text),
                });
                escaped = false;
            }
            c => field.push(c),
        }
    }
    Some((patterns.try_into().ok()?, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Target<'a> {
        Target {
            host,
            port,
            dbname,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let text = "# a comment\n\
                    db.example:5432:shop:app:first\n\
                    *:5432:shop:app:second\n\
                    *:*:*:*:any\n";
        let t = |host, port, db, user| find(text, &target(host, port, db, user));
        assert_eq!(
            t("db.example", 5432, "shop", "app").as_deref(),
            Some("first")
        );
        assert_eq!(t("other", 5432, "shop", "app").as_deref(), Some("second"));
        assert_eq!(t("db.example", 5433, "shop", "app").as_deref(), Some("any"));
        assert_eq!(find("a:1:b:c:pw\n", &target("a", 2, "b", "c")), None);
        // A line with fewer than five fields is skipped, not an error.
        assert_eq!(
            find("a:1:b\n*:*:*:*:x", &target("a", 1, "b", "c")).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn escapes_are_undone_and_the_password_may_hold_colons() {
        let text = r"h\:x:5432:d\\b:u:p\:w\\:rest";
        assert_eq!(
            find(text, &target("h:x", 5432, r"d\b", "u")).as_deref(),
            Some(r"p:w\:rest")
        );
        // `\*` is a literal star, not a wildcard.
        let text = r"\*:5432:d:u:pw";
        assert_eq!(find(text, &target("h", 5432, "d", "u")), None);
        assert_eq!(
            find("h:5432:d:u:pw\r\n", &target("h", 5432, "d", "u")).as_deref(),
            Some("pw")
        );
    }

    #[test]
    fn the_default_socket_directory_is_localhost() {
        let text = "localhost:5432:d:u:local\n/tmp/sock:5432:d:u:sock\n";
        assert_eq!(
            find(text, &target(DEFAULT_SOCKET_DIR, 5432, "d", "u")).as_deref(),
            Some("local")
        );
        assert_eq!(
            find(text, &target("/tmp/sock", 5432, "d", "u")).as_deref(),
            Some("sock")
        );
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:pw\n").unwrap();
        let t = target("h", 5432, "d", "u");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&file), Err(Refusal::OpenToOthers(0o644)));
        assert!(Refusal::OpenToOthers(0o644)
            .warning(&file)
            .contains("chmod 0600"));
        assert_eq!(lookup(&file, &t), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&file, &t).as_deref(), Some("pw"));
        assert_eq!(read(dir.path()), Err(Refusal::NotPlainFile));
        assert_eq!(read(&dir.path().join("none")), Ok(None));
    }
}
