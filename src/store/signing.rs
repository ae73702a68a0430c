//! Signed chain heads: with `[store] signing_key_file`, the daemon signs both
//! chains' heads (their entry counts and last hashes) with an Ed25519 key the
//! DBA keeps outside the store, at most every `sign_every_seconds` and when it
//! stops, into `pgtrail.signed_heads`. `pgtrail verify --public-key FILE` then
//! proves that the chain as stored is the one that was signed: someone who can
//! write the store past its trigger can recompute every hash, but cannot sign.
//!
//! What is signed (all numbers 8 bytes big-endian):
//! `"pgtrail signed head v1\n"`, the signing time (microseconds since
//! 1970-01-01 UTC), the capture chain's entry count and hash, the events
//! chain's entry count and hash.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use tokio_postgres::Client;

use super::chain::Chain;
use super::StoreError;

const DOMAIN: &[u8] = b"pgtrail signed head v1\n";

/// The key and how often to sign; the key never leaves this type (its Debug
/// shows only the public half).
#[derive(Clone)]
pub struct HeadSigner {
    key: Arc<SigningKey>,
    pub every: Duration,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSigner")
            .field(
                "public_key",
                &super::chain::hex(self.key.verifying_key().as_bytes()),
            )
            .field("every", &self.every)
            .finish()
    }
}

impl HeadSigner {
    /// Reads a PKCS#8 PEM private key, as `openssl genpkey -algorithm ed25519` writes it.
    pub fn from_file(file: &Path, every: Duration) -> Result<HeadSigner, String> {
        let pem = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the key file {}: {e}", file.display()))?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
            format!(
                "{} is not an Ed25519 private key in PEM (PKCS#8) form; make one with: \
                 openssl genpkey -algorithm ed25519 -out {}",
                file.display(),
                file.display()
            )
        })?;
        Ok(HeadSigner {
            key: Arc::new(key),
            every,
        })
    }

    /// Signs the heads as they are now committed, and stores the signature.
    pub async fn sign(&self, client: &Client) -> Result<(), StoreError> {
        let rows = client
            .query(
                "SELECT chain, entries, hash FROM pgtrail.chain_heads ORDER BY chain",
                &[],
            )
            .await?;
        let head = |c: Chain| -> Result<(i64, Vec<u8>), StoreError> {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == c.name())
                .map(|r| (r.get(1), r.get(2)))
                .ok_or(StoreError::ChainHead(c.name()))
        };
        let (capture_entries, capture_hash) = head(Chain::Capture)?;
        let (events_entries, events_hash) = head(Chain::Events)?;
        let now = chrono::Utc::now();
        let at = now.timestamp_micros();
        let signed = SignedHead {
            signed_at: chrono::DateTime::from_timestamp_micros(at).unwrap_or(now),
            capture_entries,
            capture_hash,
            events_entries,
            events_hash,
            public_key: self.key.verifying_key().as_bytes().to_vec(),
            signature: Vec::new(),
        };
        let signature = self.key.sign(&signed.message()).to_bytes().to_vec();
        client
            .execute(
                "INSERT INTO pgtrail.signed_heads (signed_at, capture_entries, capture_hash, \
                     events_entries, events_hash, public_key, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &signed.signed_at,
                    &signed.capture_entries,
                    &signed.capture_hash,
                    &signed.events_entries,
                    &signed.events_hash,
                    &signed.public_key,
                    &signature,
                ],
            )
            .await?;
        Ok(())
    }
}

/// One row of `pgtrail.signed_heads`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedHead {
    pub signed_at: chrono::DateTime<chrono::Utc>,
    pub capture_entries: i64,
    #[serde(serialize_with = "hex")]
    pub capture_hash: Vec<u8>,
    pub events_entries: i64,
    #[serde(serialize_with = "hex")]
    pub events_hash: Vec<u8>,
    #[serde(serialize_with = "hex")]
    pub public_key: Vec<u8>,
    #[serde(serialize_with = "hex")]
    pub signature: Vec<u8>,
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::chain::hex(bytes))
}

/// The columns [`SignedHead::from_row`] reads, in order.
pub const SIGNED_HEAD_COLUMNS: &str = "signed_at, capture_entries, capture_hash, events_entries, \
     events_hash, public_key, signature";

impl SignedHead {
    /// Reads [`SIGNED_HEAD_COLUMNS`] from `row`, starting at column `at`.
    pub fn from_row_at(
        row: &tokio_postgres::Row,
        at: usize,
    ) -> Result<SignedHead, tokio_postgres::Error> {
        Ok(SignedHead {
            signed_at: row.try_get(at)?,
            capture_entries: row.try_get(at + 1)?,
            capture_hash: row.try_get(at + 2)?,
            events_entries: row.try_get(at + 3)?,
            events_hash: row.try_get(at + 4)?,
            public_key: row.try_get(at + 5)?,
            signature: row.try_get(at + 6)?,
        })
    }

    /// The newest signed head in the store, if any.
    pub async fn newest(client: &Client) -> Result<Option<SignedHead>, StoreError> {
        let row = client
            .query_opt(
                &format!("SELECT {SIGNED_HEAD_COLUMNS} FROM pgtrail.signed_heads ORDER BY id DESC LIMIT 1"),
                &[],
            )
            .await?;
        Ok(match row {
            Some(r) => Some(SignedHead::from_row_at(&r, 0)?),
            None => None,
        })
    }

    /// The bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN.len() + 3 * 8 + 2 * 32);
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&self.signed_at.timestamp_micros().to_be_bytes());
        m.extend_from_slice(&self.capture_entries.to_be_bytes());
        m.extend_from_slice(&self.capture_hash);
        m.extend_from_slice(&self.events_entries.to_be_bytes());
        m.extend_from_slice(&self.events_hash);
        m
    }

    /// Whether `key` signed exactly this head.
    pub fn verifies(&self, key: &VerifyingKey) -> bool {
        let Ok(signature) = Signature::from_slice(&self.signature) else {
            return false;
        };
        key.verify(&self.message(), &signature).is_ok()
    }

    /// The signed count and hash of one chain.
    pub fn head(&self, c: Chain) -> (i64, &[u8]) {
        match c {
            Chain::Capture => (self.capture_entries, &self.capture_hash),
            Chain::Events => (self.events_entries, &self.events_hash),
        }
    }
}

/// Reads a public key in PEM (SubjectPublicKeyInfo) form, as
/// `openssl pkey -in KEY -pubout` writes it.
pub fn public_key_from_file(file: &Path) -> Result<VerifyingKey, String> {
    let pem = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the public key {}: {e}", file.display()))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|_| {
        format!(
            "{} is not an Ed25519 public key in PEM form; derive it from the signing key with: \
             openssl pkey -in KEY -pubout -out {}",
            file.display(),
            file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> SignedHead {
        SignedHead {
            signed_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            capture_entries: 5,
            capture_hash: vec![1; 32],
            events_entries: 2,
            events_hash: vec![2; 32],
            public_key: Vec::new(),
            signature: Vec::new(),
        }
    }

    #[test]
    fn a_signature_covers_every_field() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut h = head();
        h.signature = key.sign(&h.message()).to_bytes().to_vec();
        assert!(h.verifies(&key.verifying_key()));
        assert!(!h.verifies(&SigningKey::from_bytes(&[8; 32]).verifying_key()));
        for change in [
            |h: &mut SignedHead| h.capture_entries += 1,
            |h: &mut SignedHead| h.capture_hash[0] ^= 1,
            |h: &mut SignedHead| h.events_entries -= 1,
            |h: &mut SignedHead| h.events_hash[31] ^= 1,
            |h: &mut SignedHead| h.signed_at += chrono::Duration::microseconds(1),
        ] {
            let mut changed = h.clone();
            change(&mut changed);
            assert!(!changed.verifies(&key.verifying_key()));
        }
        h.signature.truncate(10);
        assert!(!h.verifies(&key.verifying_key()));
    }
}
