//! Authentication of pgtrail's messages. Any role may call
//! `pg_logical_emit_message`, so a message's prefix proves nothing: the
//! source's SECURITY DEFINER functions (sql/source/context.sql) sign each one
//! with HMAC-SHA256 under a key only the setup role can read
//! (`pgtrail.message_key`), binding the prefix and the transaction's xid, and
//! the daemon acts on a message only when [`MessageKey::open`] accepts it.
//!
//! The key is kept as HMAC's inner and outer pads, the form SQL can use
//! without XOR on bytea: HMAC(k, m) = H(outer_pad ‖ H(inner_pad ‖ m)).

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex digits of a signature at the start of a signed message's content.
const SIGNATURE_HEX: usize = 64;
/// Bytes of each pad: SHA-256's block size.
const PAD_LEN: usize = 64;

/// The key that signs pgtrail's messages. Never printed: `Debug` says only
/// that there is one.
#[derive(Clone)]
pub struct MessageKey {
    inner_pad: [u8; PAD_LEN],
    outer_pad: [u8; PAD_LEN],
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey(..)")
    }
}

/// The key as read from the source was not what setup writes.
#[derive(Debug, thiserror::Error)]
#[error("pgtrail.message_key holds pads of {inner} and {outer} bytes, not 64 and 64: run `pgtrail setup` again after deleting its row")]
pub struct MalformedKey {
    inner: usize,
    outer: usize,
}

/// Why a message was refused. Never carries the key or the expected MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("it carries no signature")]
    Unsigned,
    #[error("its signature does not match its content and transaction")]
    BadSignature,
}

impl Rejected {
    /// The name stored with the security event.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Unsigned => "unsigned",
            Rejected::BadSignature => "bad_signature",
        }
    }
}

impl MessageKey {
    /// The key from its pads, as `pgtrail.message_key` holds them.
    pub fn from_pads(inner: &[u8], outer: &[u8]) -> Result<MessageKey, MalformedKey> {
        let malformed = || MalformedKey {
            inner: inner.len(),
            outer: outer.len(),
        };
        Ok(MessageKey {
            inner_pad: inner.try_into().map_err(|_| malformed())?,
            outer_pad: outer.try_into().map_err(|_| malformed())?,
        })
    }

    /// The pads (inner, outer), to copy the key into the store.
    pub fn pads(&self) -> (&[u8], &[u8]) {
        (&self.inner_pad, &self.outer_pad)
    }

    /// The key for `secret` (at most 64 bytes), as setup derives the pads.
    #[cfg(test)]
    pub fn from_secret(secret: &[u8]) -> MessageKey {
        let mut inner_pad = [0x36; PAD_LEN];
        let mut outer_pad = [0x5c; PAD_LEN];
        for (i, b) in secret.iter().enumerate() {
            inner_pad[i] ^= b;
            outer_pad[i] ^= b;
        }
        MessageKey {
            inner_pad,
            outer_pad,
        }
    }

    /// HMAC-SHA256 over the prefix, the 32-bit xid in decimal and the body,
    /// NUL-separated, as `pgtrail.hmac` computes it.
    fn mac(&self, prefix: &str, xid: u64, body: &str) -> [u8; 32] {
        let inner = Sha256::new()
            .chain_update(self.inner_pad)
            .chain_update(prefix.as_bytes())
            .chain_update([0])
            .chain_update((xid & 0xffff_ffff).to_string().as_bytes())
            .chain_update([0])
            .chain_update(body.as_bytes())
            .finalize();
        Sha256::new()
            .chain_update(self.outer_pad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// A message's content as the source's functions write it: the
    /// signature in hex, then the body. For tests that play the source.
    #[cfg(test)]
    pub fn sign(&self, prefix: &str, xid: u64, body: &str) -> String {
        let mut out = crate::text::hex(&self.mac(prefix, xid, body));
        out.push_str(body);
        out
    }

    /// The body of a message that pgtrail's functions signed in transaction
    /// `xid`; an error for any other.
    pub fn open<'a>(&self, prefix: &str, xid: u64, content: &'a str) -> Result<&'a str, Rejected> {
        let (Some(signature), Some(body)) =
            (content.get(..SIGNATURE_HEX), content.get(SIGNATURE_HEX..))
        else {
            return Err(Rejected::Unsigned);
        };
        let mut given = [0u8; 32];
        crate::text::unhex_into(signature, &mut given).ok_or(Rejected::Unsigned)?;
        let expected = self.mac(prefix, xid, body);
        // Compared in constant time: how far a forgery matched says nothing.
        let difference = given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 {
            Ok(body)
        } else {
            Err(Rejected::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{KeyInit, Mac};

    #[test]
    fn the_pads_compute_hmac_sha256() {
        let key = MessageKey::from_secret(b"a secret of 32 bytes, more or le");
        let mut mac =
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(b"a secret of 32 bytes, more or le")
                .expect("HMAC takes any key length");
        mac.update(b"pgtrail\x0042\x00{}");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key.mac("pgtrail", 42, "{}"), expected);
    }

    #[test]
    fn a_signed_message_opens_only_with_its_prefix_and_transaction() {
        let key = MessageKey::from_secret(b"k");
        let signed = key.sign("pgtrail", 7, r#"{"a":1}"#);
        assert_eq!(key.open("pgtrail", 7, &signed), Ok(r#"{"a":1}"#));
        // The xid is bound as wal2json reports it: 32 bits.
        assert_eq!(
            key.open("pgtrail", 7 + (1 << 32), &signed),
            Ok(r#"{"a":1}"#)
        );
        assert_eq!(key.open("pgtrail", 8, &signed), Err(Rejected::BadSignature));
        assert_eq!(
            key.open("pgtrail_ddl", 7, &signed),
            Err(Rejected::BadSignature)
        );
        let other = MessageKey::from_secret(b"other");
        assert_eq!(
            other.open("pgtrail", 7, &signed),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn unsigned_and_altered_messages_are_refused() {
        let key = MessageKey::from_secret(b"k");
        assert_eq!(
            key.open("pgtrail", 1, r#"{"session_user":"postgres"}"#),
            Err(Rejected::Unsigned)
        );
        assert_eq!(key.open("pgtrail", 1, ""), Err(Rejected::Unsigned));
        // Multi-byte characters where the signature should be: no panic.
        assert_eq!(
            key.open("pgtrail", 1, &"é".repeat(40)),
            Err(Rejected::Unsigned)
        );
        let mut signed = key.sign("pgtrail", 1, r#"{"actor":"alice"}"#);
        signed = signed.replace("alice", "bob");
        assert_eq!(key.open("pgtrail", 1, &signed), Err(Rejected::BadSignature));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = MessageKey::from_secret(b"k");
        assert_eq!(format!("{key:?}"), "MessageKey(..)");
    }

    #[test]
    fn pads_of_the_wrong_length_are_refused() {
        assert!(MessageKey::from_pads(&[0; 64], &[0; 32]).is_err());
        assert!(MessageKey::from_pads(&[0; 64], &[0; 64]).is_ok());
    }
}
