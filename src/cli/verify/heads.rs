//! `pgtrail verify`'s checks of the chain heads: each chain's head as stored
//! in `pgtrail.chain_heads` against its entries ([`problems`]), and with
//! `--public-key` every signed head of the sources checked ([`signed`]),
//! whose newest one each chain must pass through.

use std::collections::BTreeMap;

use anyhow::Result;
use futures_util::TryStreamExt;

use super::{push_break, Report, Scope, Walk};
use crate::store::chain::{self, Chain};
use crate::store::signing::{SignedHead, SIGNED_HEAD_COLUMNS};
use crate::store::sources::SourceId;

/// The newest signed head that verifies, per source, and of them all (the
/// events chain, which every source's heads sign, must pass through it).
pub(super) struct Signed {
    by_source: BTreeMap<SourceId, SignedHead>,
    newest: Option<SignedHead>,
}

impl Signed {
    /// The signed count and hash chain `c` must pass through.
    pub(super) fn point(&self, c: Chain) -> Option<(i64, [u8; 32])> {
        let head = if c == Chain::EVENTS {
            self.newest.as_ref()?
        } else {
            self.by_source.get(&c.0)?
        };
        let (n, hash) = head.head(c);
        Some((n, hash.try_into().unwrap_or([0xff; 32])))
    }
}

/// Checks every signed head of the sources in `scope` with `key`; a head
/// that does not verify, and a source none of whose heads does, is a break.
pub(super) async fn signed(
    tx: &tokio_postgres::Transaction<'_>,
    key: &ed25519_dalek::VerifyingKey,
    scope: &Scope,
    report: &mut Report,
) -> Result<Signed> {
    let rows = tx
        .query_raw(
            &format!("SELECT id, {SIGNED_HEAD_COLUMNS} FROM pgtrail.signed_heads ORDER BY id"),
            std::iter::empty::<i64>(),
        )
        .await?;
    futures_util::pin_mut!(rows);
    // The sources checked (pgtrail's own events aside), by name.
    let ids: BTreeMap<&str, SourceId> = scope
        .chains
        .iter()
        .filter(|(id, _)| **id != SourceId::EVENTS)
        .map(|(id, n)| (n.as_str(), *id))
        .collect();
    let mut checked = 0;
    let mut signed = Signed {
        by_source: BTreeMap::new(),
        newest: None,
    };
    while let Some(row) = rows.try_next().await? {
        let id: i64 = row.try_get(0)?;
        let head = SignedHead::from_row_at(&row, 1)?;
        let source = head.source.clone().unwrap_or_else(|| scope.first.clone());
        let Some(&chain) = ids.get(source.as_str()) else {
            continue;
        };
        checked += 1;
        if head.verifies(key) {
            signed.newest = Some(head.clone());
            signed.by_source.insert(chain, head);
        } else {
            push_break(
                report,
                None,
                "signed heads",
                format!(
                    "signed head {id} of source {source:?} ({}) does not verify with this public key: \
                     it was forged or changed, or signed with another key (if the sources of this \
                     store sign with different keys, check each with --source NAME)",
                    head.signed_at
                ),
            );
        }
    }
    for (name, id) in ids {
        if !signed.by_source.contains_key(&id) {
            push_break(
                report,
                None,
                "signed heads",
                format!("no signed head of source {name:?} verifies with this public key: is store.signing_key_file set in its daemon's config, and is this its public half?"),
            );
        }
    }
    report.signatures_checked = Some(checked);
    report.signed_head = signed.newest.clone();
    Ok(signed)
}

/// What is wrong with chain `c`'s head, as stored, against the entries
/// `walk` read (`whole`: from the first entry on), and against its signed head.
pub(super) async fn problems(
    tx: &tokio_postgres::Transaction<'_>,
    c: Chain,
    walk: &Walk,
    whole: bool,
) -> Result<Vec<String>> {
    let name = &walk.name;
    let mut problems = Vec::new();
    if let Some((n, _)) = walk.signed {
        if (walk.position() as i64) < n {
            problems.push(format!(
                "the chain of {name} holds {} entries, fewer than the {n} of its signed head: entries were removed",
                walk.position()
            ));
        }
    }
    let row = tx
        .query_opt(
            "SELECT hash, entries FROM pgtrail.chain_heads WHERE source = $1",
            &[&c.0 .0],
        )
        .await?;
    let Some(row) = row else {
        problems.insert(
            0,
            format!("the chain of {name} has no head in pgtrail.chain_heads: it was deleted"),
        );
        return Ok(problems);
    };
    let hash: Vec<u8> = row.get(0);
    let entries: i64 = row.get(1);
    let last = if walk.hashed {
        walk.prev
    } else {
        chain::GENESIS
    };
    if hash != last {
        problems.insert(0, format!(
            "the head of the chain of {name} ({}) is not the hash of its last entry ({}): entries were deleted from its end or added past pgtrail",
            chain::hex(&hash),
            walk.prev_id.map_or("none".into(), |i| format!("id {i}")),
        ));
    } else if whole && entries != walk.position() as i64 {
        problems.insert(
            0,
            format!(
                "the head of the chain of {name} counts {entries} entries but {} are stored and {} were dropped by retention",
                walk.report.entries, walk.report.dropped
            ),
        );
    }
    Ok(problems)
}
