//! One-shot runs of the binary (`pgtrail --config FILE ARGS…`) and what they printed, with the
//! checks every run shares: no panic, and failures that say what is wrong.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{bin, tail};

/// What a one-shot `pgtrail` invocation did.
pub struct CliOutput {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.status,
            self.elapsed,
            tail(&self.stdout, 200),
            tail(&self.stderr, 200)
        )
    }
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        assert_no_panic(&self.stderr, &self.cmd);
        self
    }

    /// stdout and stderr together (error messages may go to either), ANSI colours removed.
    pub fn combined(&self) -> String {
        strip_ansi(&format!("{}\n{}", self.stdout, self.stderr))
    }

    /// A failure as the spec wants it: non-zero exit within `max`, no panic, and every needle
    /// present (case-insensitive) in the output.
    pub fn assert_clean_failure(&self, needles: &[&str], max: Duration) {
        assert!(!self.success(), "expected a non-zero exit:\n{self}");
        assert!(
            self.status.code().is_some(),
            "expected an exit code, not a signal:\n{self}"
        );
        assert!(
            self.elapsed <= max,
            "expected to fail within {max:?}:\n{self}"
        );
        assert_no_panic(&self.stderr, &self.cmd);
        assert_no_panic(&self.stdout, &self.cmd);
        let hay = self.combined().to_lowercase();
        for n in needles {
            assert!(
                hay.contains(&n.to_lowercase()),
                "expected the output to mention {n:?}:\n{self}"
            );
        }
    }
}

/// Remove ANSI escape sequences (`ESC [ … letter`), so messages can be matched as plain text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn assert_no_panic(output: &str, what: &str) {
    assert!(
        !output.contains("panicked"),
        "`{what}` panicked:\n{}",
        tail(output, 100)
    );
}

/// Run the binary once with `args` (no `--config` added), extra environment `envs`, and a hard
/// `timeout` after which it is killed and the test fails. PGTRAIL_CONFIG and PGPASSWORD from the
/// test's own environment are removed first so only what a test passes counts.
pub async fn run_pgtrail(args: &[OsString], envs: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let mut out_file = tempfile::tempfile().unwrap();
    let mut err_file = tempfile::tempfile().unwrap();
    let cmd = format!(
        "{}pgtrail {}",
        envs.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("PGTRAIL_CONFIG")
        .env_remove("PGPASSWORD")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let read = |f: &mut File| {
                let mut s = String::new();
                f.seek(SeekFrom::Start(0)).unwrap();
                let _ = f.read_to_string(&mut s);
                s
            };
            panic!(
                "`{cmd}` did not exit within {timeout:?} (killed: {status})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                tail(&read(&mut out_file), 100),
                tail(&read(&mut err_file), 100)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    let read = |f: &mut File| {
        let mut b = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut b).unwrap();
        String::from_utf8(b).unwrap_or_else(|e| panic!("`{cmd}` printed invalid UTF-8: {e}"))
    };
    CliOutput {
        stdout: read(&mut out_file),
        stderr: read(&mut err_file),
        cmd,
        status,
        elapsed,
    }
}

/// `pgtrail --config FILE ARGS…` with a generous timeout.
pub async fn pgtrail(config: &Path, args: &[&str]) -> CliOutput {
    pgtrail_env(config, args, &[]).await
}

/// `pgtrail --config FILE ARGS…` with extra environment variables.
pub async fn pgtrail_env(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> CliOutput {
    let mut all: Vec<OsString> = vec!["--config".into(), config.as_os_str().to_owned()];
    all.extend(args.iter().map(OsString::from));
    run_pgtrail(&all, envs, Duration::from_secs(180)).await
}
