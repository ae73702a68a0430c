//! How pgtrail checks a server's certificate, as [`Check`] says: not at all
//! (libpq's `prefer` and `require` without a CA: any certificate, so long as
//! the peer holds its key), or against trusted CAs (`verify-ca`: signed by
//! one of them; `verify-full`: that, and issued for the host connected to).
//! A refusal says in its message what was wrong and how to fix it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::roots::RootsSource;

// Short names, so that the two handshake signature checks stay short.
type Cert<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Signed = Result<HandshakeSignatureValid, rustls::Error>;

/// What a server's certificate must be.
#[derive(Debug)]
pub enum Check {
    /// Anything: the connection is encrypted, but a man in the middle can
    /// present a certificate of its own (libpq's `require`).
    EncryptOnly,
    /// Signed by one of `roots`; with `check_name`, also issued for the host
    /// name (or address) connected to.
    AgainstCa {
        roots: Arc<RootCertStore>,
        source: RootsSource,
        check_name: bool,
    },
}

/// The rustls verifier for a [`Check`]. Whatever the check, the handshake's
/// signatures are verified: the peer must hold the key of the certificate it shows.
#[derive(Debug)]
pub struct Verifier {
    pub provider: Arc<CryptoProvider>,
    pub check: Check,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::AgainstCa {
            roots,
            source,
            check_name,
        } = &self.check
        else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    refusal(format!(
                        "the server's certificate is not signed by {}; name the CA that signed it \
                     with sslrootcert, or check that this is the server you meant",
                        source.signer()
                    ))
                }
                other => other,
            })?;
        if *check_name {
            verify_server_name(&cert, server_name).map_err(|e| match e {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => refusal(format!(
                    "the server's certificate is for {}, not {}: connect by one of those names \
                     or use sslmode=verify-ca",
                    super::cert::names(end_entity).join(", "),
                    server_name.to_str()
                )),
                other => other,
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &Cert<'_>, dss: &Dss) -> Signed {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &Cert<'_>, dss: &Dss) -> Signed {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One of our refusals: its message says what was wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

/// A refusal whose message is ours, in the error rustls expects (which makes
/// it send the server a `bad_certificate` alert).
fn refusal(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
        message,
    )))))
}

/// Our refusal's message, if `error` or one of its causes is one. rustls
/// shows it only through its Debug form, and `io::Error` hides its inner
/// error from `source()`, so the chain is walked by hand.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
                candidate.downcast_ref::<rustls::Error>()
            {
                if let Some(Refusal(message)) = other.0.downcast_ref::<Refusal>() {
                    return Some(message.clone());
                }
            }
        }
        next = e.source();
    }
    None
}
