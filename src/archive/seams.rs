//! The store's chain around an archive's range, checked in the writer's
//! snapshot: the file holds the range's entries, but whether the chain holds
//! across the range's edges depends on the entries just outside it. A run's
//! first entry must follow the chain's entry before it; between two runs,
//! every entry of the chain outside the range must follow the one before it
//! (from the first run's last entry on); after the last run, the chain's next
//! entry must follow it, or, at the chain's end, the chain's head must be
//! its hash; and an entry without a hash may only precede every hashed one.
//! Where retention cut the chain (pgtrail.chain_anchors), it goes on from
//! each cut's hash, as `pgtrail verify`'s walk does, and a cut that records
//! its run's predecessor (migration 21) must be reached from that entry.
//! So a range whose chain does not verify from the hash before it to the
//! entry after it is never archived (and then dropped) as if it did.

use futures_util::TryStreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use super::format::content_of;
use super::{ArchiveError, Range};
use crate::store::chain::{head, link, Chain, GENESIS};
use crate::store::stored::{StoredEntry, ENTRY_COLUMNS, ENTRY_COLUMN_COUNT};

/// An entry of the chain: its id and hash.
pub type Link = (i64, [u8; 32]);

/// Where retention cut the chain: the run's last entry, and the entry its
/// first followed (id, `None` at the chain's start, and hash) when recorded.
struct Cut {
    end: Link,
    prev: Option<(Option<i64>, [u8; 32])>,
}

/// The statements that look around the range, in the writer's snapshot.
pub struct Around<'t, 'c> {
    tx: &'t Transaction<'c>,
    range: &'t Range,
    /// The last hashed entry of the chain before `$1`.
    before: Statement,
    /// The chain's entries after `$1` and before `$2`, in id order, at most `$3` (NULL: all).
    between: Statement,
    /// Where retention cut the chain after `$1` and before `$2` (pgtrail.chain_anchors), in id
    /// order; not the anchors of a partition restored for this source, whose entries are there.
    cuts: Statement,
}

/// How far [`Around::follow`] went: the last link reached (an entry, or
/// where retention cut the chain), and how many stored entries it checked.
struct Followed {
    last: Link,
    entries: u64,
}

impl<'t, 'c> Around<'t, 'c> {
    pub async fn prepare(
        tx: &'t Transaction<'c>,
        range: &'t Range,
    ) -> Result<Around<'t, 'c>, ArchiveError> {
        let chain = Chain(range.source_id).sql_condition();
        // The chain's entry before an id: the last one still stored, or where
        // retention cut the chain (pgtrail.chain_anchors), whichever is later.
        let before = tx
            .prepare(&format!(
                "(SELECT id, hash FROM pgtrail.entries WHERE id < $1 AND {chain} \
                  AND hash IS NOT NULL ORDER BY id DESC LIMIT 1) \
                 UNION ALL (SELECT dropped_id, dropped_hash FROM pgtrail.chain_anchors \
                  WHERE dropped_id < $1 AND source = $2 ORDER BY dropped_id DESC LIMIT 1) \
                 ORDER BY 1 DESC LIMIT 1"
            ))
            .await?;
        let between = tx
            .prepare(&format!(
                "SELECT {ENTRY_COLUMNS}, hash FROM pgtrail.entries WHERE id > $1 AND id < $2 \
                 AND {chain} ORDER BY id LIMIT $3::bigint"
            ))
            .await?;
        let cuts = tx
            .prepare(&format!(
                "SELECT a.dropped_id, a.dropped_hash, a.prev_id, a.prev_hash FROM pgtrail.chain_anchors a \
                 WHERE a.source = {} AND a.dropped_id > $1 AND a.dropped_id < $2 \
                 AND NOT EXISTS (SELECT FROM pgtrail.partitions p WHERE p.name = a.partition \
                   AND p.dropped_at IS NULL AND a.source = ANY (p.restored_sources)) \
                 ORDER BY a.dropped_id",
                range.source_id.0
            ))
            .await?;
        Ok(Around {
            tx,
            range,
            before,
            between,
            cuts,
        })
    }

    pub fn range(&self) -> &Range {
        self.range
    }

    fn broken(&self, id: i64, problem: String) -> ArchiveError {
        ArchiveError::StoreBroken {
            chain: self.range.source_name.clone(),
            id,
            problem,
        }
    }

    /// The entry (if any) and the hash that entry `id`, starting a run,
    /// follows in the chain: after the open run's last entry `open`, the
    /// chain's entries outside the range up to `id`, each checked to follow
    /// the one before it; with no run open, the last hashed entry before it
    /// (or the chain's start).
    pub async fn predecessor(
        &self,
        open: Option<Link>,
        id: i64,
    ) -> Result<(Option<i64>, [u8; 32]), ArchiveError> {
        if let Some(last) = open {
            let reached = self.follow(last, id, None).await?.last;
            return Ok((Some(reached.0), reached.1));
        }
        match self
            .tx
            .query_opt(&self.before, &[&id, &self.range.source_id.0])
            .await?
        {
            Some(row) => {
                let pred: i64 = row.try_get(0)?;
                let hash: Vec<u8> = row.try_get(1)?;
                let hash = hash
                    .try_into()
                    .map_err(|_| self.broken(pred, "its hash is not 32 bytes".into()))?;
                Ok((Some(pred), hash))
            }
            None => Ok((None, GENESIS)),
        }
    }

    /// The chain goes on from the last run's last entry: its next entry
    /// follows it, or, when there is none, the chain's head is its hash.
    pub async fn after_the_last(&self, last: Link) -> Result<(), ArchiveError> {
        // The chain's next entry was checked to follow (across any cut);
        // with none, the head must be where the chain last stands.
        let reached = self.follow(last, i64::MAX, Some(1)).await?;
        if reached.entries > 0 {
            return Ok(());
        }
        let last = reached.last;
        let stored = head(self.tx, Chain(self.range.source_id))
            .await
            .map_err(|e| ArchiveError::Store(e.to_string()))?;
        if stored != last.1 {
            return Err(self.broken(
                last.0,
                "it is its chain's last entry, but the chain's head (pgtrail.chain_heads) is not \
                 its hash: entries after it were deleted, or the head was changed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Entry `id`, without a hash, comes before every hashed entry of its chain.
    pub async fn nothing_hashed_before(&self, id: i64) -> Result<(), ArchiveError> {
        match self
            .tx
            .query_opt(&self.before, &[&id, &self.range.source_id.0])
            .await?
        {
            Some(row) => Err(self.broken(
                id,
                format!(
                    "it has no hash although entry {} before it in the chain has one: it was \
                     inserted past pgtrail",
                    row.try_get::<_, i64>(0)?
                ),
            )),
            None => Ok(()),
        }
    }

    /// Follows the chain from `from` over its entries before `until` (at
    /// most `limit`), each of which must follow the one before it: the last
    /// one reached.
    async fn follow(
        &self,
        from: Link,
        until: i64,
        limit: Option<i64>,
    ) -> Result<Followed, ArchiveError> {
        let cuts = self.cuts_between(from.0, until).await?;
        let mut cuts = cuts.into_iter().peekable();
        let params: [&(dyn ToSql + Sync); 3] = [&from.0, &until, &limit];
        let rows = self.tx.query_raw(&self.between, params).await?;
        futures_util::pin_mut!(rows);
        let mut last = from;
        let mut entries = 0u64;
        while let Some(row) = rows.try_next().await? {
            let e = StoredEntry::from_row(&row);
            // Entries retention dropped before this one: the chain goes on
            // from each cut's hash, as `pgtrail verify`'s walk does.
            while let Some(cut) = cuts.next_if(|c| c.end.0 < e.id) {
                last = self.cross(last, &cut)?;
            }
            entries += 1;
            let hash: Option<Vec<u8>> = row.try_get(ENTRY_COLUMN_COUNT)?;
            let Some(hash) = hash else {
                return Err(self.broken(
                    e.id,
                    format!(
                        "it has no hash although entry {} before it in the chain has one: it was \
                         inserted past pgtrail",
                        last.0
                    ),
                ));
            };
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| self.broken(e.id, "its hash is not 32 bytes".into()))?;
            let (_, digest) = content_of(&e)
                .map_err(|p| self.broken(e.id, format!("pgtrail cannot read it: {p}")))?;
            if link(&last.1, &digest) != hash {
                return Err(self.broken(
                    e.id,
                    format!(
                        "it does not match its hash following entry {}: it was changed, or an \
                         entry between them was deleted or inserted (it is next to the archived \
                         range, committed outside it)",
                        last.0
                    ),
                ));
            }
            last = (e.id, hash);
        }
        // The stored entries ended before any limit: the chain went on
        // through the cuts after them.
        if limit.is_none_or(|n| entries < n.max(0) as u64) {
            for cut in cuts {
                last = self.cross(last, &cut)?;
            }
        }
        Ok(Followed { last, entries })
    }

    /// Where retention cut the chain of the range's source between ids `after` and `before`.
    async fn cuts_between(&self, after: i64, before: i64) -> Result<Vec<Cut>, ArchiveError> {
        let rows = self.tx.query(&self.cuts, &[&after, &before]).await?;
        let mut cuts = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            let hash: Vec<u8> = row.try_get(1)?;
            let prev_id: Option<i64> = row.try_get(2)?;
            let prev_hash: Option<Vec<u8>> = row.try_get(3)?;
            let not_32 =
                |what: &str| self.broken(id, format!("its anchor's {what} is not 32 bytes"));
            let hash: [u8; 32] = hash.try_into().map_err(|_| not_32("hash"))?;
            let prev = match prev_hash {
                Some(h) => Some((
                    prev_id,
                    h.try_into().map_err(|_| not_32("predecessor's hash"))?,
                )),
                None => None,
            };
            cuts.push(Cut {
                end: (id, hash),
                prev,
            });
        }
        Ok(cuts)
    }

    /// The chain, standing at `last`, crosses `cut`: on from its hash, when
    /// its run followed `last` (a cut at or before `last` is an entry
    /// restored since, already followed).
    fn cross(&self, last: Link, cut: &Cut) -> Result<Link, ArchiveError> {
        if cut.end.0 <= last.0 {
            return Ok(last);
        }
        if let Some((prev_id, prev_hash)) = cut.prev {
            if (prev_id, prev_hash) != (Some(last.0), last.1) {
                let from = prev_id.map_or("the chain's start".to_owned(), |p| format!("entry {p}"));
                return Err(self.broken(
                    cut.end.0,
                    format!(
                        "retention dropped it ending a run that followed {from}, but the chain \
                         reaches it from entry {}: entries between them were deleted, inserted or \
                         changed",
                        last.0
                    ),
                ));
            }
        }
        Ok(cut.end)
    }
}
