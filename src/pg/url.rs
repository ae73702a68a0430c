//! [`PgUrl`]: a PostgreSQL connection string (libpq URL or key=value), with
//! what it leaves out filled in as libpq would (service file, `PG*`
//! variables, defaults: see [`super::params`]), checked for what pgtrail
//! needs, with its TLS settings (`sslmode`, `sslrootcert`, `channel_binding`)
//! and the password file to read when connecting.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::{ChannelBinding, Host};

use super::libpq_env::LibpqEnv;
use super::tls::{Tls, TlsMode};

/// How long a connection attempt may take when nothing says (libpq waits forever).
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    /// The password file, read at each connection; None when the password is known already.
    passfile: Option<PathBuf>,
}

impl PgUrl {
    /// Parses `url`, filling in what it leaves out from this process's environment.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::resolve(url, &LibpqEnv::from_process())
    }

    /// Parses `url`, filling in what it leaves out from `env`.
    pub fn resolve(url: &str, env: &LibpqEnv) -> Result<Self, String> {
        let mut resolved = super::params::resolve(url, env)?;
        let sslmode = resolved.params.remove("sslmode");
        let sslrootcert = resolved.params.remove("sslrootcert");
        let whence = resolved.provenance();
        let rest = super::conninfo::render(&resolved.params);
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("not a valid PostgreSQL connection string: {e}{whence}"))?;
        let tls = Tls::from_params(sslmode.as_deref(), sslrootcert.as_deref())
            .map_err(|e| format!("{e}{whence}"))?;
        if tls.mode() == TlsMode::Disable && config.get_channel_binding() == ChannelBinding::Require
        {
            return Err(format!(
                "channel_binding=require needs TLS, but sslmode=disable turns it off; \
                 use sslmode=verify-full (or require){whence}"
            ));
        }
        config.ssl_mode(tls.mode().for_tokio_postgres());
        if config.get_hosts().is_empty() {
            return Err(
                "the URL names no host; write e.g. postgres://user@127.0.0.1:5432/dbname".into(),
            );
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        Ok(PgUrl {
            config,
            tls,
            passfile: resolved.passfile,
        })
    }

    /// The client configuration for one connection: the password, when none
    /// was given otherwise, read from the password file now, as libpq does.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        if let Some(file) = &self.passfile {
            let host = match config.get_hosts().first() {
                Some(Host::Tcp(name)) => name.clone(),
                Some(Host::Unix(dir)) => dir.to_string_lossy().into_owned(),
                None => String::new(),
            };
            let target = super::pgpass::Target {
                host: &host,
                port: config.get_ports().first().copied().unwrap_or(5432),
                dbname: self.dbname(),
                user: self.user(),
            };
            if let Some(password) = super::pgpass::lookup(file, &target) {
                config.password(password);
            }
        }
        config
    }

    /// The password file read when connecting, if any: for messages.
    pub fn passfile(&self) -> Option<&std::path::Path> {
        self.passfile.as_deref()
    }

    /// The TLS settings and the client configuration they make.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let mut config = self.config.clone();
        config.dbname(dbname);
        PgUrl {
            config,
            tls: self.tls.clone(),
            passfile: self.passfile.clone(),
        }
    }

    /// Where this connects, for messages: `127.0.0.1:5432` or the socket directory.
    pub fn endpoint(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => format!("{h}:{port}"),
            Some(Host::Unix(p)) => {
                format!("{}/.s.PGSQL.{port}", p.display())
            }
            None => format!("?:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_read_in_both_forms() {
        let url = PgUrl::parse("postgres://u@db/app?sslmode=require&application_name=x").unwrap();
        assert_eq!(url.tls().mode(), TlsMode::Require);
        assert_eq!(
            url.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(url.config().get_application_name(), Some("x"));
        let pairs = PgUrl::parse("host=db user=u sslmode=allow channel_binding=require").unwrap();
        assert_eq!(pairs.tls().mode(), TlsMode::Allow);
        assert_eq!(
            pairs.config().get_channel_binding(),
            ChannelBinding::Require
        );
        assert_eq!(pairs.with_dbname("other").tls().mode(), TlsMode::Allow);
    }

    #[test]
    fn the_password_file_is_read_when_connecting_for_the_database_connected_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "db:5433:shop:app:one\ndb:5433:pgtrail:app:two\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = LibpqEnv::with(&[("PGPASSFILE", file.to_str().unwrap())], None);
        let url = PgUrl::resolve("host=db port=5433 user=app dbname=shop", &env).unwrap();
        assert_eq!(url.passfile(), Some(file.as_path()));
        assert_eq!(url.config().get_password(), Some(&b"one"[..]));
        let store = url.with_dbname("pgtrail");
        assert_eq!(store.config().get_password(), Some(&b"two"[..]));
        // Changed in the file: used from the next connection on.
        std::fs::write(&file, "*:*:*:*:three\n").unwrap();
        assert_eq!(url.config().get_password(), Some(&b"three"[..]));
        // A password given otherwise wins, and the file is not read.
        let given = PgUrl::resolve("postgres://app:x@db:5433/shop", &env).unwrap();
        assert_eq!(
            (given.passfile(), given.config().get_password()),
            (None, Some(&b"x"[..]))
        );
        let debug = format!("{:?}", given);
        assert!(!debug.contains("\"x\""), "{debug}");
    }

    #[test]
    fn what_the_url_leaves_out_comes_from_the_environment() {
        let env = LibpqEnv::with(&[("PGPORT", "6543"), ("PGSSLMODE", "require")], None);
        let url = PgUrl::resolve("postgres:///shop", &env).unwrap();
        assert_eq!(url.endpoint(), "/var/run/postgresql/.s.PGSQL.6543");
        assert_eq!((url.user(), url.dbname()), ("osuser", "shop"));
        assert_eq!(url.tls().mode(), TlsMode::Require);
        // A URL that gives everything is what it says.
        let url = PgUrl::resolve("postgres://u@db:5432/app?sslmode=disable", &env).unwrap();
        assert_eq!(
            (url.endpoint(), url.tls().mode()),
            ("db:5432".into(), TlsMode::Disable)
        );
        let e = PgUrl::resolve(
            "postgres://u@db/app",
            &LibpqEnv::with(&[("PGPORT", "x")], None),
        )
        .unwrap_err();
        assert!(e.contains("port") && e.contains("port from PGPORT"), "{e}");
        let e = PgUrl::resolve("", &LibpqEnv::with(&[("PGSSLMODE", "on")], None)).unwrap_err();
        assert!(
            e.contains("sslmode=on") && e.contains("sslmode from PGSSLMODE"),
            "{e}"
        );
    }

    #[test]
    fn channel_binding_required_without_tls_is_refused() {
        let err = PgUrl::parse("postgres://u@db/app?sslmode=disable&channel_binding=require")
            .unwrap_err();
        assert!(err.contains("channel_binding=require needs TLS"), "{err}");
    }

    #[test]
    fn a_ca_file_is_read_when_the_url_is() {
        let err = PgUrl::parse("postgres://u@db/app?sslmode=verify-full&sslrootcert=/no/ca.pem")
            .unwrap_err();
        assert!(err.contains("/no/ca.pem"), "{err}");
    }
}
