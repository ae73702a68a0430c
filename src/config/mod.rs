//! The TOML configuration: parsed as written (`Raw*` structs that reject
//! unknown keys), then validated into [`Config`], which is what the program
//! runs on. Every error names the file and the key.
//!
//! Each section has its own module with its raw form, its validated form and
//! the check between them: `source`, `store`, `capture`, `web`, `export`, `log`
//! and `metrics`.
//! This one reads the file and assembles the sections.

mod capture;
mod export;
mod log;
mod metrics;
mod source;
mod store;
mod wal_warn;
mod web;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::metrics::{parse_duration, MetricsConfig};
pub use export::ExportConfig;
pub use log::LogFormat;
pub use wal_warn::{parse_size, DEFAULT_WAL_WARN};
pub use web::{AuthMode, ProxyAuth, WebAuth};

use crate::capture::redact::ColumnRules;
use crate::pg::{PgUrl, SlotName};
use crate::table::TableFilter;

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

impl ConfigError {
    /// What the sections' checks make their errors with: an invalid `key`
    /// of the file at `path`, and what is wrong with it.
    fn invalid_in(path: &Path) -> impl Fn(&'static str, String) -> ConfigError + '_ {
        move |key, message| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: source::RawSource,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    capture: capture::RawCapture,
    #[serde(default)]
    web: web::RawWeb,
    #[serde(default)]
    export: export::RawExport,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    metrics: metrics::RawMetrics,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub source: PgUrl,
    /// `source.name`: the source's name in the store (its chain, checkpoint and metrics label).
    pub source_name: crate::store::SourceName,
    pub slot: SlotName,
    /// `source.timeout_seconds`: silence on the replication connection taken for a dropped network.
    pub source_timeout: std::time::Duration,
    pub store: PgUrl,
    /// `store.timeout_seconds`: the longest a step of the store writer may take.
    pub store_timeout: std::time::Duration,
    /// The key chain heads are signed with (`store.signing_key_file`), and how often.
    pub signing: Option<crate::store::signing::HeadSigner>,
    /// `store.partition`: the period of a partition of entries, as `setup` sets it in the store.
    pub partition: crate::store::partitions::Period,
    /// `store.retention`: how long entries are kept (`None`: always). `setup` writes it into the store,
    /// whose value wins.
    pub retention: Option<crate::store::retention::Retention>,
    /// `store.archive_dir`: where a partition's entries are archived before retention drops it.
    pub archive_dir: Option<PathBuf>,
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
    /// `log.format`: text or JSON lines. Applied when the program starts (a reload keeps the running one).
    pub log_format: LogFormat,
    /// `[metrics]`: the metrics and health endpoints. Applied when the program starts.
    pub metrics: MetricsConfig,
    /// `capture.wal_warn`: WAL the slot may hold before the daemon warns, in bytes; `None`: off.
    /// Applied when the program starts.
    pub wal_warn: Option<u64>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses `text` and checks it section by section, in an order that
    /// reports the first error of the file as it always has.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let source = source::source(&raw.source, path)?;
        let store = store::store(&raw.store, &source.url, path)?;
        let signing = store::signing(&raw.store, path)?;
        let store_timeout = store::timeout(&raw.store, path)?;
        let partition = store::partition(&raw.store, path)?;
        let (retention, archive_dir) = store::retention(&raw.store, path)?;
        let capture = capture::tables(&raw.capture, path)?;
        let web_listen = web::listen(&raw.web, path)?;
        let columns = capture::column_rules(&raw.capture, path)?;
        let export = export::export(&raw.export, path)?;
        let web_auth = web::web_auth(&raw.web, web_listen, path)?;
        let log_format = log::format(&raw.log, path)?;
        let metrics = metrics::metrics(&raw.metrics, path)?;
        let wal_warn = wal_warn::wal_warn(raw.capture.wal_warn.as_ref(), path)?;
        Ok(Config {
            path: path.to_owned(),
            source: source.url,
            source_name: source.name,
            slot: source.slot,
            source_timeout: source.timeout,
            store,
            store_timeout,
            signing,
            partition,
            retention,
            archive_dir,
            capture,
            before_images: raw.capture.before_images,
            web_listen,
            columns,
            export,
            web_auth,
            log_format,
            metrics,
            wal_warn,
        })
    }
}

/// A number of seconds from the file, `default` when absent, at least `min`.
fn seconds(value: Option<u64>, default: u64, min: u64) -> Result<std::time::Duration, String> {
    match value.unwrap_or(default) {
        s if s < min => Err(format!("must be at least {min}")),
        s => Ok(std::time::Duration::from_secs(s)),
    }
}

/// A config value written as a whole number and a unit (`"30s"`, `"512MB"`):
/// the number and the unit as written, or `None` when it does not start with
/// a number. Each kind of value says which units it takes.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as if read from /etc/pgtrail/pgtrail.toml.
    pub(super) fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/pgtrail/pgtrail.toml"))
    }

    /// Why `text` is refused, as the program says it.
    pub(super) fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    /// The one section every config needs.
    pub(super) const SOURCE: &str = "[source]\nurl = \"postgres://a@h/db\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load("[source]\nurl = \"postgres://app@127.0.0.1:5433/shop\"\n").unwrap();
        assert_eq!(c.slot.as_str(), "pgtrail");
        assert_eq!(c.source_name.as_str(), "shop");
        assert_eq!(c.store.dbname(), "pgtrail");
        assert_eq!(c.store.endpoint(), "127.0.0.1:5433");
        assert!(c
            .capture
            .matches(&crate::table::TableName::new("public", "x")));
        assert_eq!(c.source_timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.store_timeout, std::time::Duration::from_secs(30));
    }

    #[test]
    fn timeouts_are_checked_with_the_key_named() {
        let c = load("[source]\nurl = \"postgres://a@h/db\"\ntimeout_seconds = 5\n[store]\ntimeout_seconds = 7\n")
        .unwrap();
        assert_eq!(c.source_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.store_timeout, std::time::Duration::from_secs(7));
        let e = error("[source]\nurl = \"postgres://a@h/db\"\ntimeout_seconds = 2\n");
        assert!(
            e.contains("source.timeout_seconds") && e.contains("at least 3"),
            "{e}"
        );
        let e = error(&format!("{SOURCE}[store]\ntimeout_seconds = 0\n"));
        assert!(
            e.contains("store.timeout_seconds") && e.contains("at least 1"),
            "{e}"
        );
    }

    #[test]
    fn the_source_name_is_checked_and_defaults_to_the_database() {
        let c = load("[source]\nurl = \"postgres://a@h/db\"\nname = \"shop-eu\"\n").unwrap();
        assert_eq!(c.source_name.as_str(), "shop-eu");
        for bad in ["Shop", "pgtrail", ""] {
            let e = error(&format!(
                "[source]\nurl = \"postgres://a@h/db\"\nname = \"{bad}\"\n"
            ));
            assert!(e.contains("source.name"), "{e}");
        }
        let e = error("[source]\nurl = \"postgres://a@h/Shop\"\n");
        assert!(
            e.contains("source.name") && e.contains("set [source] name"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = error("[source]\nurl = \"postgres://a@h/db\"\nslott = \"x\"\n");
        assert!(
            e.contains("slott") && e.contains("/etc/pgtrail/pgtrail.toml"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key() {
        let e = error("[source]\nurl = \"postgres://a@h/db\"\n[capture]\ntables = \"public.*\"\n");
        assert!(e.contains("tables"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let e = error("[source]\nurl = \"postgres://a@h/db\"\nslot = \"Bad-Slot\"\n");
        assert!(e.contains("source.slot"), "{e}");
        let e = error("[source]\nurl = \"postgres://a@h/db\"\n[capture]\ntables = [\"nodot\"]\n");
        assert!(e.contains("capture.tables") && e.contains("nodot"), "{e}");
        let e =
            error("[source]\nurl = \"postgres://a@h/db\"\n[store]\nurl = \"postgres://a@h/db\"\n");
        assert!(e.contains("store.url"), "{e}");
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
}
