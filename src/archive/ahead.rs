//! Restore's read-ahead: an archive's entries read and checked on a blocking
//! thread ([`each_entry`]) ahead of the store's COPY, bounded in number
//! ([`READ_AHEAD`]) and in bytes ([`READ_AHEAD_BYTES`]). Each entry takes its
//! share of the bytes (permits of a semaphore, [`weight`]) before it is
//! queued and holds it until it is copied, so the entries queued weigh at
//! most the budget together, however fast the file reads and however slowly
//! the store takes them; the reader waits, holding the one entry it read
//! last, until enough is given back. An entry larger than the budget takes
//! all of it and waits alone.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::entries::{each_entry, ArchivedEntry};
use super::{ArchiveError, Checked};

/// Entries read ahead of the COPY, at most.
const READ_AHEAD: usize = 1024;
/// Their bytes, at most: one entry may be large (its line up to
/// `--max-line`), and a thousand of them must not all wait in memory.
pub const READ_AHEAD_BYTES: u32 = 64 << 20;

/// An entry read, holding its share of [`READ_AHEAD_BYTES`] until it is copied.
pub type Ahead = (ArchivedEntry, OwnedSemaphorePermit);

/// The reader, running, and what it read.
pub struct ReadAhead {
    /// The entries read and checked, in file order.
    pub entries: mpsc::Receiver<Ahead>,
    budget: Arc<Semaphore>,
    reader: JoinHandle<Result<Checked, ArchiveError>>,
    /// Entries the reader read so far, queued or waiting for their share.
    #[cfg(test)]
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl ReadAhead {
    /// Starts reading the archive at `path` (decrypted with `identity`,
    /// records of at most `max_line` bytes) whose entries are of `source`.
    pub fn start(
        path: PathBuf,
        identity: Option<PathBuf>,
        max_line: u64,
        source: String,
    ) -> ReadAhead {
        let (sender, entries) = mpsc::channel::<Ahead>(READ_AHEAD);
        let budget = Arc::new(Semaphore::new(READ_AHEAD_BYTES as usize));
        let reading = Arc::clone(&budget);
        #[cfg(test)]
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        #[cfg(test)]
        let counted = Arc::clone(&read);
        let reader = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Handle::current();
            fn stopped<E>(_: E) -> String {
                "the store stopped taking entries".to_owned()
            }
            each_entry(&path, identity.as_deref(), max_line, &source, &mut |e| {
                #[cfg(test)]
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let share = Arc::clone(&reading).acquire_many_owned(weight(&e));
                let permit = runtime.block_on(share).map_err(stopped)?;
                sender.blocking_send((e, permit)).map_err(stopped)
            })
        });
        ReadAhead {
            entries,
            budget,
            reader,
            #[cfg(test)]
            read,
        }
    }

    /// Stops the reader (after a COPY that failed, at its next entry) and
    /// returns what it found: the file checked, or why not (the outer error:
    /// the reading task itself failed).
    pub async fn finish(self) -> Result<Result<Checked, ArchiveError>, tokio::task::JoinError> {
        self.budget.close();
        drop(self.entries);
        self.reader.await
    }
}

/// An entry's share of [`READ_AHEAD_BYTES`]: about its size in memory.
fn weight(archived: &ArchivedEntry) -> u32 {
    let e = &archived.entry;
    let texts = e.json.iter().flatten().map(String::len).sum::<usize>();
    let bytes = texts + e.schema.len() + e.table.len() + 256;
    u32::try_from(bytes).map_or(READ_AHEAD_BYTES, |b| b.min(READ_AHEAD_BYTES))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::archive::lines::MAX_LINE;
    use crate::archive::read_tests::{chained, compress, entry, Files};

    #[test]
    fn a_large_entry_takes_the_whole_read_ahead_and_waits_alone() {
        let small = ArchivedEntry {
            entry: entry(1, "{}"),
            hash: None,
        };
        assert!((256..1024).contains(&weight(&small)), "{}", weight(&small));
        let mut large = small.clone();
        large.entry.json[1] = Some(format!("[{}]", "1,".repeat(READ_AHEAD_BYTES as usize / 2)));
        assert_eq!(weight(&large), READ_AHEAD_BYTES);
    }

    /// Waits, yielding, until the reader has read `n` entries.
    async fn read_to(ahead: &ReadAhead, n: usize) {
        while ahead.read.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    /// The bound itself, not its arithmetic: an archive of 14 entries of 5
    /// MiB (70 MiB, which a read-ahead without it would queue whole while
    /// the store takes none) is read while nothing is copied, then one entry
    /// copied at a time. Whenever the reader has read as far as it can, 12
    /// entries (60 MiB) are queued, holding their weights of the budget, and
    /// the 13th, read, waits for a share the budget no longer has.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_queued_for_the_copy_never_weigh_more_than_the_read_ahead() {
        let n = 14;
        let big = format!("\"{}\"", "x".repeat(5 << 20));
        let entries: Vec<_> = (1..=n as i64).map(|id| entry(id, &big)).collect();
        let weights: Vec<u32> = entries
            .iter()
            .map(|e| {
                weight(&ArchivedEntry {
                    entry: e.clone(),
                    hash: None,
                })
            })
            .collect();
        let fit = 12;
        let total = |ws: &[u32]| ws.iter().map(|w| u64::from(*w)).sum::<u64>();
        assert!(total(&weights) > u64::from(READ_AHEAD_BYTES));
        assert!(total(&weights[..fit]) <= u64::from(READ_AHEAD_BYTES));
        assert!(total(&weights[..fit + 1]) > u64::from(READ_AHEAD_BYTES));
        let files = Files::new();
        let path = files.put("a.jsonl.zst", &compress(&chained(&entries)));
        drop(entries);

        let mut ahead = ReadAhead::start(path, None, MAX_LINE, "shop".into());
        let run = async {
            for copied in 0..n {
                let queued = fit.min(n - copied);
                if copied + fit < n {
                    // The reader read on until the budget held it back.
                    read_to(&ahead, copied + fit + 1).await;
                    let left = ahead.budget.available_permits() as u64;
                    assert!(left < u64::from(weights[copied + fit]), "{left}");
                } else {
                    // All read: the last ones fit.
                    read_to(&ahead, n).await;
                    while ahead.entries.len() < queued {
                        tokio::task::yield_now().await;
                    }
                }
                // The entries queued hold their shares (and the one waiting
                // perhaps part of its own: tokio hands permits to a waiter as
                // they come back), never more than the budget.
                assert_eq!(ahead.entries.len(), queued, "after {copied} copied");
                let held = u64::from(READ_AHEAD_BYTES) - ahead.budget.available_permits() as u64;
                let waiting = total(&weights[copied..copied + queued]);
                assert!(waiting <= held, "after {copied} copied: {waiting} > {held}");
                assert!(held <= u64::from(READ_AHEAD_BYTES));
                // Copied: its share goes back once it is dropped.
                let (e, share) = ahead.entries.recv().await.expect("an entry");
                assert_eq!(e.entry.id, copied as i64 + 1);
                drop((e, share));
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(300), run)
            .await
            .expect("the reader went on");
        let checked = ahead.finish().await.unwrap().unwrap();
        assert_eq!(checked.entries, n as u64);
    }
}
