//! `pgtrail generate-files DIR`: writes the man pages (clap_mangen) and the bash, zsh and fish
//! completions (clap_complete) from the command line's own clap definition, for
//! scripts/package.sh to put in the Debian package. It is deliberately not a subcommand of that
//! definition: a hidden subcommand would still be offered by the completions it writes.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// The first argument that asks for the files instead of a normal command.
pub const ARGUMENT: &str = "generate-files";

/// Where each shell's completion goes under DIR, named as Debian installs it (bash looks a
/// completion up by the command's name, zsh by `_` and the name).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "completions/bash/pgtrail"),
    (Shell::Zsh, "completions/zsh/_pgtrail"),
    (Shell::Fish, "completions/fish/pgtrail.fish"),
];

/// The directory named after [`ARGUMENT`] when the command line is `pgtrail generate-files DIR`.
pub fn requested(args: &[impl AsRef<OsStr>]) -> Option<Result<PathBuf>> {
    match args {
        [_, first, rest @ ..] if first.as_ref() == ARGUMENT => Some(match rest {
            [dir] => Ok(PathBuf::from(dir.as_ref())),
            _ => Err(anyhow::anyhow!("usage: pgtrail {ARGUMENT} DIR")),
        }),
        _ => None,
    }
}

/// Writes `DIR/man1/*.1` (one page for pgtrail and one for each subcommand) and the completions;
/// returns the files written.
pub fn write_files(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let man = dir.join("man1");
    create_dir(&man)?;
    clap_mangen::generate_to(cli.clone(), &man)
        .with_context(|| format!("cannot write the man pages to {}", man.display()))?;
    let mut written = list(&man)?;
    for (shell, name) in COMPLETIONS {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "pgtrail", &mut text);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The files in `dir`, sorted, so that the list printed is the same on every run.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .with_context(|| format!("cannot list {}", dir.display()))?;
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_argument_of_generate_files_asks_for_the_files() {
        assert!(requested(&["pgtrail", "status"]).is_none());
        assert!(requested(&["pgtrail", "--config", "generate-files"]).is_none());
        let dir = requested(&["pgtrail", "generate-files", "out"]);
        assert_eq!(dir.map(|d| d.ok()), Some(Some(PathBuf::from("out"))));
        let missing = requested(&["pgtrail", "generate-files"]);
        assert!(matches!(missing, Some(Err(_))));
    }

    #[test]
    fn writes_a_page_per_subcommand_and_three_completions() -> Result<()> {
        let cli = clap::Command::new("pgtrail")
            .version("1.2.3")
            .subcommand(clap::Command::new("status").about("Show the slot"));
        let dir = tempfile::tempdir()?;
        let written = write_files(cli, dir.path())?;
        let names: Vec<_> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).map(|p| p.display().to_string()))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            names,
            [
                "man1/pgtrail-status.1",
                "man1/pgtrail.1",
                "completions/bash/pgtrail",
                "completions/zsh/_pgtrail",
                "completions/fish/pgtrail.fish",
            ]
        );
        let page = fs::read_to_string(dir.path().join("man1/pgtrail.1"))?;
        assert!(page.contains("pgtrail\\-status"), "{page}");
        let fish = fs::read_to_string(dir.path().join("completions/fish/pgtrail.fish"))?;
        assert!(fish.contains("Show the slot"), "{fish}");
        Ok(())
    }
}
