//! Chains across retention's drops (sql/store/0018_retention.sql): the
//! anchors `pgtrail.drop_partition` wrote where it cut a chain, loaded per
//! chain, and checked against the digest the drop's `retention` event
//! records (the event itself is checked by the events chain's walk). A walk
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
        // What the drop events say, by partition (later events of a name win:
        // a range dropped again is suffixed, so there is one).
        let mut recorded: BTreeMap<String, String> = BTreeMap::new();
        for row in tx
            .query(
                "SELECT details->>'partition', details->>'anchors_sha256' FROM pgtrail.entries \
                 WHERE source = 0 AND action = 'EVENT' AND table_name = 'retention' \
                   AND details->>'event' = 'partition_dropped' ORDER BY id",
                &[],
            )
            .await?
        {
            if let (Some(p), Some(d)) = (row.get::<_, Option<String>>(0), row.get(1)) {
                recorded.insert(p, d);
            }
        }
        let restored = tx
            .query(
                "SELECT name FROM pgtrail.partitions WHERE restored_at IS NOT NULL AND dropped_at IS NULL",
                &[],
            )
            .await?;
        anchors.partitions_restored = restored
            .iter()
            .filter(|r| recorded.contains_key(r.get::<_, &str>(0)))
            .count() as u64;
        anchors.partitions_dropped = recorded.len() as u64 - anchors.partitions_restored;
        let mut text: BTreeMap<String, String> = BTreeMap::new();
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
            text.entry(partition.clone())
                .or_default()
                .push_str(&format!("{source} {id} {} {n}\n", chain::hex(&hash)));
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
        for (partition, text) in &text {
            let digest = chain::hex(&Sha256::digest(text.as_bytes()));
            match recorded.get(partition) {
                Some(d) if *d == digest => {}
                Some(_) => problems.push(format!(
                    "the anchors of dropped partition {partition} differ from those its drop event records: \
                     they were changed past pgtrail"
                )),
                None => problems.push(format!(
                    "anchors name partition {partition}, whose drop no retention event records: \
                     they were added past pgtrail"
                )),
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
