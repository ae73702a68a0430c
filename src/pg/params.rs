//! Filling in what a connection string leaves out, in libpq's order: a
//! parameter given in the string wins; then the service it names
//! (`service=`, else `PGSERVICE`) from the service files; then the `PG*`
//! environment variables; then libpq's defaults on Debian (the socket
//! directory /var/run/postgresql, the operating-system user, a database named
//! like the user). The password file is not read here but when connecting
//! (see [`super::pgpass`]), and only when no password was found.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::conninfo::{self, Params};
use super::libpq_env::{LibpqEnv, DEFAULT_SOCKET_DIR, VARIABLES};
use super::service_file;

/// Keywords a service may set that pgtrail applies.
const APPLIED: &[&str] = &[
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "channel_binding",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
];

/// Keywords a service may set that pgtrail leaves aside because it sets
/// them itself on every connection (its own application name and session settings).
const SET_BY_PGTRAIL: &[&str] = &[
    "application_name",
    "fallback_application_name",
    "client_encoding",
    "options",
];

/// libpq's other keywords: they change where or how securely pgtrail would
/// connect, and pgtrail cannot honour them, so a service setting one is refused.
const UNSUPPORTED: &[&str] = &[
    "hostaddr",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "sslcertmode",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "requirepeer",
    "require_auth",
    "gssencmode",
    "gssdelegation",
    "krbsrvname",
    "gsslib",
    "load_balance_hosts",
    "replication",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
];

/// A connection string with the gaps filled in.
#[derive(Debug)]
pub struct Resolved {
    /// Every parameter, `passfile` and `service` taken out.
    pub params: Params,
    /// The password file to read when connecting; None when a password was found already.
    pub passfile: Option<PathBuf>,
    /// Where each parameter not written in the connection string came from, for messages.
    pub origins: BTreeMap<String, String>,
}

impl Resolved {
    /// `" (port from PGPORT, host from service …)"`: what came from outside the
    /// connection string, to add to an error about the whole; empty when nothing did.
    pub fn provenance(&self) -> String {
        if self.origins.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .origins
            .iter()
            .map(|(key, origin)| format!("{key} from {origin}"))
            .collect();
        format!(" (besides the connection string: {})", list.join(", "))
    }
}

/// `text` with what it leaves out taken from `env`'s service files and variables, then libpq's defaults.
pub fn resolve(text: &str, env: &LibpqEnv) -> Result<Resolved, String> {
    let mut params = conninfo::parse(text)?;
    let mut origins = BTreeMap::new();
    let service = params
        .remove("service")
        .map(|name| (name, "service"))
        .or_else(|| {
            env.var("PGSERVICE")
                .map(|name| (name.to_owned(), "PGSERVICE"))
        });
    if let Some((name, named_by)) = service {
        apply_service(&name, env, &mut params, &mut origins)
            .map_err(|e| format!("{e} ({named_by}={name})"))?;
    }
    for (var, keyword) in VARIABLES.iter().filter(|(_, k)| *k != "service") {
        if let (false, Some(value)) = (params.contains_key(*keyword), env.var(var)) {
            params.insert((*keyword).to_owned(), value.to_owned());
            origins.insert((*keyword).to_owned(), (*var).to_owned());
        }
    }
    if !params.contains_key("host") && !params.contains_key("hostaddr") {
        let origin = "libpq's default socket directory";
        default(
            &mut params,
            &mut origins,
            "host",
            DEFAULT_SOCKET_DIR,
            origin,
        );
    }
    if !params.contains_key("user") {
        let Some(user) = env.os_user() else {
            return Err(
                "no user: give one in the URL (postgres://USER@host/db) or set PGUSER".into(),
            );
        };
        default(
            &mut params,
            &mut origins,
            "user",
            user,
            "the operating-system user",
        );
    }
    if !params.contains_key("dbname") {
        let user = params.get("user").cloned().unwrap_or_default();
        let origin = "the user name (libpq's default database)";
        default(&mut params, &mut origins, "dbname", &user, origin);
    }
    let passfile = params
        .remove("passfile")
        .map(PathBuf::from)
        .or_else(|| env.default_passfile())
        .filter(|_| !params.contains_key("password"));
    Ok(Resolved {
        params,
        passfile,
        origins,
    })
}

/// Fills what `params` leaves out from the service `name`; refuses a
/// service that sets what pgtrail cannot honour.
fn apply_service(
    name: &str,
    env: &LibpqEnv,
    params: &mut Params,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let found = service_file::find(name, env)?;
    for setting in found.params {
        let at = || service_file::describe(&found.file, setting.line);
        let (keyword, value) = (setting.keyword.as_str(), setting.value.clone());
        if APPLIED.contains(&keyword) {
            if !params.contains_key(keyword) {
                params.insert(keyword.to_owned(), value);
                origins.insert(keyword.to_owned(), format!("service {name} ({})", at()));
            }
        } else if UNSUPPORTED.contains(&keyword) {
            return Err(format!(
                "service {name} ({}) sets {keyword}, which pgtrail does not support; remove \
                 it, or give pgtrail a service of its own without it",
                at()
            ));
        } else if !SET_BY_PGTRAIL.contains(&keyword) {
            return Err(format!(
                "service {name} ({}): {keyword} is not a connection parameter libpq knows",
                at()
            ));
        }
    }
    Ok(())
}

/// Sets `key` to libpq's default `value`, saying so in `origins`.
fn default(
    params: &mut Params,
    origins: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
    origin: &str,
) {
    params.insert(key.to_owned(), value.to_owned());
    origins.insert(key.to_owned(), origin.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(r: &'a Resolved, key: &str) -> Option<&'a str> {
        r.params.get(key).map(String::as_str)
    }

    /// Asserts that the provenance of `r` (what its messages add) says `what`.
    fn assert_came(r: &Resolved, what: &str) {
        let said = r.provenance();
        assert!(said.contains(what), "{said}");
    }

    #[test]
    fn the_string_wins_over_the_environment_which_fills_the_rest() {
        let env = LibpqEnv::with(
            &[
                ("PGHOST", "envhost"),
                ("PGPORT", "5499"),
                ("PGUSER", "envuser"),
                ("PGPASSWORD", "envpw"),
                ("PGSSLMODE", "require"),
            ],
            None,
        );
        let r = resolve("postgres://app@db/shop", &env).unwrap();
        assert_eq!(get(&r, "host"), Some("db"));
        assert_eq!(get(&r, "user"), Some("app"));
        assert_eq!(get(&r, "port"), Some("5499"));
        assert_eq!(get(&r, "password"), Some("envpw"));
        assert_eq!(get(&r, "sslmode"), Some("require"));
        assert_eq!(r.passfile, None);
        assert_came(&r, "port from PGPORT");
        let r = resolve("dbname=shop", &env).unwrap();
        assert_eq!(
            (get(&r, "host"), get(&r, "user")),
            (Some("envhost"), Some("envuser"))
        );
    }

    #[test]
    fn libpq_defaults_come_last() {
        let home = std::path::Path::new("/home/dba");
        let r = resolve("", &LibpqEnv::with(&[], Some(home))).unwrap();
        assert_eq!(get(&r, "host"), Some(DEFAULT_SOCKET_DIR));
        assert_eq!(get(&r, "user"), Some("osuser"));
        assert_eq!(get(&r, "dbname"), Some("osuser"));
        assert_eq!(get(&r, "port"), None);
        assert_eq!(r.passfile, Some(home.join(".pgpass")));
        let env = LibpqEnv::with(&[("PGPASSFILE", "/etc/pgtrail/pgpass")], Some(home));
        let r = resolve("postgres://u@h/?passfile=%2Fmine", &env).unwrap();
        assert_eq!(r.passfile, Some(PathBuf::from("/mine")));
        assert!(!r.params.contains_key("passfile"));
        let r = resolve("postgres://u@h/", &env).unwrap();
        assert_eq!(r.passfile, Some(PathBuf::from("/etc/pgtrail/pgpass")));
    }

    #[test]
    fn a_service_sits_between_the_string_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services.conf");
        std::fs::write(
            &file,
            "[shop]\nhost=svchost\nport=6000\ndbname=shop\napplication_name=psql\n\
             [audit]\nhost=svchost\ndbname=audit\n[bad]\nsslcert=/c.pem\n[typo]\nhots=x\n",
        )
        .unwrap();
        let vars = [
            ("PGSERVICEFILE", file.to_str().unwrap()),
            ("PGPORT", "7000"),
            ("PGUSER", "envuser"),
        ];
        let env = LibpqEnv::with(&vars, None);
        let r = resolve("service=shop port=5432", &env).unwrap();
        assert_eq!(get(&r, "host"), Some("svchost"));
        assert_eq!(get(&r, "port"), Some("5432"));
        assert_eq!(get(&r, "dbname"), Some("shop"));
        assert_eq!(get(&r, "user"), Some("envuser"));
        assert_eq!(get(&r, "application_name"), None);
        assert_came(&r, "host from service shop (");
        let r = resolve("postgres:///?service=audit", &env).unwrap();
        assert_eq!(
            (get(&r, "dbname"), get(&r, "port")),
            (Some("audit"), Some("7000"))
        );
        let with_var = [vars[0], ("PGSERVICE", "audit")];
        let r = resolve("", &LibpqEnv::with(&with_var, None)).unwrap();
        assert_eq!(get(&r, "dbname"), Some("audit"));
        let e = resolve("service=bad", &env).unwrap_err();
        assert!(e.contains("sets sslcert") && e.contains("line 10"), "{e}");
        let e = resolve("service=typo", &env).unwrap_err();
        assert!(e.contains("hots is not a connection parameter"), "{e}");
        let e = resolve("service=nope", &env).unwrap_err();
        assert!(
            e.contains("service \"nope\"") && e.contains("(service=nope)"),
            "{e}"
        );
    }
}
