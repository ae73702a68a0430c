//! A private certificate authority for the TLS tests, made with the `openssl` command: a CA, a
//! server certificate it signed for `DNS:localhost` only (so `127.0.0.1` is a wrong name), and
//! a second CA that signed nothing (so trusting it alone refuses the server).

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::new_temp_dir;

pub struct Pki {
    /// The CA that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// Another CA, unrelated to the server (PEM).
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    // Last: removed when the test is done.
    dir: TempDir,
}

impl Pki {
    /// Makes the files (P-256 keys: a fraction of a second in all).
    pub fn new() -> Pki {
        let dir = new_temp_dir("pgtrail-it-pki-");
        let path = |name: &str| dir.path().join(name).display().to_string();
        make_ca(&path("ca"), "pgtrail-test-CA");
        make_ca(&path("other_ca"), "some-other-CA");
        openssl(&format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
             -keyout {} -out {}",
            path("server.key"),
            path("server.csr")
        ));
        std::fs::write(
            path("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(&format!(
            "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 2 -extfile {} -out {}",
            path("server.csr"),
            path("ca.pem"),
            path("ca.key"),
            path("server.ext"),
            path("server.crt")
        ));
        Pki {
            ca: path("ca.pem").into(),
            other_ca: path("other_ca.pem").into(),
            server_cert: path("server.crt").into(),
            server_key: path("server.key").into(),
            dir,
        }
    }
}

/// A self-signed CA certificate `<stem>.pem` and its key `<stem>.key`.
fn make_ca(stem: &str, name: &str) {
    openssl(&format!(
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN={name} \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
         -keyout {stem}.key -out {stem}.pem"
    ));
}

/// Runs `openssl` with `args`, split at whitespace (the temp dir's paths have none).
fn openssl(args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An Ed25519 key pair in PEM, made with openssl: (private, public).
pub fn keypair(dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    (
        private.to_string_lossy().into_owned(),
        public.to_string_lossy().into_owned(),
    )
}
