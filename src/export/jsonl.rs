//! JSON Lines: one entry per line, as [`StoredEntry::write_json`] writes it
//! (the same objects the web API returns).

use super::lines::LineFormat;
use super::StoredEntry;

/// JSON Lines, written by [`super::lines::Lines`].
pub struct Jsonl;

impl LineFormat for Jsonl {
    const CAPACITY: usize = 1024;

    fn line(&self, e: &StoredEntry, out: &mut String) {
        e.write_json(out);
    }
}
