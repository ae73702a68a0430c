//! `[capture] wal_warn`: how much WAL the slot may hold on the source before
//! the daemon warns (the WAL guard, `health::guard`). A size with
//! PostgreSQL's units (`"512MB"`, `"1GB"`; 1 kB = 1024 bytes), a number of
//! bytes, or `"off"`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// The default: 1 GB of WAL held back, a backlog that is no longer a blip.
pub const DEFAULT_WAL_WARN: u64 = 1024 * 1024 * 1024;

/// The key as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// The threshold in bytes; `None` when turned off.
pub(super) fn wal_warn(raw: Option<&RawSize>, path: &Path) -> Result<Option<u64>, ConfigError> {
    match raw {
        None => Ok(Some(DEFAULT_WAL_WARN)),
        Some(RawSize::Bytes(0)) => Err(ConfigError::invalid_in(path)(
            "capture.wal_warn",
            "must be more than 0 bytes; write \"off\" to turn the WAL guard off".into(),
        )),
        Some(RawSize::Bytes(n)) => Ok(Some(*n)),
        Some(RawSize::Text(text)) if text.trim() == "off" => Ok(None),
        Some(RawSize::Text(text)) => parse_size(text).map(Some).map_err(|m| {
            ConfigError::invalid_in(path)("capture.wal_warn", format!("{m}, or \"off\""))
        }),
    }
}

/// `"64kB"`, `"512MB"`, `"1GB"`, `"2TB"` (PostgreSQL's units, powers of
/// 1024), the same as `"64KiB"`, `"512MiB"`, `"1GiB"`, `"2TiB"`, or a plain
/// number of bytes. Also the command line's sizes (`--max-line`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let wrong = || {
        format!(
            "{:?} is not a size: write a number and a unit, like \"512MB\" or \"1GB\" (kB, MB, GB, TB; or KiB, MiB, GiB, TiB, the same)",
            crate::text::clip(text)
        )
    };
    let (n, unit) = super::number_and_unit(text).ok_or_else(wrong)?;
    let shift = match unit {
        "" | "B" => 0,
        "kB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        _ => return Err(wrong()),
    };
    match n.checked_mul(1 << shift) {
        Some(0) | None => Err(wrong()),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_postgresql_units() {
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size(" 512MB "), Ok(512 << 20));
        assert_eq!(parse_size("64kB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        for wrong in [
            "1 gigabyte",
            "GB",
            "1gb",
            "1gib",
            "0MiB",
            "99999999999TB",
            "-1GB",
        ] {
            let e = parse_size(wrong).unwrap_err();
            assert!(
                e.contains("is not a size") && e.contains("\"1GB\""),
                "{wrong}: {e}"
            );
        }
        let path = Path::new("/etc/pgtrail/pgtrail.toml");
        assert_eq!(wal_warn(None, path).ok(), Some(Some(DEFAULT_WAL_WARN)));
        let off = RawSize::Text("off".into());
        assert_eq!(wal_warn(Some(&off), path).ok(), Some(None));
        let zero = wal_warn(Some(&RawSize::Bytes(0)), path)
            .unwrap_err()
            .to_string();
        assert!(zero.contains("capture.wal_warn"), "{zero}");
        let wrong = wal_warn(Some(&RawSize::Text("lots".into())), path)
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("is not a size") && wrong.ends_with("or \"off\""),
            "{wrong}"
        );
    }
}
