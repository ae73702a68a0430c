//! `[log]`: how the program writes its log lines to stderr: plain text for a
//! person reading the journal, or one JSON object per line for a log shipper.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<String>,
}

/// `log.format`: the shape of every log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event, fields as `key=value` (the default).
    #[default]
    Text,
    /// One JSON object per line, the event's fields as JSON fields.
    Json,
}

impl LogFormat {
    /// The values `log.format` (and `PGTRAIL_LOG_FORMAT`) accept, for error messages.
    pub const ALLOWED: &'static str = "\"text\" or \"json\"";

    /// A format by its name in the config, or why the name is not one.
    pub fn parse(name: &str) -> Result<LogFormat, String> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: use {}",
                LogFormat::ALLOWED
            )),
        }
    }
}

/// `[log]`, validated.
pub(super) fn format(raw: &RawLog, path: &Path) -> Result<LogFormat, ConfigError> {
    match &raw.format {
        None => Ok(LogFormat::default()),
        Some(name) => {
            LogFormat::parse(name).map_err(|m| ConfigError::invalid_in(path)("log.format", m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, load, SOURCE};
    use super::LogFormat;

    #[test]
    fn format_defaults_to_text_and_takes_json() {
        assert_eq!(load(SOURCE).unwrap().log_format, LogFormat::Text);
        let c = load(&format!("{SOURCE}[log]\nformat = \"text\"\n")).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = load(&format!("{SOURCE}[log]\nformat = \"json\"\n")).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn a_wrong_format_names_the_key_and_the_allowed_values() {
        for bad in ["xml", "JSON", ""] {
            let e = error(&format!("{SOURCE}[log]\nformat = {bad:?}\n"));
            assert!(
                e.contains("log.format") && e.contains("\"text\" or \"json\""),
                "{e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let e = error(&format!("{SOURCE}[log]\nformat = 1\n"));
        assert!(e.contains("format"), "{e}");
    }

    #[test]
    fn unknown_log_keys_are_refused() {
        let e = error(&format!("{SOURCE}[log]\nlevel = \"debug\"\n"));
        assert!(e.contains("level"), "{e}");
    }
}
