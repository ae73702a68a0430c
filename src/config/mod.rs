//! The TOML configuration: parsed as written (`Raw*` structs that reject
//! unknown keys), then validated into [`Config`], which is what the program
//! runs on. Every error names the file and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::redact::{ColumnRule, ColumnRules, RedactKey, RulesError};
use crate::pg::{PgUrl, SlotName};
use crate::table::{TableFilter, TablePattern};

/// One reading of the config file. SIGHUP reads the file once and every part
/// of a running daemon applies that same reading: capture and the web view
/// must never act on two different versions of the file.
pub type Reading = std::sync::Arc<Result<Config, ConfigError>>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in the config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("in the config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    export: RawExport,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    /// age public keys (`age1…`) every export is encrypted to.
    #[serde(default)]
    age_recipients: Vec<String>,
    /// No export may leave unencrypted.
    #[serde(default)]
    require_encryption: bool,
    /// Where XLSX exports keep their temporary files; the system's temp dir when absent.
    temp_dir: Option<PathBuf>,
}

/// `[export]`: encryption of exports, and where XLSX exports spill.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    /// Exports are encrypted to these unless the user asks otherwise (and may).
    pub recipients: Option<crate::export::encrypt::Recipients>,
    /// Every export must be encrypted; implies `recipients`.
    pub require_encryption: bool,
    /// The directory in which each XLSX export makes its private temporary
    /// directory; `None` for the system's (`$TMPDIR`, else `/tmp`).
    pub temp_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    #[serde(default = "default_listen")]
    listen: String,
    /// `password` (the default) or `none`.
    #[serde(default = "default_auth")]
    auth: String,
    #[serde(default = "default_idle")]
    session_idle_seconds: u64,
    #[serde(default = "default_session_max")]
    session_max_seconds: u64,
    #[serde(default = "default_lockout_after")]
    lockout_after: u32,
    #[serde(default = "default_lockout_seconds")]
    lockout_seconds: u64,
    #[serde(default)]
    cookie_secure: bool,
    proxy: Option<RawProxy>,
}

impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen: default_listen(),
            auth: default_auth(),
            session_idle_seconds: default_idle(),
            session_max_seconds: default_session_max(),
            lockout_after: default_lockout_after(),
            lockout_seconds: default_lockout_seconds(),
            cookie_secure: false,
            proxy: None,
        }
    }
}

/// `[web.proxy]`: trust a user name set by a reverse proxy (single sign-on).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    user_header: String,
    trusted: Vec<String>,
    role_header: Option<String>,
    #[serde(default)]
    roles: std::collections::BTreeMap<String, String>,
    default_role: Option<String>,
}

fn default_auth() -> String {
    "password".to_owned()
}
fn default_idle() -> u64 {
    30 * 60
}
fn default_session_max() -> u64 {
    12 * 60 * 60
}
fn default_lockout_after() -> u32 {
    5
}
fn default_lockout_seconds() -> u64 {
    15 * 60
}

/// How the web view knows who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Users sign in (and API clients bring tokens): the default.
    Password,
    /// Everyone is an admin: only accepted on a loopback address.
    None,
}

/// `[web]`'s access control settings, validated.
#[derive(Debug, Clone)]
pub struct WebAuth {
    pub mode: AuthMode,
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
    pub lockout_after: u32,
    pub lockout_seconds: u64,
    /// Mark the session cookie `Secure` (set it when a TLS proxy serves the web view).
    pub cookie_secure: bool,
    pub proxy: Option<ProxyAuth>,
}

/// `[web.proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyAuth {
    /// The header holding the user name (lower-case).
    pub user_header: String,
    /// Only requests from these addresses may set the headers.
    pub trusted: Vec<ipnet::IpNet>,
    /// A header holding the role, if the proxy sends one.
    pub role_header: Option<String>,
    /// Roles by user name, where the proxy sends none.
    pub roles: std::collections::BTreeMap<String, crate::auth::Role>,
    pub default_role: Option<crate::auth::Role>,
}

impl ProxyAuth {
    pub fn trusts(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&addr))
    }
}

fn web_auth(
    raw: &RawWeb,
    listen: std::net::SocketAddr,
    path: &Path,
) -> Result<WebAuth, ConfigError> {
    let invalid = |key, message| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    let mode = match raw.auth.as_str() {
        "password" => AuthMode::Password,
        "none" => AuthMode::None,
        other => {
            return Err(invalid(
                "web.auth",
                format!(
                    "{other:?} is not an auth mode; use \"password\" (the default) or \"none\""
                ),
            ))
        }
    };
    if mode == AuthMode::None && !listen.ip().is_loopback() {
        return Err(invalid(
            "web.auth",
            format!(
                "auth = \"none\" lets anyone who can connect read the audit log, so it is only accepted on a loopback \
                 address, and web.listen is {listen}; set web.listen = \"127.0.0.1:{}\", or remove auth = \"none\" and \
                 create users with `pgtrail user add NAME --role admin`",
                listen.port()
            ),
        ));
    }
    if raw.session_idle_seconds == 0 {
        return Err(invalid(
            "web.session_idle_seconds",
            "must be at least 1".into(),
        ));
    }
    if raw.session_max_seconds < raw.session_idle_seconds {
        return Err(invalid(
            "web.session_max_seconds",
            format!(
                "the absolute session limit ({} s) is shorter than the idle limit web.session_idle_seconds ({} s)",
                raw.session_max_seconds, raw.session_idle_seconds
            ),
        ));
    }
    if raw.lockout_after == 0 {
        return Err(invalid(
            "web.lockout_after",
            "must be at least 1 failed sign-in".into(),
        ));
    }
    let proxy = match &raw.proxy {
        None => None,
        Some(p) => {
            if mode == AuthMode::None {
                return Err(invalid(
                    "web.proxy",
                    "[web.proxy] makes no sense with auth = \"none\"; remove one of them".into(),
                ));
            }
            let header = |key, h: &str| -> Result<String, ConfigError> {
                axum::http::HeaderName::from_bytes(h.as_bytes())
                    .map(|n| n.as_str().to_owned())
                    .map_err(|_| {
                        invalid(
                            key,
                            format!(
                                "{h:?} is not a valid HTTP header name, e.g. \"X-Forwarded-User\""
                            ),
                        )
                    })
            };
            let user_header = header("web.proxy.user_header", &p.user_header)?;
            let role_header = p
                .role_header
                .as_deref()
                .map(|h| header("web.proxy.role_header", h))
                .transpose()?;
            if p.trusted.is_empty() {
                return Err(invalid(
                    "web.proxy.trusted",
                    "no proxy address given; list the reverse proxy's addresses, e.g. trusted = [\"127.0.0.1\", \"10.0.0.0/24\"]".into(),
                ));
            }
            let trusted = p
                .trusted
                .iter()
                .map(|t| {
                    t.parse::<ipnet::IpNet>()
                        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| invalid("web.proxy.trusted", format!("{t:?} is not an address or network, e.g. \"10.0.0.5\" or \"10.0.0.0/24\"")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let role = |key, r: &str| {
                r.parse::<crate::auth::Role>()
                    .map_err(|e| invalid(key, e.to_string()))
            };
            let roles = p
                .roles
                .iter()
                .map(|(user, r)| Ok((user.clone(), role("web.proxy.roles", r)?)))
                .collect::<Result<_, ConfigError>>()?;
            let default_role = p
                .default_role
                .as_deref()
                .map(|r| role("web.proxy.default_role", r))
                .transpose()?;
            Some(ProxyAuth {
                user_header,
                trusted,
                role_header,
                roles,
                default_role,
            })
        }
    };
    Ok(WebAuth {
        mode,
        session_idle_seconds: raw.session_idle_seconds,
        session_max_seconds: raw.session_max_seconds,
        lockout_after: raw.lockout_after,
        lockout_seconds: raw.lockout_seconds,
        cookie_secure: raw.cookie_secure,
        proxy,
    })
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    #[serde(default = "default_slot")]
    slot: String,
}

fn default_slot() -> String {
    "pgtrail".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    #[serde(default = "default_tables")]
    tables: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default = "yes")]
    before_images: bool,
    /// `[[capture.columns]]`: per-table column rules.
    #[serde(default)]
    columns: Vec<RawColumnRule>,
    /// The key for redacted values, written in the config.
    redact_key: Option<String>,
    /// A file holding the key for redacted values (read at load time).
    redact_key_file: Option<PathBuf>,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            tables: default_tables(),
            exclude: Vec::new(),
            before_images: true,
            columns: Vec::new(),
            redact_key: None,
            redact_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumnRule {
    table: String,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    redact: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_tables() -> Vec<String> {
    vec!["public.*".to_owned()]
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub source: PgUrl,
    pub slot: SlotName,
    pub store: PgUrl,
    pub capture: TableFilter,
    /// `setup` gives captured tables REPLICA IDENTITY FULL, so UPDATE and DELETE carry the whole old row.
    pub before_images: bool,
    /// Where the web view listens.
    pub web_listen: std::net::SocketAddr,
    /// Per-table column rules (`[[capture.columns]]`): ignored and redacted columns, with the key.
    pub columns: ColumnRules,
    /// Encryption of exports.
    pub export: ExportConfig,
    /// Who may use the web view, and how they prove it.
    pub web_auth: WebAuth,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let invalid = |key, message| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };

        let source = PgUrl::parse(&raw.source.url).map_err(|m| invalid("source.url", m))?;
        let slot = SlotName::parse(&raw.source.slot).map_err(|m| invalid("source.slot", m))?;
        let store = match &raw.store.url {
            Some(url) => PgUrl::parse(url).map_err(|m| invalid("store.url", m))?,
            None => source.with_dbname("pgtrail"),
        };
        if store.dbname() == source.dbname() && store.endpoint() == source.endpoint() {
            return Err(invalid(
                "store.url",
                "the store must be another database than the source, or pgtrail would audit its own writes; \
                 remove store.url to use the database \"pgtrail\" on the source's server"
                    .into(),
            ));
        }
        let patterns = |key, list: &[String]| -> Result<Vec<TablePattern>, ConfigError> {
            list.iter()
                .map(|p| TablePattern::parse(p).map_err(|e| invalid(key, e.to_string())))
                .collect()
        };
        let include = patterns("capture.tables", &raw.capture.tables)?;
        if include.is_empty() {
            return Err(invalid(
                "capture.tables",
                "no table pattern given; write e.g. tables = [\"public.*\"]".into(),
            ));
        }
        let exclude = patterns("capture.exclude", &raw.capture.exclude)?;
        let web_listen = raw.web.listen.parse().map_err(|_| {
            invalid(
                "web.listen",
                format!(
                    "{:?} is not an address:port, e.g. \"127.0.0.1:8080\"",
                    raw.web.listen
                ),
            )
        })?;
        let columns = column_rules(&raw.capture, path)?;
        let recipients = crate::export::encrypt::Recipients::parse(&raw.export.age_recipients)
            .map_err(|m| invalid("export.age_recipients", m))?;
        if raw.export.require_encryption && recipients.is_empty() {
            return Err(invalid(
                "export.require_encryption",
                "encryption is required but export.age_recipients is empty; add the public key of whoever \
                 may read exports (made with `age-keygen -o key.txt`, shown by `age-keygen -y key.txt`), \
                 e.g. age_recipients = [\"age1…\"]"
                    .into(),
            ));
        }
        let temp_dir = match &raw.export.temp_dir {
            Some(dir) => {
                Some(export_temp_dir(path, dir).map_err(|m| invalid("export.temp_dir", m))?)
            }
            None => None,
        };
        let export = ExportConfig {
            recipients: (!recipients.is_empty()).then_some(recipients),
            require_encryption: raw.export.require_encryption,
            temp_dir,
        };
        let web_auth = web_auth(&raw.web, web_listen, path)?;
        Ok(Config {
            path: path.to_owned(),
            source,
            slot,
            store,
            capture: TableFilter { include, exclude },
            before_images: raw.capture.before_images,
            web_listen,
            columns,
            export,
            web_auth,
        })
    }
}

/// `export.temp_dir`, taken from the config file's directory when relative:
/// it must be a directory this process may create directories in, checked
/// now so that a wrong one stops the program at once instead of failing the
/// first XLSX export.
fn export_temp_dir(config: &Path, dir: &Path) -> Result<PathBuf, String> {
    let dir = config.parent().unwrap_or(Path::new("")).join(dir);
    let fix = "create it, or remove export.temp_dir to use the system's temporary directory";
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory; {fix}", dir.display())),
        Err(e) => return Err(format!("{}: {e}; {fix}", dir.display())),
    }
    // Creating anything there needs the rights creating an export's directory
    // needs; an unnamed file is never seen by anyone, not even as it goes.
    tempfile::tempfile_in(&dir).map_err(|e| {
        format!(
            "cannot create files in {}: {e}; give pgtrail's user write access to it, \
             or choose another directory",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// `[[capture.columns]]` and the redaction key. A key file is read here, at
/// load time, so a missing or unreadable one stops the program at once; a
/// relative path is taken from the config file's directory, and one trailing
/// newline is not part of the key.
fn column_rules(raw: &RawCapture, path: &Path) -> Result<ColumnRules, ConfigError> {
    let invalid = |key, message| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    let rules = raw
        .columns
        .iter()
        .map(|r| {
            let table = TablePattern::parse(&r.table)
                .map_err(|e| invalid("capture.columns", e.to_string()))?;
            Ok(ColumnRule {
                table,
                ignore: r.ignore.clone(),
                redact: r.redact.clone(),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let key = match (&raw.redact_key, &raw.redact_key_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "capture.redact_key",
                "give either capture.redact_key or capture.redact_key_file, not both".into(),
            ))
        }
        (Some(key), None) => {
            if key.is_empty() {
                return Err(invalid("capture.redact_key", "the key is empty".into()));
            }
            Some(RedactKey::new(key.as_bytes()))
        }
        (None, Some(file)) => {
            let file = path.parent().unwrap_or(Path::new("")).join(file);
            let mut bytes = std::fs::read(&file).map_err(|e| {
                invalid(
                    "capture.redact_key_file",
                    format!("cannot read the key file {}: {e}", file.display()),
                )
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(invalid(
                    "capture.redact_key_file",
                    format!("the key file {} is empty", file.display()),
                ));
            }
            Some(RedactKey::new(&bytes))
        }
        (None, None) => None,
    };
    ColumnRules::new(rules, key).map_err(|e| match e {
        RulesError::NoKey { tables } => invalid(
            "capture.redact_key",
            format!(
                "capture.columns redacts columns of {tables}, which needs a key: set capture.redact_key_file \
                 (e.g. \"/etc/pgtrail/redact.key\", made with `openssl rand -hex 32`) or capture.redact_key"
            ),
        ),
        e => invalid("capture.columns", e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/pgtrail/pgtrail.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load("[source]\nurl = \"postgres://app@127.0.0.1:5433/shop\"\n").unwrap();
        assert_eq!(c.slot.as_str(), "pgtrail");
        assert_eq!(c.store.dbname(), "pgtrail");
        assert_eq!(c.store.endpoint(), "127.0.0.1:5433");
        assert!(c
            .capture
            .matches(&crate::table::TableName::new("public", "x")));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = load("[source]\nurl = \"postgres://a@h/db\"\nslott = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slott") && e.contains("/etc/pgtrail/pgtrail.toml"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let e = load("[source]\nurl = \"postgres://a@h/db\"\n[capture]\ntables = \"public.*\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tables"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let e = load("[source]\nurl = \"postgres://a@h/db\"\nslot = \"Bad-Slot\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.slot"), "{e}");
        let e = load("[source]\nurl = \"postgres://a@h/db\"\n[capture]\ntables = [\"nodot\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture.tables") && e.contains("nodot"), "{e}");
        let e =
            load("[source]\nurl = \"postgres://a@h/db\"\n[store]\nurl = \"postgres://a@h/db\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("store.url"), "{e}");
    }

    const SOURCE: &str = "[source]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn column_rules_with_a_key_in_the_config() {
        let c = load(&format!(
            "{SOURCE}[capture]\ntables = [\"public.*\"]\nredact_key = \"sekrit-key-material\"\n\
             [[capture.columns]]\ntable = \"public.users\"\nignore = [\"last_seen_at\"]\nredact = [\"password_hash\", \"ssn\"]\n\
             [[capture.columns]]\ntable = \"nowhere.*\"\nignore = [\"x\"]\n"
        ))
        .unwrap();
        let users = c
            .columns
            .for_table(&crate::table::TableName::new("public", "users"))
            .unwrap();
        assert!(
            users.ignores("last_seen_at") && users.redacts("ssn") && users.redacts("password_hash")
        );
        assert!(c
            .columns
            .for_table(&crate::table::TableName::new("public", "orders"))
            .is_none());
        assert!(
            !format!("{c:?}").contains("sekrit"),
            "the key must not show in Debug output"
        );
        assert!(load(SOURCE).unwrap().columns.is_empty());
    }

    #[test]
    fn key_file_is_read_at_load_and_its_trailing_newline_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("redact.key"), "k\n").unwrap();
        let rules = "[[capture.columns]]\ntable = \"public.t\"\nredact = [\"c\"]\n";
        let from_file = Config::from_toml(
            &format!("{SOURCE}[capture]\nredact_key_file = \"redact.key\"\n{rules}"),
            &dir.path().join("pgtrail.toml"),
        )
        .unwrap();
        let inline = load(&format!("{SOURCE}[capture]\nredact_key = \"k\"\n{rules}")).unwrap();
        let hash = |c: &Config| {
            let t = c
                .columns
                .for_table(&crate::table::TableName::new("public", "t"))
                .unwrap();
            let mut img = crate::capture::values::RowImage {
                columns: vec![("c", std::borrow::Cow::Borrowed("\"v\""))],
            };
            t.apply(&mut img);
            img.to_json()
        };
        assert_eq!(hash(&from_file), hash(&inline));
    }

    #[test]
    fn bad_column_rules_name_their_key() {
        let rule = "[[capture.columns]]\ntable = \"public.users\"\n";
        let cases: &[(&str, &[&str])] = &[
            // Redacting needs a key.
            (&format!("{SOURCE}{rule}redact = [\"ssn\"]\n"), &["capture.redact_key", "public.users"]),
            // Both ways of giving it.
            (
                &format!("{SOURCE}[capture]\nredact_key = \"k\"\nredact_key_file = \"/k\"\n{rule}redact = [\"ssn\"]\n"),
                &["capture.redact_key", "not both"],
            ),
            (&format!("{SOURCE}[capture]\nredact_key = \"\"\n"), &["capture.redact_key", "empty"]),
            (
                &format!("{SOURCE}[capture]\nredact_key_file = \"/nonexistent/pgtrail/redact.key\"\n{rule}redact = [\"ssn\"]\n"),
                &["capture.redact_key_file", "/nonexistent/pgtrail/redact.key"],
            ),
            (
                &format!("{SOURCE}[capture]\nredact_key = \"k\"\n{rule}ignore = [\"ssn\"]\nredact = [\"ssn\"]\n"),
                &["capture.columns", "ssn", "both ignores and redacts"],
            ),
            (&format!("{SOURCE}[capture]\nredact_key = \"k\"\n{rule}ignore = [\"\"]\n"), &["capture.columns", "empty column"]),
            (&format!("{SOURCE}[[capture.columns]]\ntable = \"nodot\"\n"), &["capture.columns", "nodot"]),
            (&format!("{SOURCE}{rule}hide = [\"ssn\"]\n"), &["hide"]),
            (&format!("{SOURCE}[[capture.columns]]\nignore = [\"a\"]\n"), &["table"]),
            (&format!("{SOURCE}{rule}redact = \"ssn\"\n"), &["redact"]),
        ];
        for (text, needles) in cases {
            let e = load(text).unwrap_err().to_string();
            for n in *needles {
                assert!(
                    e.contains(n),
                    "expected {n:?} in the error for\n{text}\ngot: {e}"
                );
            }
            assert!(e.contains("/etc/pgtrail/pgtrail.toml"), "{e}");
        }
    }

    #[test]
    fn the_example_config_loads_as_is_and_with_its_column_rules() {
        let text = include_str!("../../config/pgtrail.example.toml");
        let as_is = load(text).unwrap();
        assert!(as_is.columns.is_empty());
        // Uncomment the column rules and the inline key.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if [
                        "redact_key ",
                        "[[capture.columns]]",
                        "table ",
                        "ignore ",
                        "redact ",
                    ]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let with_rules = load(&uncommented).unwrap();
        let users = with_rules
            .columns
            .for_table(&crate::table::TableName::new("public", "users"))
            .unwrap();
        assert!(users.ignores("last_seen_at") && users.redacts("ssn"));
    }

    #[test]
    fn export_recipients_are_checked_at_load() {
        let key = age::x25519::Identity::generate().to_public().to_string();
        let c = load(&format!(
            "{SOURCE}[export]\nage_recipients = [\"{key}\"]\nrequire_encryption = true\n"
        ))
        .unwrap();
        assert_eq!(c.export.recipients.map(|r| r.len()), Some(1));
        assert!(c.export.require_encryption);
        assert!(load(SOURCE).unwrap().export.recipients.is_none());
        let e = load(&format!(
            "{SOURCE}[export]\nage_recipients = [\"{key}\", \"age1qqqq\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("export.age_recipients")
                && e.contains("recipient 2")
                && e.contains("age1qqqq"),
            "{e}"
        );
        let e = load(&format!("{SOURCE}[export]\nrequire_encryption = true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("export.require_encryption") && e.contains("age_recipients"),
            "{e}"
        );
        let e = load(&format!("{SOURCE}[export]\nrecipients = []\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipients"), "{e}");
    }

    #[test]
    fn export_temp_dir_must_be_a_writable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pgtrail.toml");
        let from = |extra: &str| Config::from_toml(&format!("{SOURCE}{extra}"), &config);
        assert_eq!(from("").unwrap().export.temp_dir, None);
        std::fs::create_dir(dir.path().join("spill")).unwrap();
        // Relative to the config file's directory.
        assert_eq!(
            from("[export]\ntemp_dir = \"spill\"\n")
                .unwrap()
                .export
                .temp_dir,
            Some(dir.path().join("spill"))
        );
        let e = from("[export]\ntemp_dir = \"missing\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("export.temp_dir") && e.contains("missing") && e.contains("create it"),
            "{e}"
        );
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = from("[export]\ntemp_dir = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        // No probe directory is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spill")).unwrap().count(),
            0
        );
    }

    #[test]
    fn auth_none_only_on_loopback_and_web_keys_are_checked() {
        let c = load(&format!(
            "{SOURCE}[web]\nlisten = \"127.0.0.1:9000\"\nauth = \"none\"\n"
        ))
        .unwrap();
        assert_eq!(c.web_auth.mode, AuthMode::None);
        assert!(load(&format!(
            "{SOURCE}[web]\nlisten = \"[::1]:9000\"\nauth = \"none\"\n"
        ))
        .is_ok());
        assert_eq!(load(SOURCE).unwrap().web_auth.mode, AuthMode::Password);
        let cases: &[(&str, &[&str])] = &[
            ("listen = \"0.0.0.0:8080\"\nauth = \"none\"\n", &["web.auth", "loopback", "0.0.0.0:8080", "pgtrail user add"]),
            ("auth = \"ldap\"\n", &["web.auth", "ldap"]),
            ("session_idle_seconds = 0\n", &["web.session_idle_seconds"]),
            ("session_idle_seconds = 100\nsession_max_seconds = 50\n", &["web.session_max_seconds"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = []\n", &["web.proxy.trusted"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = [\"10.0.0.0/33\"]\n", &["web.proxy.trusted", "10.0.0.0/33"]),
            ("[web.proxy]\nuser_header = \"X User\"\ntrusted = [\"10.0.0.1\"]\n", &["web.proxy.user_header"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = [\"10.0.0.1\"]\nroles = { bob = \"boss\" }\n", &["web.proxy.roles", "boss"]),
        ];
        for (web, needles) in cases {
            let e = load(&format!("{SOURCE}[web]\n{web}"))
                .unwrap_err()
                .to_string();
            for n in *needles {
                assert!(
                    e.contains(n),
                    "expected {n:?} in the error for\n{web}\ngot: {e}"
                );
            }
        }
        let c = load(&format!(
            "{SOURCE}[web]\n[web.proxy]\nuser_header = \"X-Forwarded-User\"\ntrusted = [\"10.0.0.0/24\", \"::1\"]\nroles = {{ bob = \"auditor\" }}\n"
        ))
        .unwrap();
        let p = c.web_auth.proxy.unwrap();
        assert_eq!(p.user_header, "x-forwarded-user");
        assert!(p.trusts("10.0.0.9".parse().unwrap()) && p.trusts("::1".parse().unwrap()));
        assert!(p.trusts("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!p.trusts("10.0.1.9".parse().unwrap()));
        assert_eq!(p.roles["bob"], crate::auth::Role::Auditor);
    }

    #[test]
    fn an_empty_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "\n").unwrap();
        let e = Config::from_toml(
            &format!("{SOURCE}[capture]\nredact_key_file = \"k\"\n"),
            &dir.path().join("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("capture.redact_key_file") && e.contains("empty"),
            "{e}"
        );
    }
}
