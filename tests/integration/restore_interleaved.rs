//! Retention and restore with two old partitions whose ids interleave: pgtrail's own events
//! recorded alternately 200 days back (partition A) and 130 days back (partition B), so each
//! partition's stretches of the events chain are cut by the other's entries. Whatever order the
//! two are dropped, restored and dropped again in, a genuine archive restores byte for byte, a
//! restored partition drops again with its first drop's anchors, `verify` stays intact and counts
//! what is stored and what was dropped, and a cut or forged archive is still refused. Anchors
//! written by migration 18's drop_partition (no predecessors) stay verifiable beside new ones.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgtrail::archive::{self, Range, Sealing};
use pgtrail::store::sources::SourceId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::harness::*;
use crate::restore::{event_days_ago, in_range, json_of};
use crate::verify::delete_past_the_triggers;

/// Which partition each old event goes to, in the order they are recorded (A: 200 days back,
/// B: 130): runs A[0,1] B[2] A[3] B[4,5] A[6] B[7] A[8].
const PATTERN: [char; 9] = ['A', 'A', 'B', 'A', 'B', 'B', 'A', 'B', 'A'];
/// The event of B changed in the forged archive: the last of B's run [4,5], not B's last entry.
const FORGED: usize = 5;
/// The event of B left out of the cut archive: B's first run, one entry.
const CUT: usize = 2;
/// Every old event's details.
const DETAILS: &str = r#"{"event":"test"}"#;

/// One old partition: its name, range and entries as stored (id, hash and content as text).
struct Part {
    name: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    entries: Vec<Vec<Option<String>>>,
}

struct Two {
    env: TestEnv,
    store: Client,
    a: Part,
    b: Part,
    /// The archive directory of `[store] archive_dir`.
    dir: PathBuf,
    /// The id of B's event [`FORGED`], and its hash were its remarks changed to `old X…`.
    forged: (i64, String),
    /// A new event recorded before the old ones: the entry A's first run follows.
    before: i64,
}

/// The live partition holding commit time `at`: its name and range.
pub(crate) async fn partition_holding(
    store: &Client,
    at: DateTime<Utc>,
) -> (String, DateTime<Utc>, DateTime<Utc>) {
    let row = store
        .query_one(
            "SELECT name, from_at, to_at FROM pgtrail.partitions \
             WHERE dropped_at IS NULL AND from_at <= $1 AND $1 < to_at",
            &[&at],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// One `pgtrail retention --json` pass, which must succeed: the partitions it dropped.
pub(crate) async fn retention_pass(env: &TestEnv) -> Vec<String> {
    let (code, v, out) = json_of(env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["outcome"] == "dropped")
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn part_at(store: &Client, at: DateTime<Utc>) -> Part {
    let (name, from, to) = partition_holding(store, at).await;
    let entries = in_range(store, from, to).await;
    Part {
        name,
        from,
        to,
        entries,
    }
}

/// A store with retention 90d and archives, holding the interleaved events of [`PATTERN`] and
/// a newer one (so the events chain goes on past both).
async fn two_interleaved() -> Two {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "retention = \"90d\"\narchive_dir = \"arch\"\n".into();
    })
    .await;
    env.setup().await;
    let store = env.store().await;
    event_days_ago(&store, (0, 0.0), "before", DETAILS).await;
    let before: i64 = store
        .query_one("SELECT max(id) FROM pgtrail.entries", &[])
        .await
        .unwrap()
        .get(0);
    let mut at = Vec::new();
    for (k, p) in PATTERN.iter().enumerate() {
        let days = if *p == 'A' { 200 } else { 130 };
        at.push(event_days_ago(&store, (days, 0.0), &format!("old {p}{k}"), DETAILS).await);
    }
    event_days_ago(&store, (0, 0.0), "new", DETAILS).await;
    let (a, b) = (part_at(&store, at[0]).await, part_at(&store, at[2]).await);
    assert_ne!(a.name, b.name);
    // The ids really interleave, in the pattern's order.
    let ids: Vec<(i64, char)> = a
        .entries
        .iter()
        .map(|e| (id_of(e), 'A'))
        .chain(b.entries.iter().map(|e| (id_of(e), 'B')))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(ids.iter().map(|i| i.1).collect::<Vec<_>>(), PATTERN);
    let forged_id = ids[FORGED].0;
    let forged: String = store
        .query_one(
            "SELECT encode(sha256(p.hash || pgtrail.entry_digest(e.committed_at, e.xid, e.lsn, \
                 e.schema_name, e.table_name, e.action, e.primary_key, e.before, e.after, \
                 e.changed_columns, replace(e.context::text, 'old B', 'old X')::json, e.details)), 'hex') \
             FROM pgtrail.entries e, pgtrail.entries p WHERE e.id = $1 AND p.id = $2",
            &[&forged_id, &ids[FORGED - 1].0],
        )
        .await
        .unwrap()
        .get(0);
    let dir = env.trail.config_path.parent().unwrap().join("arch");
    Two {
        env,
        store,
        a,
        b,
        dir,
        forged: (forged_id, forged),
        before,
    }
}

fn id_of(entry: &[Option<String>]) -> i64 {
    entry[0].as_deref().unwrap().parse().unwrap()
}

impl Two {
    /// Holds partition `name` from retention for a day, or lets its hold lapse.
    async fn hold(&self, name: &str, held: bool) {
        let until = if held { "1 day" } else { "-1 minute" };
        self.store
            .execute(
                &format!(
                    "UPDATE pgtrail.partitions SET held_until = now() + interval '{until}' WHERE name = $1"
                ),
                &[&name],
            )
            .await
            .unwrap();
    }

    /// One retention pass, which must succeed: the partitions it dropped.
    async fn retention(&self) -> Vec<String> {
        retention_pass(&self.env).await
    }

    /// `verify`, which must find the store intact: entries of the events chain stored and
    /// dropped, partitions dropped and restored.
    async fn verify(&self) -> (i64, i64, i64, i64) {
        let (code, v, out) = json_of(&self.env, &["verify", "--json"]).await;
        assert_eq!(code, 0, "{}", out.combined());
        assert_eq!(v["intact"], true, "{v}");
        let chain = &v["chains"]["pgtrail"];
        let n = |x: &Value| x.as_i64().unwrap();
        (
            n(&chain["entries"]),
            n(&chain["dropped"]),
            n(&v["partitions_dropped"]),
            n(&v["partitions_restored"]),
        )
    }

    /// The events chain's entries in the store now.
    async fn stored(&self) -> i64 {
        self.store
            .query_one("SELECT count(*) FROM pgtrail.entries WHERE source = 0", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `verify` agrees with what happened: every stored entry of the events chain checked,
    /// exactly the entries of the partitions now `dropped` counted as dropped, `restored`
    /// partitions back in the store.
    async fn verify_matches(&self, dropped: &[&Part], restored: i64) {
        let gone: usize = dropped.iter().map(|p| p.entries.len()).sum();
        let report = self.verify().await;
        let expected = (
            self.stored().await,
            gone as i64,
            dropped.len() as i64,
            restored,
        );
        assert_eq!(
            report, expected,
            "(entries, dropped, partitions dropped, restored)"
        );
    }

    /// The archive of `part` named by its newest drop's event (the ledger's `drop_event`).
    async fn archive_of(&self, part: &Part) -> PathBuf {
        let file: String = self
            .store
            .query_one(
                "SELECT e.details->'archives'->0->>'file' FROM pgtrail.partitions p \
                 JOIN pgtrail.entries e ON e.id = p.drop_event WHERE p.name = $1",
                &[&part.name],
            )
            .await
            .unwrap()
            .get(0);
        self.dir.join(file)
    }

    /// Restores `file`, which must succeed and bring back exactly `part`'s entries: whether
    /// the restore's event says the archive was recorded.
    async fn restore(&self, file: &Path, part: &Part) -> bool {
        let (code, v, out) =
            json_of(&self.env, &["restore", file.to_str().unwrap(), "--json"]).await;
        assert_eq!(code, 0, "{}", out.combined());
        assert_eq!(v["partition"], part.name.as_str(), "{v}");
        assert_eq!(
            in_range(&self.store, part.from, part.to).await,
            part.entries
        );
        v["archive_recorded"].as_bool().unwrap()
    }

    /// `restore FILE`, which must be refused naming `wanted`, the store unchanged.
    async fn refused(&self, file: &Path, wanted: &str) {
        let before = self.state().await;
        let out = self
            .env
            .trail
            .cli(&["restore", file.to_str().unwrap()])
            .await;
        assert_eq!(out.status.code(), Some(1), "{}", out.combined());
        assert!(
            out.stderr.contains(wanted),
            "want {wanted:?}: {}",
            out.combined()
        );
        assert_eq!(
            self.state().await,
            before,
            "a refused restore changed the store"
        );
    }

    /// Every entry id, the ledger and the anchors, as text.
    async fn state(&self) -> (String, String, String) {
        let r = self
            .store
            .query_one(
                "SELECT (SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM pgtrail.entries), \
                        (SELECT coalesce(string_agg(format('%s %s %s', name, dropped_at, restored_at), ';' \
                                         ORDER BY name), '') FROM pgtrail.partitions), \
                        (SELECT coalesce(string_agg(format('%s %s', dropped_id, prev_id), ',' \
                                         ORDER BY dropped_id), '') FROM pgtrail.chain_anchors)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    }

    /// `part`'s anchors: id, hash, count and predecessor (`-` where none is recorded).
    async fn anchors(&self, part: &Part) -> Vec<String> {
        query_column(
            &self.store,
            "SELECT format('%s %s %s %s %s', dropped_id, encode(dropped_hash, 'hex'), dropped_entries, \
                    coalesce(prev_id::text, '-'), coalesce(encode(prev_hash, 'hex'), '-')) \
             FROM pgtrail.chain_anchors WHERE partition = $1 ORDER BY dropped_id",
            &[&part.name],
        )
        .await
    }

    /// A copy of `file`'s lines changed by `change`, compressed under `name`, with the
    /// trailer's count and `lines_sha256` recomputed as a forger would: it checks out alone.
    async fn changed_copy(
        &self,
        file: &Path,
        name: &str,
        change: impl FnOnce(&mut Vec<String>),
    ) -> PathBuf {
        let text = zstd::decode_all(std::fs::File::open(file).unwrap()).unwrap();
        let mut lines: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let count = lines.len() - 2;
        change(&mut lines);
        let last = lines.len() - 1;
        lines[last] = lines[last].replace(
            &format!("\"entries\":{count}"),
            &format!("\"entries\":{}", lines.len() - 2),
        );
        let trailer: Value = serde_json::from_str(&lines[last]).unwrap();
        let stale = trailer["lines_sha256"].as_str().unwrap().to_owned();
        let fresh = hex(&Sha256::digest(
            (lines[..last].join("\n") + "\n").as_bytes(),
        ));
        lines[last] = lines[last].replace(&stale, &fresh);
        let path = self.env.trail.dir().join(name);
        let body = lines.join("\n") + "\n";
        std::fs::write(&path, zstd::encode_all(body.as_bytes(), 3).unwrap()).unwrap();
        let (code, v, out) = json_of(
            &self.env,
            &["verify", "--json", "--archive", path.to_str().unwrap()],
        )
        .await;
        assert_eq!(
            code,
            0,
            "the changed copy checks out alone: {}",
            out.combined()
        );
        assert_eq!(v["intact"], true, "{v}");
        path
    }

    /// B's archive `file` cut (its first run left out) and forged (entry [`FORGED`], which
    /// ends a run, changed with its hash recomputed): both are refused.
    async fn cut_and_forged_refused(&self, file: &Path) {
        let cut = self
            .changed_copy(file, "cut.jsonl.zst", |l| {
                l.retain(|line| !line.contains(&format!("\"old B{CUT}\"")))
            })
            .await;
        self.refused(&cut, "entries were removed from or added to the archive")
            .await;
        let (id, hash) = &self.forged;
        let forged = self
            .changed_copy(file, "forged.jsonl.zst", |l| {
                let line = l
                    .iter_mut()
                    .find(|line| line.contains(&format!("\"old B{FORGED}\"")))
                    .unwrap();
                let entry: Value = serde_json::from_str(line).unwrap();
                assert_eq!(entry["id"], *id);
                let genuine = entry["hash"].as_str().unwrap().to_owned();
                *line = line
                    .replace(&format!("old B{FORGED}"), &format!("old X{FORGED}"))
                    .replace(&genuine, hash);
            })
            .await;
        self.refused(&forged, "the archive was changed or forged")
            .await;
    }
}

impl Two {
    /// Entry `id` deleted past the triggers: `verify` finds the store broken, naming entry `at`
    /// with a problem that says `wanted`.
    async fn deleted_is_named(&self, id: i64, at: i64, wanted: &str) {
        delete_past_the_triggers(&self.store, id).await;
        let (code, v, out) = json_of(&self.env, &["verify", "--json"]).await;
        assert_eq!(code, 1, "{}", out.combined());
        let named = v["breaks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == at && b["problem"].as_str().unwrap().contains(wanted));
        assert!(named, "entry {at} named ({wanted:?}): {v}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_interleaved_partitions_dropped_one_after_the_other_and_drop_again() {
    let t = two_interleaved().await;
    let (a, b) = (&t.a, &t.b);
    // A goes first, B (held) after it: B's archive and anchors meet A's cuts on both sides.
    t.hold(&b.name, true).await;
    assert_eq!(t.retention().await, [a.name.as_str()]);
    t.verify_matches(&[a], 0).await;
    t.hold(&b.name, false).await;
    assert_eq!(t.retention().await, [b.name.as_str()]);
    t.verify_matches(&[a, b], 0).await;
    let first = t.archive_of(b).await;
    let b_anchors = t.anchors(b).await;
    assert_eq!(b_anchors.len(), 3, "B's runs: {b_anchors:?}");

    // B restored while A is dropped: each of B's runs follows one of A's cuts.
    assert!(t.restore(&first, b).await, "the archive its drop recorded");
    t.verify_matches(&[a], 1).await;
    // Its hold over, B drops again with the same anchors, writing a second archive.
    t.hold(&b.name, false).await;
    assert_eq!(t.retention().await, [b.name.as_str()]);
    assert_eq!(t.anchors(b).await, b_anchors);
    t.verify_matches(&[a, b], 0).await;
    let second = t.archive_of(b).await;
    assert_ne!(first, second);

    // A restored after B was dropped.
    assert!(t.restore(&t.archive_of(a).await, a).await);
    t.verify_matches(&[b], 1).await;

    // A cut or forged copy of B's archive is refused, changing nothing.
    t.cut_and_forged_refused(&first).await;
    // B's first archive, recorded by its first drop though not by the newest, restores.
    assert!(t.restore(&first, b).await, "recorded by B's first drop");
    t.verify_matches(&[], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_then_drop_again_after_the_interleaved_neighbour_was_dropped() {
    let t = two_interleaved().await;
    let (a, b) = (&t.a, &t.b);
    // B goes first (A held) and comes back; A goes while B is restored.
    t.hold(&a.name, true).await;
    assert_eq!(t.retention().await, [b.name.as_str()]);
    let b_anchors = t.anchors(b).await;
    let b_file = t.archive_of(b).await;
    assert!(t.restore(&b_file, b).await);
    t.hold(&a.name, false).await;
    assert_eq!(t.retention().await, [a.name.as_str()]);
    t.verify_matches(&[a], 1).await;

    // B's hold over, it drops again: the same anchors as its first drop, though A is gone.
    t.hold(&b.name, false).await;
    assert_eq!(t.retention().await, [b.name.as_str()]);
    assert_eq!(t.anchors(b).await, b_anchors);
    t.verify_matches(&[a, b], 0).await;

    t.cut_and_forged_refused(&b_file).await;
    assert!(t.restore(&t.archive_of(a).await, a).await);
    t.verify_matches(&[b], 1).await;

    // A restored entry deleted past the triggers: its anchor is no drop, the deletion is named.
    let a3 = id_of(&a.entries[2]);
    t.deleted_is_named(a3, a3, "restored into partition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_interleaved_verify_names_an_entry_deleted_just_before_a_cut() {
    let t = two_interleaved().await;
    t.hold(&t.b.name, true).await;
    assert_eq!(t.retention().await, [t.a.name.as_str()]);
    t.verify_matches(&[&t.a], 0).await;
    // The chain still links across A's first cut (from its hash on), but the cut records the
    // entry its run followed.
    let first_cut: i64 = t
        .store
        .query_one(
            "SELECT min(dropped_id) FROM pgtrail.chain_anchors WHERE partition = $1",
            &[&t.a.name],
        )
        .await
        .unwrap()
        .get(0);
    let before = t.before;
    t.deleted_is_named(before, first_cut, &format!("followed entry {before}"))
        .await;
}

/// migration 18's drop_partition under another name: its anchors and event as it shipped.
///
/// Since migration 23 the entries are two tables under the view pgtrail.entries: the function's
/// lock and detach are restated for them (the partition of entry_rows and its transactions
/// partition go together, as they did as one table).
fn drop_partition_v18() -> String {
    const V18: &str = include_str!("../../sql/store/0018_retention.sql");
    let start = V18.find("CREATE FUNCTION pgtrail.drop_partition(").unwrap();
    let end = start + V18[start..].find("END $$;").unwrap() + "END $$;".len();
    let restated = [
        (
            "pgtrail.drop_partition(",
            "pgtrail.drop_partition_v18(",
        ),
        (
            "LOCK TABLE pgtrail.entries IN ACCESS EXCLUSIVE MODE;",
            "LOCK TABLE pgtrail.entry_rows, pgtrail.transactions IN ACCESS EXCLUSIVE MODE;",
        ),
        (
            "EXECUTE format('ALTER TABLE pgtrail.entries DETACH PARTITION pgtrail.%I', p_name);\n    \
             EXECUTE format('DROP TABLE pgtrail.%I', p_name);",
            "EXECUTE format('ALTER TABLE pgtrail.entry_rows DETACH PARTITION pgtrail.%I', p_name);\n    \
             EXECUTE format('DROP TABLE pgtrail.%I', p_name);\n    \
             EXECUTE format('ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.%I', \
                 pgtrail.transactions_partition(p_name));\n    \
             EXECUTE format('DROP TABLE pgtrail.%I', pgtrail.transactions_partition(p_name));",
        ),
    ];
    let mut function = V18[start..end].to_owned();
    for (old, new) in restated {
        assert!(
            function.contains(old),
            "migration 18's drop_partition has {old}"
        );
        function = function.replacen(old, new, 1);
    }
    function
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_verify_with_anchors_written_by_migration_18() {
    let t = two_interleaved().await;
    let (a, b) = (&t.a, &t.b);
    // A dropped by migration 18's function (anchors without predecessors), after its archive.
    t.store.batch_execute(&drop_partition_v18()).await.unwrap();
    let mut client = t.env.store().await;
    let range = Range {
        source_id: SourceId(0),
        source_name: "pgtrail".into(),
        from: a.from,
        to: a.to,
    };
    std::fs::create_dir_all(&t.dir).unwrap();
    let written = archive::write(&mut client, &range, &t.dir, &Sealing::Plain)
        .await
        .unwrap();
    let file = written.path.file_name().unwrap().to_str().unwrap();
    let archives = format!(
        r#"[{{"source":0,"entries":{},"file":"{file}","sha256":"{}"}}]"#,
        written.entries,
        hex(&written.sha256)
    );
    t.store
        .execute(
            "SELECT pgtrail.drop_partition_v18($1, $2::text::json)",
            &[&a.name, &archives],
        )
        .await
        .unwrap();
    let a_anchors = t.anchors(a).await;
    assert!(
        a_anchors.iter().all(|x| x.ends_with(" - -")),
        "{a_anchors:?}"
    );
    t.verify_matches(&[a], 0).await;

    // B by today's: its runs end at A's old anchors, and verify crosses both kinds.
    assert_eq!(t.retention().await, [b.name.as_str()]);
    t.verify_matches(&[a, b], 0).await;
    // A comes back, and drops again with its old anchors as they were.
    assert!(t.restore(&written.path, a).await);
    t.verify_matches(&[b], 1).await;
    t.hold(&a.name, false).await;
    assert_eq!(t.retention().await, [a.name.as_str()]);
    assert_eq!(t.anchors(a).await, a_anchors);
    t.verify_matches(&[a, b], 0).await;
    assert!(t.restore(&t.archive_of(b).await, b).await);
    assert!(t.restore(&written.path, a).await);
    t.verify_matches(&[], 2).await;
}
