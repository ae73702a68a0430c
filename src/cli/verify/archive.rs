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
    /// Every entry's hash and link verified (or the file holds none).
    pub intact: bool,
    pub outcome: Outcome,
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

/// What the check found, each with its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exit 0: whole, and every hashed entry verified.
    Intact,
    /// Exit 1: damaged, cut short or edited.
    Broken,
    /// Exit 3: well formed, but every entry was stored before the chain
    /// began: no hash, so nothing in it can be verified.
    Unverifiable,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Intact => 0,
            Outcome::Broken => 1,
            Outcome::Unverifiable => 3,
        })
    }
}

/// Checks `file` (records of at most `max_line` bytes); `Ok` whether intact
/// or not, `Err` when it could not be checked at all (unreadable, or
/// encrypted and not decryptable with `identity`).
pub fn check(file: &Path, identity: Option<&Path>, max_line: u64) -> Result<ArchiveReport> {
    let mut report = ArchiveReport {
        intact: false,
        outcome: Outcome::Broken,
        file: file.display().to_string(),
        checked: None,
        problem: None,
        line: None,
        id: None,
    };
    match archive::check(file, identity, max_line) {
        Ok(checked) if checked.unverifiable() => {
            report.outcome = Outcome::Unverifiable;
            report.checked = Some(checked);
        }
        Ok(checked) => {
            report.intact = true;
            report.outcome = Outcome::Intact;
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

/// Runs the command: prints the report, exit 0 when intact, 1 when not, 3
/// when nothing in it can be verified.
pub fn command(
    file: &Path,
    identity: Option<&Path>,
    max_line: u64,
    json: bool,
) -> Result<ExitCode> {
    let report = check(file, identity, max_line)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.outcome.exit_code())
}

impl ArchiveReport {
    /// Lines for a person.
    pub fn to_text(&self) -> String {
        let Some(c) = &self.checked else {
            let problem = self.problem.as_deref().unwrap_or("not intact");
            return format!(
                "BROKEN: {problem}\nNOT INTACT: archive {}: it is not the file pgtrail wrote; use an \
                 intact copy (its SHA-256 is in the event of the drop that archived it)\n",
                self.file
            );
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
        out.push_str(&format!(
            "lines sha256 {} (the same however the file is compressed or encrypted)\n",
            hex(&c.lines_sha256)
        ));
        if self.outcome == Outcome::Unverifiable {
            out.push_str(&format!(
                "UNVERIFIABLE: none of its {} entries has a hash (all were stored before the chain \
                 began): the file is well formed, but nothing in it can be verified; compare its \
                 SHA-256 with the one recorded when it was written\n",
                c.entries
            ));
        } else {
            out.push_str(&format!(
                "intact: {} entries verified\n",
                c.entries - c.unchained
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Header;

    fn report(entries: u64, unchained: u64) -> ArchiveReport {
        let t = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let checked = Checked {
            path: "a.jsonl.zst".into(),
            header: Header {
                pgtrail_archive: 1,
                source: "shop".into(),
                source_id: 1,
                from: t,
                to: t + chrono::Duration::days(1),
                written_at: t + chrono::Duration::days(2),
            },
            entries,
            unchained,
            runs: Vec::new(),
            sha256: [1; 32],
            bytes: 100,
            encrypted: false,
            lines_sha256: [2; 32],
            sequence: [3; 32],
        };
        let unverifiable = checked.unverifiable();
        ArchiveReport {
            intact: !unverifiable,
            outcome: if unverifiable {
                Outcome::Unverifiable
            } else {
                Outcome::Intact
            },
            file: "a.jsonl.zst".into(),
            checked: Some(checked),
            problem: None,
            line: None,
            id: None,
        }
    }

    #[test]
    fn entries_without_hashes_are_said_to_be_unverifiable() {
        let all = report(3, 3);
        assert_eq!(all.outcome, Outcome::Unverifiable);
        assert_eq!(Outcome::Unverifiable.exit_code(), ExitCode::from(3));
        let text = all.to_text();
        assert!(
            text.contains("UNVERIFIABLE: none of its 3 entries has a hash")
                && !text.contains("intact"),
            "{text}"
        );
        let json = serde_json::to_value(&all).unwrap_or_default();
        assert_eq!(
            (&json["intact"], &json["outcome"]),
            (
                &serde_json::json!(false),
                &serde_json::json!("unverifiable")
            )
        );
        // Some without: the others are verified, and the count says which.
        let some = report(5, 2);
        assert_eq!(some.outcome, Outcome::Intact);
        let text = some.to_text();
        assert!(
            text.contains("2 entries were stored before the chain began")
                && text.contains("intact: 3 entries verified"),
            "{text}"
        );
    }
}
