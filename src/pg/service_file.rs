//! `service=NAME` and the connection service files, read as libpq reads
//! them: first the user's file (`PGSERVICEFILE`, else `~/.pg_service.conf`),
//! then, when the service is not there, the system's (`pg_service.conf` in
//! `PGSYSCONFDIR`, else in Debian's /etc/postgresql-common). A file is
//! `[name]` sections of `keyword=value` lines (no spaces around `=`, as
//! libpq); `#` starts a comment line; within a section the first value of a
//! keyword wins.

use std::path::{Path, PathBuf};

use super::libpq_env::LibpqEnv;

/// The parameters of one service, and where they were found.
#[derive(Debug, PartialEq, Eq)]
pub struct Service {
    pub file: PathBuf,
    /// In the order written, the first of each keyword only.
    pub params: Vec<Setting>,
}

/// One `keyword=value` line of a service.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    pub keyword: String,
    pub value: String,
    /// Its line number in the file, for messages.
    pub line: usize,
}

/// The service `name`, from the first file that has it.
pub fn find(name: &str, env: &LibpqEnv) -> Result<Service, String> {
    let files: Vec<PathBuf> = env
        .user_service_file()
        .into_iter()
        .chain([env.system_service_file()])
        .collect();
    let mut looked = Vec::new();
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                looked.push(format!("{} (does not exist)", file.display()));
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the service file {} ({e}); make it readable by the user pgtrail \
                     runs as",
                    file.display()
                ))
            }
        };
        match section(&text, name)
            .map_err(|e| format!("in the service file {}: {e}", file.display()))?
        {
            Some(params) => {
                return Ok(Service {
                    file: file.clone(),
                    params,
                })
            }
            None => looked.push(format!("{} (no [{name}] section)", file.display())),
        }
    }
    Err(format!(
        "service \"{name}\" is not defined in any service file: looked in {}; add a [{name}] \
         section to one of them, or set PGSERVICEFILE to the file that has it",
        looked.join(", ")
    ))
}

/// The `keyword=value` lines of the section `[name]` of `text`; None when it has no such section.
fn section(text: &str, name: &str) -> Result<Option<Vec<Setting>>, String> {
    let mut params: Option<Vec<Setting>> = None;
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if params.is_some() {
                // The section ends at the next header; a later section of the same name is not read.
                break;
            }
            // As libpq: `[name]` with anything after the bracket.
            if header
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(']'))
            {
                params = Some(Vec::new());
            }
            continue;
        }
        let Some(found) = params.as_mut() else {
            continue;
        };
        let Some((keyword, value)) = line.split_once('=') else {
            return Err(format!("line {number}: \"{line}\" is not keyword=value"));
        };
        if keyword.ends_with(char::is_whitespace) || value.starts_with(char::is_whitespace) {
            return Err(format!(
                "line {number}: write {}={} with no spaces around '=' (libpq reads the spaces as \
                 part of the keyword)",
                keyword.trim(),
                value.trim()
            ));
        }
        if keyword == "service" {
            return Err(format!(
                "line {number}: a service cannot name another service"
            ));
        }
        if !found.iter().any(|s| s.keyword == keyword) {
            found.push(Setting {
                keyword: keyword.to_owned(),
                value: value.to_owned(),
                line: number,
            });
        }
    }
    Ok(params)
}

/// Where `file` is, for messages.
pub fn describe(file: &Path, line: usize) -> String {
    format!("{}, line {line}", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str, usize)]) -> Option<Vec<Setting>> {
        let setting = |(k, v, n): &(&str, &str, usize)| Setting {
            keyword: k.to_string(),
            value: v.to_string(),
            line: *n,
        };
        Some(pairs.iter().map(setting).collect())
    }

    const FILE: &str = "# services\n\
                        [shop]\n\
                        host=db1\n\
                        \x20 port=5433  \n\
                        host=ignored\n\
                        [shopping]\n\
                        host=db9\n\
                        [audit]\n\
                        dbname=audit\n\
                        [shop]\n\
                        user=never\n";

    #[test]
    fn sections_are_read_up_to_the_next_header() {
        assert_eq!(
            section(FILE, "shop"),
            Ok(params(&[("host", "db1", 3), ("port", "5433", 4)]))
        );
        assert_eq!(
            section(FILE, "audit"),
            Ok(params(&[("dbname", "audit", 9)]))
        );
        assert_eq!(section(FILE, "sho"), Ok(None));
        assert_eq!(
            section("[a]\nsslmode=verify-full\n", "a"),
            Ok(params(&[("sslmode", "verify-full", 2)]))
        );
    }

    #[test]
    fn malformed_lines_in_the_section_are_refused_with_their_number() {
        let e = section("[a]\nhost\n", "a").unwrap_err();
        assert!(e.contains("line 2") && e.contains("keyword=value"), "{e}");
        let e = section("[a]\nhost = db\n", "a").unwrap_err();
        assert!(e.contains("host=db") && e.contains("no spaces"), "{e}");
        let e = section("[a]\nservice=b\n", "a").unwrap_err();
        assert!(e.contains("another service"), "{e}");
        // Lines of other sections are not looked at.
        assert_eq!(section("[b]\nnonsense\n[a]\n", "a"), Ok(Some(vec![])));
    }

    #[test]
    fn the_user_file_comes_first_then_the_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir(&sys).unwrap();
        std::fs::write(dir.path().join(".pg_service.conf"), "[shop]\nhost=user\n").unwrap();
        std::fs::write(
            sys.join("pg_service.conf"),
            "[shop]\nhost=sys\n[audit]\nhost=sys\n",
        )
        .unwrap();
        let sysdir = sys.to_str().unwrap();
        let env = LibpqEnv::with(&[("PGSYSCONFDIR", sysdir)], Some(dir.path()));
        assert_eq!(find("shop", &env).unwrap().params[0].value, "user");
        let audit = find("audit", &env).unwrap();
        assert_eq!(
            (audit.file, audit.params[0].value.as_str()),
            (sys.join("pg_service.conf"), "sys")
        );
        let e = find("none", &env).unwrap_err();
        assert!(
            e.contains("service \"none\"") && e.contains("no [none] section"),
            "{e}"
        );
        let missing = dir.path().join("missing.conf");
        let env = LibpqEnv::with(
            &[
                ("PGSYSCONFDIR", sysdir),
                ("PGSERVICEFILE", missing.to_str().unwrap()),
            ],
            Some(dir.path()),
        );
        assert_eq!(find("shop", &env).unwrap().params[0].value, "sys");
        let e = find("other", &env).unwrap_err();
        assert!(
            e.contains("missing.conf (does not exist)") && e.contains("PGSERVICEFILE"),
            "{e}"
        );
    }
}
