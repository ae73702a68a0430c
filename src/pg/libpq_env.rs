//! What libpq reads from the process besides the connection string: the
//! `PG*` environment variables pgtrail honours, the home directory (for
//! `~/.pgpass` and `~/.pg_service.conf`) and the operating-system user name
//! (the default role). Taken once into a [`LibpqEnv`] so that parsing can be
//! tested with any environment, and so that every connection of one process
//! resolves from the same snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The environment variables read, with the connection parameter each one
/// stands for, in the order libpq documents them.
pub const VARIABLES: &[(&str, &str)] = &[
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGPASSFILE", "passfile"),
    ("PGSERVICE", "service"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
];

/// Variables that name files rather than connection parameters.
const FILE_VARIABLES: &[&str] = &["PGSERVICEFILE", "PGSYSCONFDIR"];

/// Where Debian's libpq (built with `--sysconfdir=/etc/postgresql-common`)
/// looks for the system-wide `pg_service.conf` when `PGSYSCONFDIR` is unset.
pub const SYSCONFDIR: &str = "/etc/postgresql-common";

/// The Unix-socket directory Debian's libpq connects to when no host is
/// given anywhere (upstream's default is /tmp).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// A snapshot of what libpq would read from the process.
#[derive(Debug, Clone, Default)]
pub struct LibpqEnv {
    /// The variables of [`VARIABLES`] and [`FILE_VARIABLES`] that are set and not empty.
    vars: BTreeMap<&'static str, String>,
    home: Option<PathBuf>,
    os_user: Option<String>,
}

impl LibpqEnv {
    /// The running process's environment. An empty variable counts as unset,
    /// and so does one that is not valid UTF-8.
    pub fn from_process() -> LibpqEnv {
        let names = VARIABLES
            .iter()
            .map(|(v, _)| *v)
            .chain(FILE_VARIABLES.iter().copied());
        let vars = names
            .filter_map(|name| Some((name, std::env::var(name).ok().filter(|v| !v.is_empty())?)))
            .collect();
        let account = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten();
        // $HOME first, as libpq does; the account's home when it is unset.
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| account.as_ref().map(|a| a.dir.clone()));
        LibpqEnv {
            vars,
            home,
            os_user: account.map(|a| a.name),
        }
    }

    /// An environment made of `vars`, `home` and `os_user`, for tests.
    #[cfg(test)]
    pub fn with(vars: &[(&'static str, &str)], home: Option<&std::path::Path>) -> LibpqEnv {
        LibpqEnv {
            vars: vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            home: home.map(PathBuf::from),
            os_user: Some("osuser".into()),
        }
    }

    /// The value of the variable `name`, when set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The name of the account the process runs as: libpq's default role.
    pub fn os_user(&self) -> Option<&str> {
        self.os_user.as_deref()
    }

    /// The per-user service file: `PGSERVICEFILE`, else `~/.pg_service.conf`.
    pub fn user_service_file(&self) -> Option<PathBuf> {
        match self.var("PGSERVICEFILE") {
            Some(file) => Some(PathBuf::from(file)),
            None => self.home.as_ref().map(|h| h.join(".pg_service.conf")),
        }
    }

    /// The system-wide service file: `pg_service.conf` in `PGSYSCONFDIR`, else in [`SYSCONFDIR`].
    pub fn system_service_file(&self) -> PathBuf {
        PathBuf::from(self.var("PGSYSCONFDIR").unwrap_or(SYSCONFDIR)).join("pg_service.conf")
    }

    /// `~/.pgpass`: the password file when neither `passfile` nor `PGPASSFILE` names one.
    pub fn default_passfile(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".pgpass"))
    }
}
