//! `pgtrail verify --archive FILE`: checks an archive file on its own
//! ([`crate::archive::check`]), with no config or store: years after the
//! range was dropped, on another machine. Prints what it holds, each run's
//! seam (the hash before its first entry) and last hash, and the file's
//! SHA-256, to compare with the drop event that recorded it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::archive::{self, ArchiveError, Checked};
use crate::text::hex;

/// The outcome, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ArchiveReport {
    pub intact: bool,
    pub file: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub checked: Option<Checked>,
    /// What is wrong, when not intact; `line` (1 is the header) and `id` say where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// Checks `file`; `Ok` whether intact or not, `Err` when it could not be
/// checked at all (unreadable, or encrypted and not decryptable with `identity`).
pub fn check(file: &Path, identity: Option<&Path>) -> Result<ArchiveReport> {
    let mut report = ArchiveReport {
        intact: false,
        file: file.display().to_string(),
        checked: None,
        problem: None,
        line: None,
        id: None,
    };
    match archive::check(file, identity) {
        Ok(checked) => {
            report.intact = true;
            report.checked = Some(checked);
        }
        Err(e @ ArchiveError::Broken { line, id, .. }) => {
            report.problem = Some(e.to_string());
            (report.line, report.id) = (line, id);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(report)
}

/// Runs the command: prints the report, exit 0 when intact, 1 when not.
pub fn command(file: &Path, identity: Option<&Path>, json: bool) -> Result<ExitCode> {
    let report = check(file, identity)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl ArchiveReport {
    /// Lines for a person.
    pub fn to_text(&self) -> String {
        let Some(c) = &self.checked else {
            let problem = self.problem.as_deref().unwrap_or("not intact");
            return format!("BROKEN: {problem}\nNOT INTACT: archive {}\n", self.file);
        };
        let h = &c.header;
        let mut out = format!(
            "archive {}{}: source {} (id {}), committed from {} to {}, written {}\n",
            self.file,
            if c.encrypted { " (age-encrypted)" } else { "" },
            h.source,
            h.source_id,
            h.from.to_rfc3339(),
            h.to.to_rfc3339(),
            h.written_at.to_rfc3339()
        );
        for (i, r) in c.runs.iter().enumerate() {
            out.push_str(&format!(
                "run {}: entries {} to {} ({} entries), after {}, last hash {}\n",
                i + 1,
                r.first_id,
                r.last_id,
                r.entries,
                hex(&r.prev),
                hex(&r.last_hash)
            ));
        }
        if c.unchained > 0 {
            out.push_str(&format!(
                "{} entries were stored before the chain began and are not covered\n",
                c.unchained
            ));
        }
        out.push_str(&format!("sha256 {} ({} bytes)\n", hex(&c.sha256), c.bytes));
        out.push_str(&format!("intact: {} entries verified\n", c.entries));
        out
    }
}
