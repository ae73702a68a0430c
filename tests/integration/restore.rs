//! `pgtrail restore FILE`: an archive of a partition that retention dropped goes back into
//! the store, into that partition, with the original ids, hashes and content; `verify` stays
//! intact and still finds an edit of a restored entry; the restore is recorded as an event; the
//! partition is held from retention, then dropped again. An archive that is not one, fails its
//! own check, is of a range still in the store, does not match what the store dropped, or
//! cannot be decrypted is refused, and the store is unchanged.
//!
//! The old entries are pgtrail's own events with commit times 200 days back, written through
//! `pgtrail.record_event` with their digest computed by pgtrail's chain code.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgtrail::archive::{self, Range, Sealing, Written};
use pgtrail::export::encrypt::{Recipients, Sealed};
use pgtrail::store::chain::Content;
use pgtrail::store::sources::SourceId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::harness::*;
use crate::verify::past_the_triggers_of;

/// Events in the old partition.
const OLD: usize = 6;

/// `n` `config` events `days` days back, a second apart, through record_event.
async fn events_days_ago(store: &Client, days: i32, n: usize) {
    for k in 0..n {
        let details = format!(r#"{{"event":"test","k":{k}}}"#);
        let secs = n as f64 - k as f64;
        event_days_ago(store, (days, secs), &format!("old event {k}"), &details).await;
    }
}

/// A `config` event `days` days and `secs` seconds back, through record_event with its
/// digest computed by pgtrail's chain code, remarked `remarks`: its commit time.
pub(crate) async fn event_days_ago(
    store: &Client,
    (days, secs): (i32, f64),
    remarks: &str,
    details: &str,
) -> DateTime<Utc> {
    let at: DateTime<Utc> = store
        .query_one(
            "SELECT date_trunc('milliseconds', now()) - make_interval(days => $1, secs => $2)",
            &[&days, &secs],
        )
        .await
        .unwrap()
        .get(0);
    let context = format!(r#"{{"actor":"tester","remarks":"{remarks}"}}"#);
    let content = Content {
        committed_at_micros: at.timestamp_micros(),
        xid: None,
        lsn: None,
        schema: "pgtrail",
        table: "config",
        action: "EVENT",
        primary_key: None,
        before: None,
        after: None,
        changed_columns: None,
        context: &context,
        details: Some(details),
    };
    store
        .execute(
            "SELECT pgtrail.record_event($1, 'config', NULL, NULL, NULL, NULL, $2::text::json, \
             $3::text::json, 'tester', NULL, $4)",
            &[&at, &context, &details, &&content.digest()[..]],
        )
        .await
        .unwrap();
    at
}

/// A store with retention 90d whose old partition holds [`OLD`] events, and an archive of it.
struct Old {
    env: TestEnv,
    store: Client,
    name: String,
    archive: Written,
    /// The partition's entries as stored: id, hash, and the content as text.
    entries: Vec<Vec<Option<String>>>,
}

async fn old_partition_archived() -> Old {
    let env = TestEnv::start_with(ClusterOptions::default(), |c| {
        c.store_toml = "retention = \"90d\"\n".into();
    })
    .await;
    env.setup().await;
    let store = env.store().await;
    events_days_ago(&store, 200, OLD).await;
    // A newer event, so the events chain goes on past the old partition.
    events_days_ago(&store, 0, 1).await;
    let row = store
        .query_one(
            "SELECT name, from_at, to_at FROM pgtrail.partitions \
             WHERE dropped_at IS NULL AND to_at <= now() - interval '90 days'",
            &[],
        )
        .await
        .unwrap();
    let (name, from, to): (String, DateTime<Utc>, DateTime<Utc>) =
        (row.get(0), row.get(1), row.get(2));
    let entries = in_range(&store, from, to).await;
    assert_eq!(entries.len(), OLD);
    let range = Range {
        source_id: SourceId(0),
        source_name: "pgtrail".into(),
        from,
        to,
    };
    let dir = env.trail.dir().join("archives");
    std::fs::create_dir_all(&dir).unwrap();
    let mut client = env.store().await;
    let archive = archive::write(&mut client, &range, &dir, &Sealing::Plain)
        .await
        .unwrap();
    Old {
        env,
        store,
        name,
        archive,
        entries,
    }
}

/// Every entry committed in `[from, to)`: id, hash and content, as text, in id order.
pub(crate) async fn in_range(
    store: &Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Vec<Option<String>>> {
    store
        .query(
            "SELECT id::text, encode(hash, 'hex'), committed_at::text, xid::text, lsn::text, schema_name, \
                    table_name, action, primary_key::text, before::text, after::text, \
                    changed_columns::text, context::text, details::text, row_key::text, actor, \
                    host(client_addr), source::text \
             FROM pgtrail.entries WHERE committed_at >= $1 AND committed_at < $2 ORDER BY id",
            &[&from, &to],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
        .collect()
}

/// What a refused restore must leave as it was: every entry, the ledger, the anchors.
async fn store_state(store: &Client) -> (i64, String, i64) {
    let r = store
        .query_one(
            "SELECT (SELECT count(*) FROM pgtrail.entries), \
                    (SELECT string_agg(format('%s %s %s %s', name, dropped_at, held_until, restored_at), ';' ORDER BY name) \
                     FROM pgtrail.partitions), \
                    (SELECT count(*) FROM pgtrail.chain_anchors)",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

pub(crate) async fn json_of(env: &TestEnv, args: &[&str]) -> (i32, Value, CliOutput) {
    let out = env.trail.cli(args).await;
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().expect("exited by a signal"), v, out)
}

/// `pgtrail restore FILE [ARGS…]`, which must fail naming `wanted`, changing nothing.
async fn refused(o: &Old, file: &Path, args: &[&str], wanted: &str) {
    let before = store_state(&o.store).await;
    let mut all = vec!["restore", file.to_str().unwrap()];
    all.extend(args);
    let out = o.env.trail.cli(&all).await;
    assert_eq!(out.status.code(), Some(1), "{all:?}: {}", out.combined());
    assert!(
        out.stderr.contains(wanted),
        "{all:?} should say {wanted:?}: {}",
        out.combined()
    );
    assert_eq!(
        store_state(&o.store).await,
        before,
        "{all:?} changed the store"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_partition_is_restored_from_its_archive_held_and_dropped_again() {
    let o = old_partition_archived().await;
    let file = o.archive.path.to_str().unwrap();
    // Before the drop its entries are in the store: nothing to restore.
    refused(&o, &o.archive.path, &[], "was not dropped").await;

    let (code, done, out) = json_of(&o.env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(done["partitions"][0]["name"], o.name.as_str(), "{done}");
    let (from, to) = (o.archive.range.from, o.archive.range.to);
    assert!(in_range(&o.store, from, to).await.is_empty());

    // A line longer than --max-line is refused, naming the option that raises it.
    refused(
        &o,
        &o.archive.path,
        &["--max-line", "300"],
        "line 2: it is longer than 300 bytes",
    )
    .await;
    refused(
        &o,
        &o.archive.path,
        &["--max-line", "300"],
        "--max-line SIZE",
    )
    .await;

    let (code, restored, out) =
        json_of(&o.env, &["restore", file, "--json", "--max-line", "1GiB"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(restored["partition"], o.name.as_str(), "{restored}");
    assert_eq!(restored["entries"], OLD as i64);
    assert_eq!(restored["sha256"], hex(&o.archive.sha256));
    // Exactly the original entries: ids, hashes, content, derived columns, source.
    assert_eq!(in_range(&o.store, from, to).await, o.entries);
    let held: bool = o
        .store
        .query_one(
            "SELECT dropped_at IS NULL AND restored_at IS NOT NULL \
             AND held_until > now() + interval '29 days' AND held_until < now() + interval '31 days' \
             FROM pgtrail.partitions WHERE name = $1",
            &[&o.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        held,
        "the ledger marks the partition restored and held 30 days"
    );
    let event: Value = o
        .store
        .query_one(
            "SELECT details FROM pgtrail.entries WHERE table_name = 'retention' \
             AND details->>'event' = 'partition_restored'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(event["partition"], o.name.as_str(), "{event}");
    assert_eq!(event["entries"]["0"], OLD as i64, "{event}");
    assert_eq!(
        event["archive"]["sha256"],
        hex(&o.archive.sha256),
        "{event}"
    );
    let file_name = o.archive.path.file_name().unwrap().to_str().unwrap();
    assert_eq!(event["archive"]["file"], file_name, "{event}");
    assert_eq!(event["hold"], "30 days", "{event}");

    let (code, v, out) = json_of(&o.env, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(v["chains"]["pgtrail"]["dropped"], 0, "{v}");
    assert_eq!(
        (&v["partitions_dropped"], &v["partitions_restored"]),
        (&0.into(), &1.into()),
        "{v}"
    );
    // Held: retention does not list it; a second restore has nothing to do.
    let (code, dry, _) = json_of(&o.env, &["retention", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{dry}");
    assert!(!dry.to_string().contains(&o.name), "{dry}");
    refused(&o, &o.archive.path, &[], "already restored").await;
    // A restored partition takes no new entry.
    let e = o
        .store
        .batch_execute(&format!("SELECT pgtrail.record_event('{from}'::timestamptz + interval '1 hour', 'config', NULL, NULL, NULL, NULL, '{{}}', NULL, NULL, NULL, sha256(''))"))
        .await
        .expect_err("a restored partition is read-only");
    assert!(
        format!("{e:?}").contains("restored from an archive"),
        "{e:?}"
    );

    // The hold over, retention drops it again, and verify still crosses it.
    o.store
        .execute("UPDATE pgtrail.partitions SET held_until = now() - interval '1 minute' WHERE name = $1", &[&o.name])
        .await
        .unwrap();
    let anchors = store_state(&o.store).await.2;
    let (code, again, out) = json_of(&o.env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(again["partitions"][0]["name"], o.name.as_str(), "{again}");
    assert!(in_range(&o.store, from, to).await.is_empty());
    assert_eq!(store_state(&o.store).await.2, anchors, "the same anchors");
    let (code, v, out) = json_of(&o.env, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(v["chains"]["pgtrail"]["dropped"], OLD as i64, "{v}");
    assert_eq!(
        (&v["partitions_dropped"], &v["partitions_restored"]),
        (&1.into(), &0.into()),
        "{v}"
    );

    // Restored once more, an edit of a restored entry past the triggers is found.
    let (code, _, out) = json_of(&o.env, &["restore", file, "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    let edited: i64 = o.entries[2][0].as_deref().unwrap().parse().unwrap();
    past_the_triggers_of(
        &o.store,
        &["pgtrail.entry_rows"],
        &format!(
            "UPDATE pgtrail.entry_rows SET details = '{{\"event\":\"forged\"}}' WHERE id = {edited}"
        ),
    )
    .await;
    let (code, v, out) = json_of(&o.env, &["verify", "--json"]).await;
    assert_eq!(code, 1, "{}", out.combined());
    assert_eq!(v["breaks"][0]["id"], edited, "{v}");
}

/// A copy of the archive's lines, changed by `change`, compressed under `name`.
fn changed_copy(o: &Old, name: &str, change: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let text = zstd::decode_all(std::fs::File::open(&o.archive.path).unwrap()).unwrap();
    let mut lines: Vec<String> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    change(&mut lines);
    let path = o.env.trail.dir().join(name);
    let body = lines.join("\n") + "\n";
    std::fs::write(&path, zstd::encode_all(body.as_bytes(), 3).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_that_do_not_match_what_was_dropped_are_refused_and_change_nothing() {
    let o = old_partition_archived().await;
    let (code, _, out) = json_of(&o.env, &["retention", "--json"]).await;
    assert_eq!(code, 0, "{}", out.combined());

    let not_one = o.env.trail.dir().join("notes.txt");
    std::fs::write(&not_one, "not an archive\n").unwrap();
    refused(&o, &not_one, &[], "not a pgtrail archive").await;
    // An edited line fails the file's own check, named by its line.
    let edited = changed_copy(&o, "edited.jsonl.zst", |l| {
        l[3] = l[3].replacen("old event 2", "old event X", 1);
    });
    refused(&o, &edited, &[], "line 4").await;
    // A consistent file without its first entry (the next one carries the seam): its own check
    // passes, the store's anchors do not.
    let cut = changed_copy(&o, "cut.jsonl.zst", |l| {
        let first: Value = serde_json::from_str(&l[1]).unwrap();
        let seam = first["hash"].as_str().unwrap().to_owned();
        l.remove(1);
        l[1] = format!("{},\"prev\":\"{seam}\"}}", l[1].strip_suffix('}').unwrap());
        let last = l.len() - 1;
        l[last] = l[last].replace(
            &format!("\"entries\":{OLD}"),
            &format!("\"entries\":{}", OLD - 1),
        );
        // The trailer's digest of the lines before it, recomputed as a forger would.
        let trailer: Value = serde_json::from_str(&l[last]).unwrap();
        let stale = trailer["lines_sha256"].as_str().unwrap().to_owned();
        let fresh: String = Sha256::digest((l[..last].join("\n") + "\n").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        l[last] = l[last].replace(&stale, &fresh);
    });
    let (code, _, out) = json_of(&o.env, &["verify", "--archive", cut.to_str().unwrap()]).await;
    assert_eq!(
        code,
        0,
        "the cut copy checks out on its own: {}",
        out.combined()
    );
    refused(
        &o,
        &cut,
        &[],
        "entries were removed from or added to the archive",
    )
    .await;

    // The archive encrypted with age, and someone else's key.
    let key = age::x25519::Identity::generate();
    let recipients = Recipients::parse(&[key.to_public().to_string()]).unwrap();
    let other = o.env.trail.dir().join("other-key.txt");
    {
        use age::secrecy::ExposeSecret;
        let stranger = age::x25519::Identity::generate();
        std::fs::write(
            &other,
            format!("{}\n", stranger.to_string().expose_secret()),
        )
        .unwrap();
    }
    let age_copy = o.env.trail.dir().join("sealed.jsonl.zst.age");
    let mut sealed = Sealed::encrypted(&recipients, Vec::new()).unwrap();
    std::io::Write::write_all(&mut sealed, &std::fs::read(&o.archive.path).unwrap()).unwrap();
    std::fs::write(&age_copy, sealed.finish().unwrap()).unwrap();
    refused(&o, &age_copy, &[], "--identity").await;
    refused(
        &o,
        &age_copy,
        &["--identity", other.to_str().unwrap()],
        "no identity in",
    )
    .await;

    // No pgtrail role may call restore_partition: restore is the owner's.
    o.store
        .batch_execute("CREATE ROLE rs_w LOGIN IN ROLE pgtrail_writer")
        .await
        .unwrap();
    let writer = connect(&o.env.cluster.url_as("pgtrail", "rs_w", None))
        .await
        .unwrap();
    let e = writer
        .batch_execute("SELECT pgtrail.restore_partition(0::smallint, 'pgtrail', now(), now(), '{}', '1 day', NULL)")
        .await
        .expect_err("the writer may not restore");
    assert!(format!("{e:?}").contains("permission denied"), "{e:?}");

    // The archive as written still restores, after all that.
    let (code, _, out) = json_of(&o.env, &["restore", o.archive.path.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(
        in_range(&o.store, o.archive.range.from, o.archive.range.to).await,
        o.entries
    );
}
