//! TLS for both kinds of connection (ordinary and replication), with libpq's
//! `sslmode` and `sslrootcert` meanings:
//!
//! - `disable`: plain text; `allow` and `prefer` (the default): TLS when the
//!   server offers it (`allow` is taken as `prefer`: TLS first); `require`:
//!   TLS or fail. These three accept any certificate, unless `sslrootcert`
//!   names a CA file: then it must be signed by that CA, as with libpq.
//! - `verify-ca`: TLS, with a certificate signed by the CA in `sslrootcert`.
//! - `verify-full`: that, and the certificate is for the host connected to
//!   (its subjectAltName); without `sslrootcert`, the system's trusted CAs.
//!
//! tokio-postgres' parser knows none of this; [`super::PgUrl`] takes these
//! parameters out of the URL, builds a [`Tls`], and gives tokio-postgres the
//! plain `disable`/`prefer`/`require` that decides whether TLS is asked for.

mod cert;
mod roots;
mod verify;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::ClientConfig;
use tokio_postgres::config::SslMode;

pub use cert::tls_server_end_point;
use roots::RootsSource;
pub use verify::refusal_in;
use verify::{Check, Verifier};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Result<TlsMode, String> {
        Ok(match text {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// Whether a server that does not offer TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }

    /// What tokio-postgres needs to know: whether to ask for TLS, and whether
    /// to go on without it (the certificate check is in our verifier).
    pub fn for_tokio_postgres(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// A connection string's TLS settings, with the client configuration they
/// make (built once, when the URL is read, so a missing CA file is reported
/// at start-up rather than at the first connection).
#[derive(Debug, Clone)]
pub struct Tls {
    mode: TlsMode,
    config: Arc<ClientConfig>,
}

impl Tls {
    /// From the URL's `sslmode` and `sslrootcert`, as given (None: not given).
    pub fn from_params(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<Tls, String> {
        let source = match sslrootcert {
            None | Some("") => None,
            Some("system") => Some(RootsSource::System),
            Some(path) => Some(RootsSource::File(PathBuf::from(path))),
        };
        let mode = match sslmode {
            Some(text) => TlsMode::parse(text)?,
            // As libpq: trusting the system's CAs only makes sense with the name checked.
            None if source == Some(RootsSource::System) => TlsMode::VerifyFull,
            None => TlsMode::Prefer,
        };
        if source == Some(RootsSource::System) && mode != TlsMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (not {}): any public CA signs \
                 certificates for anyone, so only the host name check makes them mean something",
                sslmode.unwrap_or_default()
            ));
        }
        let source = match (mode, source) {
            (TlsMode::Disable, _) => None,
            (TlsMode::VerifyCa, None) => {
                return Err(
                    "sslmode=verify-ca needs sslrootcert=FILE, the CA that signed the \
                            server's certificate (against the system's public CAs, any \
                            certificate for any name would pass); or use sslmode=verify-full"
                        .into(),
                )
            }
            (TlsMode::VerifyFull, None) => Some(RootsSource::System),
            (_, source) => source,
        };
        let check = match source {
            None => Check::EncryptOnly,
            Some(source) => Check::AgainstCa {
                roots: source.load()?,
                source,
                check_name: mode == TlsMode::VerifyFull,
            },
        };
        Ok(Tls {
            mode,
            config: client_config(check),
        })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The rustls configuration for this URL's connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The connector for tokio-postgres, which asks for TLS as its `sslmode` says.
    pub fn make_connect(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new((*self.config).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

fn client_config(check: Check) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(Verifier {
        provider: provider.clone(),
        check,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    // The ring provider supports the default protocol versions; this cannot fail.
    Arc::new(
        config.unwrap_or_else(|e| panic!("rustls rejected its own default protocol versions: {e}")),
    )
}

/// A connector that checks no certificate, for cancel requests only: a cancel
/// carries nothing but the session's cancel key, and the session itself was
/// opened with the URL's own checks.
pub fn make_connect() -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new((*client_config(Check::EncryptOnly)).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<TlsMode, String> {
        Tls::from_params(sslmode, sslrootcert).map(|t| t.mode())
    }

    #[test]
    fn modes_follow_libpq() {
        assert_eq!(mode(None, None), Ok(TlsMode::Prefer));
        assert_eq!(mode(Some("allow"), None), Ok(TlsMode::Allow));
        assert_eq!(mode(Some("require"), None), Ok(TlsMode::Require));
        assert_eq!(TlsMode::Allow.for_tokio_postgres(), SslMode::Prefer);
        assert_eq!(TlsMode::VerifyFull.for_tokio_postgres(), SslMode::Require);
        assert!(mode(Some("verify"), None)
            .unwrap_err()
            .contains("not one of disable, allow"));
    }

    /// Reading these parameters fails with a message saying `needle`.
    fn assert_refused(sslmode: &str, sslrootcert: Option<&str>, needle: &str) {
        let err = mode(Some(sslmode), sslrootcert).unwrap_err();
        assert!(err.contains(needle), "{sslmode}, {sslrootcert:?}: {err}");
    }

    #[test]
    fn system_roots_need_verify_full() {
        let weak = "needs sslmode=verify-full (not require)";
        assert_refused("require", Some("system"), weak);
        assert_refused("verify-ca", Some("system"), "needs sslmode=verify-full");
        assert_refused("verify-ca", None, "verify-ca needs sslrootcert=FILE");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let missing = Some("/nonexistent/ca.pem");
        let named = "cannot read the sslrootcert file /nonexistent/ca.pem";
        assert_refused("verify-full", missing, named);
        assert_refused("verify-full", missing, "or sslrootcert=system");
        // require with a CA file checks it, as libpq does: the file must be there.
        assert_refused("require", missing, named);
        // disable never reads it.
        assert_eq!(mode(Some("disable"), missing), Ok(TlsMode::Disable));
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert_refused("verify-ca", path.to_str(), "holds no usable CA certificate");
    }
}
