//! `[export]`: the age recipients exports are encrypted to, whether every
//! export must be, and where XLSX exports keep their temporary files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::export::encrypt::Recipients;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
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
    pub recipients: Option<Recipients>,
    /// Every export must be encrypted; implies `recipients`.
    pub require_encryption: bool,
    /// The directory in which each XLSX export makes its private temporary
    /// directory; `None` for the system's (`$TMPDIR`, else `/tmp`).
    pub temp_dir: Option<PathBuf>,
}

pub(super) fn export(raw: &RawExport, path: &Path) -> Result<ExportConfig, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let recipients =
        Recipients::parse(&raw.age_recipients).map_err(|m| invalid("export.age_recipients", m))?;
    if raw.require_encryption && recipients.is_empty() {
        return Err(invalid(
            "export.require_encryption",
            "encryption is required but export.age_recipients is empty; add the public key of whoever \
             may read exports (made with `age-keygen -o key.txt`, shown by `age-keygen -y key.txt`), \
             e.g. age_recipients = [\"age1…\"]"
                .into(),
        ));
    }
    let temp_dir = match &raw.temp_dir {
        Some(dir) => Some(temp_dir(path, dir).map_err(|m| invalid("export.temp_dir", m))?),
        None => None,
    };
    Ok(ExportConfig {
        recipients: (!recipients.is_empty()).then_some(recipients),
        require_encryption: raw.require_encryption,
        temp_dir,
    })
}

/// `export.temp_dir`, taken from the config file's directory when relative:
/// it must be a directory this process may create directories in, checked
/// now so that a wrong one stops the program at once instead of failing the
/// first XLSX export.
fn temp_dir(config: &Path, dir: &Path) -> Result<PathBuf, String> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{error, load, SOURCE};
    use super::super::Config;

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
        let e = error(&format!(
            "{SOURCE}[export]\nage_recipients = [\"{key}\", \"age1qqqq\"]\n"
        ));
        assert!(
            e.contains("export.age_recipients")
                && e.contains("recipient 2")
                && e.contains("age1qqqq"),
            "{e}"
        );
        let e = error(&format!("{SOURCE}[export]\nrequire_encryption = true\n"));
        assert!(
            e.contains("export.require_encryption") && e.contains("age_recipients"),
            "{e}"
        );
        let e = error(&format!("{SOURCE}[export]\nrecipients = []\n"));
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
}
