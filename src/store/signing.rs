//! Signed chain heads: with `[store] signing_key_file`, the daemon signs its
//! source's chain head and the events chain's head (their entry counts and
//! last hashes) with an Ed25519 key the DBA keeps outside the store, at most
//! every `sign_every_seconds` and when it stops, into `pgtrail.signed_heads`.
//! `pgtrail verify --public-key FILE` then proves that the chains as stored
//! are the ones that were signed: someone who can write the store past its
//! trigger can recompute every hash, but cannot sign. Each daemon of a fleet
//! signs its own source's head, with its own key or a shared one.
//!
//! What is signed (all numbers 8 bytes big-endian), version 2:
//! `"pgtrail signed head v2\n"`, the signing time (microseconds since
//! 1970-01-01 UTC), the source's name (4 bytes big-endian length, then its
//! UTF-8 bytes), the source's chain's entry count and hash, the events
//! chain's entry count and hash. Version 1 (signed before sources had names,
//! for the store's first source) is the same without the name, under
//! `"pgtrail signed head v1\n"`; such rows still verify.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use tokio_postgres::Client;

use super::chain::Chain;
use super::sources::{SourceId, SourceName};
use super::StoreError;

const DOMAIN_V1: &[u8] = b"pgtrail signed head v1\n";
const DOMAIN_V2: &[u8] = b"pgtrail signed head v2\n";

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

    /// Signs the heads of `source` and of the events as they are now
    /// committed, and stores the signature.
    pub async fn sign(
        &self,
        client: &Client,
        source: SourceId,
        name: &SourceName,
    ) -> Result<(), StoreError> {
        let rows = client
            .query(
                "SELECT source, entries, hash FROM pgtrail.chain_heads WHERE source IN (0, $1::smallint)",
                &[&source.0],
            )
            .await?;
        let head = |id: SourceId| -> Result<(i64, Vec<u8>), StoreError> {
            rows.iter()
                .find(|r| r.get::<_, i16>(0) == id.0)
                .map(|r| (r.get(1), r.get(2)))
                .ok_or_else(|| StoreError::ChainHead(format!("source {}", id.0)))
        };
        let (capture_entries, capture_hash) = head(source)?;
        let (events_entries, events_hash) = head(SourceId::EVENTS)?;
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
            version: 2,
            source: Some(name.to_string()),
        };
        let signature = self.key.sign(&signed.message()).to_bytes().to_vec();
        client
            .execute(
                "INSERT INTO pgtrail.signed_heads (signed_at, capture_entries, capture_hash, \
                     events_entries, events_hash, public_key, signature, version, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &signed.signed_at,
                    &signed.capture_entries,
                    &signed.capture_hash,
                    &signed.events_entries,
                    &signed.events_hash,
                    &signed.public_key,
                    &signature,
                    &signed.version,
                    &signed.source,
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
    /// The source whose chain `capture_*` is: `None` in a v1 head, which is
    /// the store's first source.
    pub source: Option<String>,
    /// 1 or 2: which message was signed.
    pub version: i16,
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
     events_hash, public_key, signature, version, source";

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
            version: row.try_get(at + 7)?,
            source: row.try_get(at + 8)?,
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

    /// The bytes that are signed (of its version; a v2 head names its source).
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN_V2.len() + 4 + 63 + 3 * 8 + 2 * 32);
        m.extend_from_slice(if self.version == 1 {
            DOMAIN_V1
        } else {
            DOMAIN_V2
        });
        m.extend_from_slice(&self.signed_at.timestamp_micros().to_be_bytes());
        if self.version != 1 {
            let name = self.source.as_deref().unwrap_or_default().as_bytes();
            m.extend_from_slice(&(name.len() as u32).to_be_bytes());
            m.extend_from_slice(name);
        }
        self.with_heads(m)
    }

    /// `m` followed by the two chains' counts and hashes.
    fn with_heads(&self, mut m: Vec<u8>) -> Vec<u8> {
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

    /// The signed count and hash of one chain (the source's own, or the events').
    pub fn head(&self, c: Chain) -> (i64, &[u8]) {
        if c == Chain::EVENTS {
            (self.events_entries, &self.events_hash)
        } else {
            (self.capture_entries, &self.capture_hash)
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
            version: 2,
            source: Some("shop-eu".into()),
        }
    }

    fn signed(mut h: SignedHead, key: &SigningKey) -> SignedHead {
        h.signature = key.sign(&h.message()).to_bytes().to_vec();
        h
    }

    #[test]
    fn a_signature_covers_every_field() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut h = signed(head(), &key);
        assert!(h.verifies(&key.verifying_key()));
        assert!(!h.verifies(&SigningKey::from_bytes(&[8; 32]).verifying_key()));
        for change in [
            |h: &mut SignedHead| h.capture_entries += 1,
            |h: &mut SignedHead| h.capture_hash[0] ^= 1,
            |h: &mut SignedHead| h.events_entries -= 1,
            |h: &mut SignedHead| h.events_hash[31] ^= 1,
            |h: &mut SignedHead| h.signed_at += chrono::Duration::microseconds(1),
            |h: &mut SignedHead| h.source = Some("shop-us".into()),
            |h: &mut SignedHead| h.version = 1,
        ] {
            let mut changed = h.clone();
            change(&mut changed);
            assert!(!changed.verifies(&key.verifying_key()));
        }
        h.signature.truncate(10);
        assert!(!h.verifies(&key.verifying_key()));
    }

    #[test]
    fn a_v1_head_is_the_message_without_a_source() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let v1 = SignedHead {
            version: 1,
            source: None,
            ..head()
        };
        // The v1 message as it was signed before sources had names.
        let mut message = b"pgtrail signed head v1\n".to_vec();
        message.extend_from_slice(&1_700_000_000_123_456i64.to_be_bytes());
        message.extend_from_slice(&5i64.to_be_bytes());
        message.extend_from_slice(&[1; 32]);
        message.extend_from_slice(&2i64.to_be_bytes());
        message.extend_from_slice(&[2; 32]);
        assert_eq!(v1.message(), message);
        let v1 = signed(v1, &key);
        assert!(v1.verifies(&key.verifying_key()));
        // The same figures signed as v2 are another message.
        assert_ne!(signed(head(), &key).message(), v1.message());
    }
}
