//! `[capture]`: which tables are audited (`tables`, `exclude`), whether their
//! old rows are kept (`before_images`), and per-table column rules
//! (`[[capture.columns]]`) with the key for redacted values; `wal_warn` is
//! read in `wal_warn.rs`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::capture::redact::{ColumnRule, ColumnRules, RedactKey, RulesError};
use crate::table::{TableFilter, TablePattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    #[serde(default = "default_tables")]
    tables: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default = "yes")]
    pub before_images: bool,
    /// `[[capture.columns]]`: per-table column rules.
    #[serde(default)]
    columns: Vec<RawColumnRule>,
    /// The key for redacted values, written in the config.
    redact_key: Option<String>,
    /// A file holding the key for redacted values (read at load time).
    redact_key_file: Option<PathBuf>,
    /// The WAL guard's threshold (`super::wal_warn`).
    pub wal_warn: Option<super::wal_warn::RawSize>,
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
            wal_warn: None,
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

/// `capture.tables` and `capture.exclude`: the tables pgtrail audits.
pub(super) fn tables(raw: &RawCapture, path: &Path) -> Result<TableFilter, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let patterns = |key, list: &[String]| -> Result<Vec<TablePattern>, ConfigError> {
        list.iter()
            .map(|p| TablePattern::parse(p).map_err(|e| invalid(key, e.to_string())))
            .collect()
    };
    let include = patterns("capture.tables", &raw.tables)?;
    if include.is_empty() {
        return Err(invalid(
            "capture.tables",
            "no table pattern given; write e.g. tables = [\"public.*\"]".into(),
        ));
    }
    let exclude = patterns("capture.exclude", &raw.exclude)?;
    Ok(TableFilter { include, exclude })
}

/// `[[capture.columns]]` and the redaction key. A key file is read here, at
/// load time, so a missing or unreadable one stops the program at once; a
/// relative path is taken from the config file's directory, and one trailing
/// newline is not part of the key.
pub(super) fn column_rules(raw: &RawCapture, path: &Path) -> Result<ColumnRules, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
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
    use super::super::tests::{error, load, SOURCE};
    use super::super::Config;

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
            let e = error(text);
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
