//! The runs of a chain in an archive, and the digest of its (id, hash)
//! sequence: both are computed the same way by the writer, by the reader and
//! (the sequence) from the store, so any two can be compared.
//!
//! A run is a stretch of consecutive entries of the archive each of which
//! follows the one before it in the chain. An archive of one source's time
//! range is normally one run; a new run starts where an entry of the chain
//! committed outside the range sits between two of the range's entries (a
//! commit that took its time across the range's edge), or after an entry
//! stored before the chain began.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::text::hex;

/// One run: its first entry, the hash before it (its chain predecessor's,
/// or 32 zero bytes at the chain's start), its last entry and that entry's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Run {
    pub first_id: i64,
    #[serde(serialize_with = "hex_hash")]
    pub prev: [u8; 32],
    pub last_id: i64,
    #[serde(serialize_with = "hex_hash")]
    pub last_hash: [u8; 32],
    pub entries: u64,
}

pub(crate) fn hex_hash<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// The runs seen so far, the last one possibly still open.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    done: Vec<Run>,
    /// The run the next entry may continue.
    open: Option<Run>,
}

impl Runs {
    /// The hash the next entry follows if it continues the open run.
    pub fn last_hash(&self) -> Option<&[u8; 32]> {
        self.open.as_ref().map(|r| &r.last_hash)
    }

    /// The open run's last entry: its id and hash.
    pub fn last(&self) -> Option<(i64, [u8; 32])> {
        self.open.as_ref().map(|r| (r.last_id, r.last_hash))
    }

    /// Entry `id`, with hash `hash`, starts a run after `prev`.
    pub fn start(&mut self, id: i64, prev: [u8; 32], hash: [u8; 32]) {
        self.end();
        self.open = Some(Run {
            first_id: id,
            prev,
            last_id: id,
            last_hash: hash,
            entries: 1,
        });
    }

    /// Entry `id` continues the open run; `false` when none is open.
    pub fn extend(&mut self, id: i64, hash: [u8; 32]) -> bool {
        match &mut self.open {
            Some(run) => {
                run.last_id = id;
                run.last_hash = hash;
                run.entries += 1;
                true
            }
            None => false,
        }
    }

    /// An entry without a hash: no run continues past it.
    pub fn end(&mut self) {
        self.done.extend(self.open.take());
    }

    pub fn finish(mut self) -> Vec<Run> {
        self.end();
        self.done
    }
}

/// SHA-256 over every entry's id and hash, in order: `id` as 8 bytes
/// big-endian, then `0x01` and the hash, or `0x00` for an entry without one.
#[derive(Default)]
pub(crate) struct Sequence(Sha256);

impl Sequence {
    pub fn push(&mut self, id: i64, hash: Option<&[u8]>) {
        self.0.update(id.to_be_bytes());
        match hash {
            Some(h) => {
                self.0.update([1u8]);
                self.0.update(h);
            }
            None => self.0.update([0u8]),
        }
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_a_hash_ends_a_run() {
        let mut runs = Runs::default();
        assert!(!runs.extend(1, [1; 32]), "no run is open yet");
        runs.start(2, [0; 32], [2; 32]);
        assert!(runs.extend(3, [3; 32]));
        runs.end();
        assert_eq!(runs.last_hash(), None);
        runs.start(5, [4; 32], [5; 32]);
        let done = runs.finish();
        assert_eq!(done.len(), 2);
        assert_eq!(
            (done[0].first_id, done[0].last_id, done[0].entries),
            (2, 3, 2)
        );
        assert_eq!((done[1].prev, done[1].last_hash), ([4; 32], [5; 32]));
    }

    #[test]
    fn the_sequence_tells_a_missing_hash_from_a_changed_id() {
        let digest = |items: &[(i64, Option<[u8; 32]>)]| {
            let mut s = Sequence::default();
            for (id, h) in items {
                s.push(*id, h.as_ref().map(|h| &h[..]));
            }
            s.finish()
        };
        let base = digest(&[(1, Some([1; 32])), (2, None)]);
        assert_ne!(base, digest(&[(1, Some([1; 32])), (3, None)]));
        assert_ne!(base, digest(&[(1, Some([1; 32])), (2, Some([0; 32]))]));
        assert_ne!(base, digest(&[(1, Some([1; 32]))]));
    }
}
