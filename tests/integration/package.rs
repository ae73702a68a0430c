//! The Debian package (docs/packaging.md): `scripts/package.sh --no-build` packages the binary
//! under test (installing cargo-deb first when it is missing), `dpkg-deb -x` unpacks it into an
//! empty directory, and what a DBA gets is run and read there: `pgtrail --version`, `man -l` on
//! the pages, the completions against the binary's own list of subcommands, the units against
//! the files the package holds, and the control files (conffiles, maintainer scripts) with
//! `dpkg-deb -e`. Nothing is installed on the machine running the tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

use crate::harness::bin;

/// The .deb, built once for the tests below.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        // The binary under test is TARGET/release/pgtrail: package that one, in that target dir.
        let target = Path::new(bin())
            .ancestors()
            .nth(2)
            .expect("the binary lies in TARGET/release/");
        let repo = env!("CARGO_MANIFEST_DIR");
        let out = run(Command::new("bash")
            .arg(format!("{repo}/scripts/package.sh"))
            .arg("--no-build")
            .env("CARGO_TARGET_DIR", target));
        let deb = PathBuf::from(out.lines().last().unwrap_or_default());
        assert!(deb.extension().is_some_and(|e| e == "deb"), "{out}");
        deb
    })
}

/// Runs `command`, fails the test unless it succeeds, and returns its stdout.
fn run(command: &mut Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the command starts");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(
        status.success(),
        "{command:?}: {status}\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

/// The package's files, unpacked (not installed) into an empty directory.
fn unpacked() -> TempDir {
    let root = TempDir::new().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(package())
        .arg(root.path()));
    root
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The subcommands the packaged binary lists in its `--help`, but `help`.
fn subcommands(binary: &Path) -> Vec<String> {
    let help = run(Command::new(binary).arg("--help"));
    let commands = help
        .split_once("Commands:\n")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .map(|(commands, _)| commands)
        .unwrap_or_else(|| panic!("no Commands: in\n{help}"));
    let names: Vec<String> = commands
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    names
}

#[test]
fn the_packaged_binary_runs_and_its_man_pages_and_completions_cover_every_subcommand() {
    let root = unpacked();
    let binary = root.path().join("usr/bin/pgtrail");
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("pgtrail {}", env!("CARGO_PKG_VERSION"))
    );
    let names = subcommands(&binary);

    let man1 = root.path().join("usr/share/man/man1");
    let page = run(Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(man1.join("pgtrail.1.gz"))
        .env("MANWIDTH", "100"));
    assert!(
        page.contains("SYNOPSIS") && page.contains("--config"),
        "{page}"
    );
    for name in &names {
        // Each subcommand is listed on the main page and has a page of its own that man reads.
        assert!(
            page.contains(&format!("pgtrail-{name}(1)")),
            "{name}:\n{page}"
        );
        let own = run(Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(man1.join(format!("pgtrail-{name}.1.gz"))));
        assert!(own.contains(&format!("pgtrail-{name}")), "{name}:\n{own}");
    }
    let status = run(Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(man1.join("pgtrail-status.1.gz")));
    assert!(status.contains("--check"), "{status}");

    for completion in [
        "usr/share/bash-completion/completions/pgtrail",
        "usr/share/zsh/vendor-completions/_pgtrail",
        "usr/share/fish/vendor_completions.d/pgtrail.fish",
    ] {
        let text = read(&root.path().join(completion));
        for name in names.iter().chain([&"reset-password".to_owned()]) {
            assert!(text.contains(name.as_str()), "{completion} lacks {name}");
        }
        // The packaging entry point is not a subcommand a shell should offer.
        assert!(!text.contains("generate-files"), "{completion}");
    }
    // bash's completion loads and registers itself for pgtrail.
    let bash = root
        .path()
        .join("usr/share/bash-completion/completions/pgtrail");
    let registered = run(Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p pgtrail", bash.display())));
    assert!(registered.contains("pgtrail"), "{registered}");
}

#[test]
fn the_package_installs_units_that_run_its_binary_as_pgtrail_and_a_config_for_that_group() {
    let root = unpacked();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for unit in ["pgtrail.service", "pgtrail@.service"] {
        let text = read(&root.path().join("lib/systemd/system").join(unit));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let program = exec.split_whitespace().next().unwrap_or_default();
        assert_eq!(program, "/usr/bin/pgtrail", "{unit}");
        let packaged = root.path().join(program.trim_start_matches('/'));
        assert!(
            packaged.is_file(),
            "{unit} runs {program}, which the package lacks"
        );
        assert!(text.contains("\nUser=pgtrail\n") && text.contains("\nGroup=pgtrail\n"));
        assert!(text.contains("Documentation=man:pgtrail(1)"), "{unit}");
        assert!(text.contains("ReadOnlyPaths=/etc/pgtrail\n"), "{unit}");
        // Not even a comment sends the reader to the paths of an install by hand.
        assert!(!text.contains("/usr/local"), "{unit}:\n{text}");
        assert!(
            text.contains("# Installed by the pgtrail Debian package"),
            "{unit}"
        );
        assert!(
            text.contains("RestartPreventExitStatus=10 11 12 13 14\n"),
            "{unit}"
        );
    }

    let config = root.path().join("etc/pgtrail/pgtrail.toml");
    assert_eq!(
        read(&config),
        read(&repo.join("config/pgtrail.example.toml"))
    );
    let mode = fs::metadata(&config).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "{mode:o}");
    assert!(root
        .path()
        .join("usr/share/doc/pgtrail/copyright")
        .is_file());
    assert!(root
        .path()
        .join("usr/share/doc/pgtrail/docs/packaging.md")
        .is_file());

    let control = TempDir::new().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(package())
        .arg(control.path()));
    let conffiles = read(&control.path().join("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/pgtrail/pgtrail.toml");
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(package()).args([
        "Package",
        "Depends",
        "Maintainer",
    ]));
    assert!(
        fields.contains("Package: pgtrail") && fields.contains("passwd"),
        "{fields}"
    );
    // Debian wants `Name <address>`; the address is a reserved, undeliverable one, said so.
    assert!(
        fields.contains("Maintainer: pgtrail developers <developers@pgtrail.invalid>"),
        "{fields}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        run(Command::new("sh").arg("-n").arg(&path));
    }
    // postinst makes the user the units name, and gives its group (only) the config to read.
    let postinst = read(&control.path().join("postinst"));
    assert!(postinst.contains("useradd --system") && postinst.contains(" pgtrail\n"));
    for override_ in [
        "\"0750 /etc/pgtrail\"",
        "\"0640 /etc/pgtrail/pgtrail.toml\"",
        "--add root pgtrail",
    ] {
        assert!(postinst.contains(override_), "{override_}:\n{postinst}");
    }
}
