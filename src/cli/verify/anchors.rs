//! Chains across retention's drops (sql/store/0018_retention.sql): the
//! anchors `pgtrail.drop_partition` wrote where it cut a chain, loaded per
//! chain, and checked together against the digest the newest drop's
//! `retention` event records (the event itself is checked by the events
//! chain's walk; older drops' events may be gone with their partitions). A walk
//! meeting anchors between its previous entry and the next continues from
//! the last one's hash and counts their dropped entries; an entry deleted
//! any other way has no anchor and still breaks the chain.

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
        let mut text = String::new();
        for row in tx
            .query(
                "SELECT source, dropped_id, dropped_hash, dropped_entries, partition \
                 FROM pgtrail.chain_anchors ORDER BY source, dropped_id",
                &[],
            )
            .await?
        {
            let (source, id, hash, n, partition): (i16, i64, Vec<u8>, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            // The canonical text of sql/store/0018_retention.sql's anchor_digest.
            text.push_str(&format!(
                "{partition} {source} {id} {} {n}\n",
                chain::hex(&hash)
            ));
            let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
                problems.push(format!(
                    "the anchor of entry {id} ({partition}) has no 32-byte hash"
                ));
                continue;
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

    /// The anchors of chain `c` with `after < dropped_id < before`, in id order.
    pub fn between(&self, c: Chain, after: Option<i64>, before: Option<i64>) -> Vec<&Anchor> {
        let Some(list) = self.by_chain.get(&c) else {
            return Vec::new();
        };
        let low = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let high = before.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        list.range((low, high)).map(|(_, a)| a).collect()
    }
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
