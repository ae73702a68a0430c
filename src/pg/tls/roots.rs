//! The CA certificates a server's certificate is checked against: the PEM file
//! named by `sslrootcert`, or the system's trusted roots (`sslrootcert=system`,
//! and `verify-full` without `sslrootcert`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Where the trusted CAs come from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootsSource {
    File(PathBuf),
    System,
}

impl RootsSource {
    /// The signer a certificate was expected from, for "not signed by …".
    pub fn signer(&self) -> String {
        match self {
            RootsSource::File(path) => format!("the CA in {}", path.display()),
            RootsSource::System => "any CA the system trusts (sslrootcert=system)".into(),
        }
    }

    pub fn load(&self) -> Result<Arc<RootCertStore>, String> {
        match self {
            RootsSource::File(path) => from_file(path),
            RootsSource::System => system(),
        }
    }
}

fn from_file(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let fix = "give sslrootcert the path of the PEM file holding the CA certificate that signed \
               the server's certificate (a relative path is taken from the working directory), \
               or sslrootcert=system for the system's trusted CAs";
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the sslrootcert file {}: {e}; {fix}",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "the sslrootcert file {} is not valid PEM: {e}; {fix}",
                path.display()
            )
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "the sslrootcert file {} holds no usable CA certificate (expected PEM blocks \
             \"-----BEGIN CERTIFICATE-----\"); {fix}",
            path.display()
        ));
    }
    Ok(Arc::new(roots))
}

fn system() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(format!(
            "sslrootcert=system (or sslmode=verify-full without sslrootcert) uses the system's \
             trusted CAs, but none were found{}; install them (Debian: apt-get install \
             ca-certificates), point SSL_CERT_FILE at a PEM bundle, or name a CA file with \
             sslrootcert=/path/ca.pem",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        ));
    }
    Ok(Arc::new(roots))
}
