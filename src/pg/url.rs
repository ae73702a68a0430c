//! [`PgUrl`]: a PostgreSQL connection string (libpq URL or key=value), parsed
//! and checked for what pgtrail needs (a host and a user).

use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct PgUrl(tokio_postgres::Config);

impl PgUrl {
    /// Parses `url`; a password missing from it is taken from `PGPASSWORD`, as libpq does.
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() {
            return Err(
                "the URL names no host; write e.g. postgres://user@127.0.0.1:5432/dbname".into(),
            );
        }
        if config.get_user().is_none() {
            return Err(
                "the URL names no user; write e.g. postgres://user@127.0.0.1:5432/dbname".into(),
            );
        }
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_owned();
            config.dbname(user);
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(PgUrl(config))
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.0
    }

    pub fn dbname(&self) -> &str {
        self.0.get_dbname().unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.0.get_user().unwrap_or_default()
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let mut config = self.0.clone();
        config.dbname(dbname);
        PgUrl(config)
    }

    /// Where this connects, for messages: `127.0.0.1:5432` or the socket directory.
    pub fn endpoint(&self) -> String {
        let port = self.0.get_ports().first().copied().unwrap_or(5432);
        match self.0.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            Some(tokio_postgres::config::Host::Unix(p)) => {
                format!("{}/.s.PGSQL.{port}", p.display())
            }
            None => format!("?:{port}"),
        }
    }
}
