//! `[store]`: the database the audit entries go to; by default the database
//! "pgtrail" on the source's server.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::pg::PgUrl;
use crate::store::partitions::Period;
use crate::store::retention::Retention;
use crate::store::signing::HeadSigner;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<String>,
    signing_key_file: Option<std::path::PathBuf>,
    sign_every_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    retention: Option<String>,
    archive_dir: Option<std::path::PathBuf>,
    partition: Option<String>,
}

/// `store.retention` (unset: keep everything) and `store.archive_dir`
/// (optional; relative to the config file): how long entries are kept, and
/// where a partition's entries are archived before it is dropped.
pub(super) fn retention(
    raw: &RawStore,
    path: &Path,
) -> Result<(Option<Retention>, Option<std::path::PathBuf>), ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let retention = match raw.retention.as_deref() {
        None => None,
        Some(text) => Some(Retention::parse(text).map_err(|m| invalid("store.retention", m))?),
    };
    let archive_dir = match &raw.archive_dir {
        None => None,
        Some(dir) if dir.as_os_str().is_empty() => return Err(invalid(
            "store.archive_dir",
            "is empty: name a directory, or remove the line to drop partitions without archives"
                .into(),
        )),
        Some(dir) => Some(path.parent().unwrap_or(Path::new("")).join(dir)),
    };
    if archive_dir.is_some() && retention.is_none() {
        return Err(invalid(
            "store.archive_dir",
            "archives are written when retention drops a partition, and store.retention is unset: \
             set store.retention too, or remove store.archive_dir"
                .into(),
        ));
    }
    Ok((retention, archive_dir))
}

/// `store.partition` (default "month"): how much commit time one partition
/// of entries holds. `setup` writes it into the store, which keeps it.
pub(super) fn partition(raw: &RawStore, path: &Path) -> Result<Period, ConfigError> {
    match raw.partition.as_deref() {
        None => Ok(Period::default()),
        Some(text) => Period::parse(text).ok_or_else(|| {
            ConfigError::invalid_in(path)(
                "store.partition",
                format!("{text:?} is not a period: write \"day\", \"week\" or \"month\""),
            )
        }),
    }
}

/// `store.timeout_seconds` (default 30): how long one step of the store
/// writer (a batch of entries, a commit) may take before the store is taken
/// for gone and the session starts again.
pub(super) fn timeout(raw: &RawStore, path: &Path) -> Result<std::time::Duration, ConfigError> {
    let default = crate::store::writer::DEFAULT_TIMEOUT.as_secs();
    super::seconds(raw.timeout_seconds, default, 1)
        .map_err(|m| ConfigError::invalid_in(path)("store.timeout_seconds", m))
}

/// `store.signing_key_file` and `store.sign_every_seconds` (default 60): the
/// key the daemon signs chain heads with, if any.
pub(super) fn signing(raw: &RawStore, path: &Path) -> Result<Option<HeadSigner>, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let every = match raw.sign_every_seconds {
        Some(0) => {
            return Err(invalid(
                "store.sign_every_seconds",
                "must be at least 1".into(),
            ))
        }
        Some(s) => std::time::Duration::from_secs(s),
        None => std::time::Duration::from_secs(60),
    };
    let Some(file) = &raw.signing_key_file else {
        if raw.sign_every_seconds.is_some() {
            return Err(invalid(
                "store.sign_every_seconds",
                "there is nothing to sign with: set store.signing_key_file too".into(),
            ));
        }
        return Ok(None);
    };
    let file = path.parent().unwrap_or(Path::new("")).join(file);
    HeadSigner::from_file(&file, every)
        .map(Some)
        .map_err(|m| invalid("store.signing_key_file", m))
}

/// `[store]`, validated against the source it must not be.
pub(super) fn store(raw: &RawStore, source: &PgUrl, path: &Path) -> Result<PgUrl, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let store = match &raw.url {
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
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, load, SOURCE};

    #[test]
    fn retention_is_whole_days_months_or_years_and_archives_need_it() {
        use crate::store::retention::Retention;
        let c = load(SOURCE).unwrap();
        assert_eq!((c.retention, c.archive_dir), (None, None));
        let c = load(&format!(
            "{SOURCE}[store]\nretention = \"400d\"\narchive_dir = \"arch\"\n"
        ))
        .unwrap();
        assert_eq!(c.retention, Some(Retention::Days(400)));
        assert!(c.archive_dir.unwrap().ends_with("arch"));
        let e = error(&format!("{SOURCE}[store]\nretention = \"6m\"\n"));
        assert!(
            e.contains("store.retention") && e.contains("m could mean minutes"),
            "{e}"
        );
        let e = error(&format!("{SOURCE}[store]\narchive_dir = \"arch\"\n"));
        assert!(
            e.contains("store.archive_dir") && e.contains("set store.retention"),
            "{e}"
        );
    }

    #[test]
    fn the_partition_period_is_a_day_a_week_or_a_month() {
        use crate::store::partitions::Period;
        assert_eq!(load(SOURCE).unwrap().partition, Period::Month);
        let c = load(&format!("{SOURCE}[store]\npartition = \"week\"\n")).unwrap();
        assert_eq!(c.partition, Period::Week);
        let e = error(&format!("{SOURCE}[store]\npartition = \"year\"\n"));
        assert!(
            e.contains("store.partition") && e.contains("\"day\""),
            "{e}"
        );
    }

    #[test]
    fn signing_keys_are_checked_with_the_key_named() {
        assert!(load(SOURCE).unwrap().signing.is_none());
        let e = error(&format!("{SOURCE}[store]\nsign_every_seconds = 5\n"));
        assert!(
            e.contains("store.sign_every_seconds") && e.contains("signing_key_file"),
            "{e}"
        );
        let e = error(&format!(
            "{SOURCE}[store]\nsigning_key_file = \"k.pem\"\nsign_every_seconds = 0\n"
        ));
        assert!(e.contains("at least 1"), "{e}");
        let e = error(&format!(
            "{SOURCE}[store]\nsigning_key_file = \"/nonexistent/k.pem\"\n"
        ));
        assert!(
            e.contains("store.signing_key_file") && e.contains("cannot read"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.pem");
        std::fs::write(&file, "not a key").unwrap();
        let e = error(&format!("{SOURCE}[store]\nsigning_key_file = {:?}\n", file));
        assert!(e.contains("openssl genpkey -algorithm ed25519"), "{e}");
        // The key itself never shows in a message or a Debug print.
        std::fs::write(
            &file,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let c = load(&format!("{SOURCE}[store]\nsigning_key_file = {:?}\n", file)).unwrap();
        let signer = c.signing.expect("a signer");
        assert_eq!(signer.every, std::time::Duration::from_secs(60));
        let debug = format!("{signer:?}");
        assert!(!debug.contains("0707070707"), "{debug}");
    }
}
