//! Chains across retention's drops (sql/store/0018_retention.sql): the
//! anchors `pgtrail.drop_partition` wrote where it cut a chain, loaded per
//! chain, and checked together against the digest the newest drop's
//! `retention` event records (the event itself is checked by the events
//! chain's walk; older drops' events may be gone with their partitions). A walk
//! meeting anchors between its previous entry and the next crosses them in
//! id order, counting their dropped entries, and goes on from the last one's
//! hash; an anchor that records its run's predecessor (migration 21) must
//! find the walk standing there, so entries deleted or inserted just before
//! a cut are found too. An anchor of a partition restored for its source
//! (the ledger's `restored_sources`) is met by its entry: crossing one means
//! a restored entry is missing, deleted past pgtrail. An entry deleted any
//! other way has no anchor and still breaks the chain.

use std::collections::BTreeMap;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::store::chain::{self, Chain};
use crate::store::sources::SourceId;

/// Where a drop cut a chain: the last dropped entry of a run.
#[derive(Debug, Clone)]
pub(super) struct Anchor {
    pub hash: [u8; 32],
    /// Dropped entries of the run it ends.
    pub entries: u64,
    /// The entry the run's first followed in the chain: its id (`None` at the
    /// chain's start) and hash. `None` for anchors written before migration 21.
    pub prev: Option<(Option<i64>, [u8; 32])>,
    /// Its partition is in the store again, restored for its source: its
    /// entry must be there too.
    pub restored: Option<String>,
}

impl Anchor {
    /// What is wrong when a walk standing after `at` (its id, `None` at the
    /// chain's start, and hash) crosses this anchor, of entry `id`: it is a
    /// restored entry, missing; or its run followed another entry.
    pub fn problems(&self, id: i64, at: (Option<i64>, [u8; 32])) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(partition) = &self.restored {
            problems.push(format!(
                "it was restored into partition {partition} from an archive, but it is missing: \
                 it was deleted past pgtrail"
            ));
        }
        problems.extend(self.prev.and_then(|prev| misplaced(id, prev, at)));
        problems
    }
}

/// Every anchor of the store, by chain and dropped id.
#[derive(Debug, Default)]
pub(super) struct Anchors {
    by_chain: BTreeMap<Chain, BTreeMap<i64, Anchor>>,
    /// Partitions a recorded drop removed (and not restored since).
    pub partitions_dropped: u64,
    /// Dropped partitions restored from their archives (`pgtrail restore`),
    /// in the store again: their anchors are met by their entries.
    pub partitions_restored: u64,
}

impl Anchors {
    /// Loads the anchors and checks each partition's against its drop event;
    /// returns them and the problems found. A store without migration 18 has none.
    pub async fn load(tx: &tokio_postgres::Transaction<'_>) -> Result<(Anchors, Vec<String>)> {
        let mut anchors = Anchors::default();
        let mut problems = Vec::new();
        let exists: bool = tx
            .query_one(
                "SELECT to_regclass('pgtrail.chain_anchors') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if !exists {
            return Ok((anchors, problems));
        }
        // Every drop's event records the digest of all anchors after it;
        // the newest drop's (through the ledger, whose drop_event only the
        // owner can set; a restore keeps it) covers them all.
        let newest = tx
            .query_opt(
                "SELECT p.name, e.details->>'partition', e.details->>'anchors_sha256' \
                 FROM pgtrail.partitions p LEFT JOIN pgtrail.entries e ON e.id = p.drop_event \
                   AND e.source = 0 AND e.action = 'EVENT' AND e.table_name = 'retention' \
                   AND e.details->>'event' = 'partition_dropped' \
                 WHERE p.drop_event IS NOT NULL ORDER BY p.drop_event DESC LIMIT 1",
                &[],
            )
            .await?;
        let counts = tx
            .query_one(
                "SELECT count(*) FILTER (WHERE dropped_at IS NOT NULL), \
                        count(*) FILTER (WHERE dropped_at IS NULL AND restored_at IS NOT NULL) \
                 FROM pgtrail.partitions",
                &[],
            )
            .await?;
        anchors.partitions_dropped = counts.get::<_, i64>(0).max(0) as u64;
        anchors.partitions_restored = counts.get::<_, i64>(1).max(0) as u64;
        // Partitions in the store again, and the sources restored into each.
        let mut restored = std::collections::HashSet::new();
        for row in tx
            .query(
                "SELECT name, restored_sources FROM pgtrail.partitions \
                 WHERE dropped_at IS NULL AND cardinality(restored_sources) > 0",
                &[],
            )
            .await?
        {
            let (name, sources): (String, Vec<i16>) = (row.try_get(0)?, row.try_get(1)?);
            restored.extend(sources.into_iter().map(|s| (name.clone(), s)));
        }
        let mut text = String::new();
        for row in tx
            .query(
                "SELECT source, dropped_id, dropped_hash, dropped_entries, partition, prev_id, prev_hash \
                 FROM pgtrail.chain_anchors ORDER BY source, dropped_id",
                &[],
            )
            .await?
        {
            let (source, id, hash, n, partition): (i16, i64, Vec<u8>, i64, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
            );
            let (prev_id, prev_hash): (Option<i64>, Option<Vec<u8>>) =
                (row.try_get(5)?, row.try_get(6)?);
            text.push_str(&canonical_line(
                &partition,
                source,
                id,
                &hash,
                n,
                prev_hash.as_deref().map(|h| (prev_id, h)),
            ));
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                problems.push(format!(
                    "the anchor of entry {id} ({partition}) has no 32-byte hash"
                ));
                continue;
            };
            let prev = match prev_hash.map(<[u8; 32]>::try_from) {
                None => None,
                Some(Ok(h)) => Some((prev_id, h)),
                Some(Err(_)) => {
                    problems.push(format!(
                        "the anchor of entry {id} ({partition}) records a predecessor without a 32-byte hash"
                    ));
                    continue;
                }
            };
            anchors
                .by_chain
                .entry(Chain(SourceId(source)))
                .or_default()
                .insert(
                    id,
                    Anchor {
                        hash,
                        entries: n.max(0) as u64,
                        prev,
                        restored: restored
                            .contains(&(partition.clone(), source))
                            .then_some(partition),
                    },
                );
        }
        let digest = chain::hex(&Sha256::digest(text.as_bytes()));
        match newest {
            None if text.is_empty() => {}
            None => problems.push(
                "pgtrail.chain_anchors holds anchors but no partition was dropped: they were added past pgtrail"
                    .to_owned(),
            ),
            Some(row) => {
                let (name, partition, recorded): (String, Option<String>, Option<String>) =
                    (row.get(0), row.get(1), row.get(2));
                if partition.as_deref() != Some(name.as_str()) {
                    problems.push(format!(
                        "the ledger's newest drop ({name}) names no retention event of that partition: \
                         the ledger or the event was changed past pgtrail"
                    ));
                } else if recorded.as_deref() != Some(digest.as_str()) {
                    problems.push(format!(
                        "the anchors differ from those the newest drop ({name}) records: \
                         they were changed or added past pgtrail"
                    ));
                }
            }
        }
        Ok((anchors, problems))
    }

    /// The anchors of chain `c` with `after < dropped_id < before`, in id
    /// order, with their ids.
    pub fn between(
        &self,
        c: Chain,
        after: Option<i64>,
        before: Option<i64>,
    ) -> Vec<(i64, &Anchor)> {
        let Some(list) = self.by_chain.get(&c) else {
            return Vec::new();
        };
        let low = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let high = before.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        list.range((low, high)).map(|(id, a)| (*id, a)).collect()
    }
}

/// One anchor's line of the canonical text whose SHA-256 each drop's event
/// records (`pgtrail.anchor_digest()`, sql/store/0021_anchor_runs.sql): an
/// anchor without a recorded predecessor keeps migration 18's line.
fn canonical_line(
    partition: &str,
    source: i16,
    id: i64,
    hash: &[u8],
    entries: i64,
    prev: Option<(Option<i64>, &[u8])>,
) -> String {
    let mut line = format!("{partition} {source} {id} {} {entries}", chain::hex(hash));
    if let Some((prev_id, prev_hash)) = prev {
        let prev_id = prev_id.map_or("-".to_owned(), |p| p.to_string());
        line.push_str(&format!(" {prev_id} {}", chain::hex(prev_hash)));
    }
    line.push('\n');
    line
}

/// What is wrong when a walk standing after `at` crosses anchor `id`, whose
/// run followed `prev`.
fn misplaced(
    id: i64,
    prev: (Option<i64>, [u8; 32]),
    at: (Option<i64>, [u8; 32]),
) -> Option<String> {
    if prev == at {
        return None;
    }
    let name = |p: Option<i64>| p.map_or("the chain's start".to_owned(), |i| format!("entry {i}"));
    Some(if prev.0 == at.0 {
        format!(
            "retention dropped a run of entries up to entry {id} that followed {} with hash {}, \
             but that entry's hash is {} here: it was changed",
            name(prev.0),
            chain::hex(&prev.1),
            chain::hex(&at.1)
        )
    } else {
        format!(
            "retention dropped a run of entries up to entry {id} that followed {}, but the chain \
             reaches the cut from {}: entries between them were deleted or inserted past pgtrail",
            name(prev.0),
            name(at.0)
        )
    })
}

/// Where the chain stands before `from`: the id and hash of its last hashed
/// entry below it, or of the last anchor below it where retention cut the
/// chain later than that (`None` when the chain has neither).
pub(super) async fn start_of(
    tx: &tokio_postgres::Transaction<'_>,
    c: Chain,
    from: i64,
) -> Result<Option<(i64, [u8; 32])>> {
    let anchors: bool = tx
        .query_one(
            "SELECT to_regclass('pgtrail.chain_anchors') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let entry = format!(
        "SELECT id, hash FROM pgtrail.entries WHERE id < $1 AND {} \
         AND hash IS NOT NULL ORDER BY id DESC LIMIT 1",
        c.sql_condition()
    );
    let sql = if anchors {
        format!(
            "({entry}) UNION ALL (SELECT dropped_id, dropped_hash FROM pgtrail.chain_anchors \
             WHERE dropped_id < $1 AND source = {} ORDER BY dropped_id DESC LIMIT 1) \
             ORDER BY 1 DESC LIMIT 1",
            (c.0).0
        )
    } else {
        entry
    };
    let row = tx.query_opt(&sql, &[&from]).await?;
    Ok(row.and_then(|r| {
        let hash: [u8; 32] = r.get::<_, Vec<u8>>(1).try_into().ok()?;
        Some((r.get(0), hash))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_without_a_predecessor_keeps_migration_18s_line() {
        let hash = [0xab; 32];
        let old = canonical_line("entries_p20260101", 0, 5, &hash, 3, None);
        assert_eq!(
            old,
            format!("entries_p20260101 0 5 {} 3\n", "ab".repeat(32))
        );
        let at_start = canonical_line("p", 1, 5, &hash, 3, Some((None, &[0u8; 32][..])));
        assert_eq!(
            at_start,
            format!("p 1 5 {} 3 - {}\n", "ab".repeat(32), "00".repeat(32))
        );
        let after = canonical_line("p", 1, 9, &hash, 1, Some((Some(7), &[1u8; 32][..])));
        assert!(
            after.ends_with(&format!(" 1 7 {}\n", "01".repeat(32))),
            "{after}"
        );
    }

    #[test]
    fn a_cut_reached_from_elsewhere_than_its_predecessor_is_named() {
        let h = |b: u8| [b; 32];
        assert_eq!(misplaced(9, (Some(7), h(7)), (Some(7), h(7))), None);
        assert_eq!(misplaced(9, (None, h(0)), (None, h(0))), None);
        let deleted = misplaced(9, (Some(7), h(7)), (Some(5), h(5))).unwrap_or_default();
        assert!(
            deleted.contains("followed entry 7") && deleted.contains("from entry 5"),
            "{deleted}"
        );
        let start = misplaced(9, (None, h(0)), (Some(5), h(5))).unwrap_or_default();
        assert!(start.contains("followed the chain's start"), "{start}");
        let changed = misplaced(9, (Some(7), h(7)), (Some(7), h(8))).unwrap_or_default();
        assert!(changed.contains("it was changed"), "{changed}");
    }
}
