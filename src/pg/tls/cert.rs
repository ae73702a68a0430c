//! What pgtrail reads from the server's certificate itself: the names it is
//! for (to say which names would have matched when the host does not), and
//! its `tls-server-end-point` hash for SCRAM channel binding (RFC 5929).

use std::net::IpAddr;

use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_SHA_1, ID_SHA_256, ID_SHA_384,
    ID_SHA_512, SHA_1_WITH_RSA_ENCRYPTION, SHA_256_WITH_RSA_ENCRYPTION,
    SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// The host names and addresses in the certificate's subjectAltName, as
/// text; when it has none, its subject (e.g. `CN=db.example.com`), marked as
/// such, since only subjectAltName counts for `verify-full`.
pub fn names(der: &[u8]) -> Vec<String> {
    let Ok(cert) = Certificate::from_der(der) else {
        return Vec::new();
    };
    let alt = match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, alt))) => alt.0,
        _ => Vec::new(),
    };
    let names: Vec<String> = alt
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.to_string()),
            GeneralName::IpAddress(ip) => ip_text(ip.as_bytes()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        vec![format!(
            "no subjectAltName, only the subject {} (pgtrail matches names in subjectAltName only)",
            cert.tbs_certificate.subject
        )]
    } else {
        names
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

/// The `tls-server-end-point` channel binding data: the certificate hashed
/// with the hash of its signature algorithm (SHA-1 raised to SHA-256, as RFC
/// 5929 says). None for an algorithm without one hash (e.g. Ed25519, RSA-PSS):
/// such a certificate cannot carry channel binding.
pub fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let algorithm = Certificate::from_der(der).ok()?.signature_algorithm.oid;
    let sha256 = [
        ID_SHA_1,
        ID_SHA_256,
        SHA_1_WITH_RSA_ENCRYPTION,
        SHA_256_WITH_RSA_ENCRYPTION,
        ECDSA_WITH_SHA_256,
    ];
    let sha384 = [ID_SHA_384, SHA_384_WITH_RSA_ENCRYPTION, ECDSA_WITH_SHA_384];
    let sha512 = [ID_SHA_512, SHA_512_WITH_RSA_ENCRYPTION, ECDSA_WITH_SHA_512];
    if sha256.contains(&algorithm) {
        Some(Sha256::digest(der).to_vec())
    } else if sha384.contains(&algorithm) {
        Some(Sha384::digest(der).to_vec())
    } else if sha512.contains(&algorithm) {
        Some(Sha512::digest(der).to_vec())
    } else {
        None
    }
}
