//! [`PgUrl`]: a PostgreSQL connection string (libpq URL or key=value), parsed
//! and checked for what pgtrail needs (a host and a user), with its TLS
//! settings (`sslmode`, `sslrootcert`, `channel_binding`).

use std::str::FromStr;

use tokio_postgres::config::ChannelBinding;

use super::tls::{Tls, TlsMode};

#[derive(Debug, Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    tls: Tls,
}

impl PgUrl {
    /// Parses `url`; a password missing from it is taken from `PGPASSWORD`, as libpq does.
    pub fn parse(url: &str) -> Result<Self, String> {
        let taken = super::conninfo::take(url, &["sslmode", "sslrootcert"])?;
        let mut config = tokio_postgres::Config::from_str(&taken.rest)
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        let param = |name: &str| taken.values.get(name).map(String::as_str);
        let tls = Tls::from_params(param("sslmode"), param("sslrootcert"))?;
        if tls.mode() == TlsMode::Disable && config.get_channel_binding() == ChannelBinding::Require
        {
            return Err(
                "channel_binding=require needs TLS, but sslmode=disable turns it off; \
                        use sslmode=verify-full (or require)"
                    .into(),
            );
        }
        config.ssl_mode(tls.mode().for_tokio_postgres());
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
        Ok(PgUrl { config, tls })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
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
        }
    }

    /// Where this connects, for messages: `127.0.0.1:5432` or the socket directory.
    pub fn endpoint(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            Some(tokio_postgres::config::Host::Unix(p)) => {
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
