//! Archive files (src/archive) of a store the real daemon filled: a time range of the source's
//! chain and of pgtrail's own events is written, checks out on its own (`pgtrail verify
//! --archive`, with no config; age-encrypted with `--identity`), reads back and matches the
//! store; a second archive of the range gets a name of its own; an edited value, a dropped line
//! or a truncation in a copy is named by its line; and a store changed since is found.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgtrail::archive::{self, ArchiveError, Range, ReadBack, Sealing, Written};
use pgtrail::export::encrypt::Recipients;
use pgtrail::store::sources::{self, SourceId};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::harness::*;
use crate::verify::past_the_triggers_of;

/// Source 1's entries in the range: 300 inserts in three transactions, 30 updates, 20 deletes.
const IN_RANGE: i64 = 350;

/// A captured store with changes before, in and after a time range: the world, a client on the
/// store, and the range of the source's chain. pgtrail's own events (a user added) fall in it too.
async fn captured_range() -> (TestEnv, Client, Range) {
    let (env, src, mut daemon) =
        TestEnv::capturing("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    src.batch_execute("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let from = clock(&src).await;
    for k in 0..3 {
        let lo = 51 + k * 100;
        src.batch_execute(&format!(
            "INSERT INTO t SELECT g, 'in ' || g FROM generate_series({lo}, {lo} + 99) g"
        ))
        .await
        .unwrap();
    }
    add_user(&env, "alice", "admin", None, "a long password").await;
    src.batch_execute(
        "UPDATE t SET v = v || '!' WHERE id BETWEEN 101 AND 130;
         DELETE FROM t WHERE id BETWEEN 301 AND 320;",
    )
    .await
    .unwrap();
    let to = clock(&src).await;
    src.batch_execute("UPDATE t SET v = 'after' WHERE id <= 10")
        .await
        .unwrap();
    env.sync().await;
    daemon.terminate().await;
    let store = env.store().await;
    // The store's first source: the one this config set up.
    let (source_id, source_name) = sources::all(&store).await.unwrap().swap_remove(1);
    assert_eq!(source_id, SourceId(1));
    let range = Range {
        source_id,
        source_name,
        from,
        to,
    };
    (env, store, range)
}

/// The server's clock now, between two transactions (the store shares the source's cluster).
async fn clock(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The store's (id, hash) of `range`'s entries, in id order.
async fn stored(store: &Client, range: &Range) -> Vec<(i64, Vec<u8>)> {
    store
        .query(
            "SELECT id, hash FROM pgtrail.entries WHERE committed_at >= $1 AND committed_at < $2 \
             AND coalesce(source, CASE WHEN lsn IS NULL THEN 0 ELSE 1 END) = $3::smallint ORDER BY id",
            &[&range.from, &range.to, &range.source_id.0],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn write(env: &TestEnv, range: &Range, dir: &Path, sealing: &Sealing) -> Written {
    let mut client = env.store().await;
    archive::write(&mut client, range, dir, sealing)
        .await
        .unwrap_or_else(|e| panic!("writing the archive of {range:?}: {e}"))
}

/// `pgtrail verify --archive FILE [ARGS…] --json` with no config at all: exit code and report.
async fn verify_archive(file: &Path, extra: &[&str]) -> (i32, Value, CliOutput) {
    let mut args: Vec<OsString> = vec![
        "verify".into(),
        "--json".into(),
        "--archive".into(),
        file.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let out = run_pgtrail(&args, &[], Duration::from_secs(120)).await;
    let code = out.status.code().expect("verify exited by a signal");
    let report = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (code, report, out)
}

fn sha256_of(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_a_captured_range_checks_out_and_matches_the_store() {
    let (env, store, range) = captured_range().await;
    let expected = stored(&store, &range).await;
    assert_eq!(
        expected.len() as i64,
        IN_RANGE,
        "the range holds what the source did in it"
    );
    let dir = env.trail.dir().join("archives");
    std::fs::create_dir(&dir).unwrap();

    let written = write(&env, &range, &dir, &Sealing::Plain).await;
    let day = |t: DateTime<Utc>| t.format("%Y%m%d").to_string();
    let name = format!(
        "{}-{}-{}.jsonl.zst",
        range.source_name,
        day(range.from),
        day(range.to)
    );
    assert_eq!(written.path, dir.join(&name));
    assert_eq!(written.entries, IN_RANGE as u64);
    assert_eq!(written.sha256, sha256_of(&written.path));
    // One run, from the entry after the 50 before the range to the last in it.
    assert_eq!(written.runs.len(), 1, "{:?}", written.runs);
    let run = written.runs[0];
    assert_eq!(
        (run.first_id, run.last_id),
        (expected[0].0, expected[expected.len() - 1].0)
    );
    assert_eq!(run.last_hash.to_vec(), expected[expected.len() - 1].1);
    let before: Vec<u8> = store
        .query_one(
            "SELECT hash FROM pgtrail.entries WHERE id < $1 AND lsn IS NOT NULL ORDER BY id DESC LIMIT 1",
            &[&run.first_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        run.prev.to_vec(),
        before,
        "the seam is the hash of the entry before the range"
    );

    // Read back alone, then against the store.
    let checked = archive::check(&written.path, None, archive::MAX_LINE).unwrap();
    assert_eq!(
        (checked.entries, checked.runs.clone()),
        (written.entries, written.runs.clone())
    );
    match archive::read_back(&store, &written, None).await.unwrap() {
        ReadBack::Plaintext(c) => assert_eq!(c.sha256, written.sha256),
        other => panic!("a plain archive is read back whole: {other:?}"),
    }
    // The file's lines are the entries of the range, in id order, between header and trailer.
    let lines = lines_of(&written.path);
    let ids: Vec<i64> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, expected.iter().map(|e| e.0).collect::<Vec<_>>());
    assert_eq!(
        serde_json::from_str::<Value>(&lines[0]).unwrap()["source"],
        range.source_name.as_str()
    );

    // `pgtrail verify --archive`, with no config.
    let (code, report, out) = verify_archive(&written.path, &[]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(report["intact"], true);
    assert_eq!(report["entries"], IN_RANGE);
    assert_eq!(report["sha256"], hex(&written.sha256));
    assert_eq!(report["runs"][0]["prev"], hex(&run.prev));
    assert_eq!(report["runs"][0]["last_hash"], hex(&run.last_hash));
    let text = run_pgtrail(
        &[
            "verify".into(),
            "--archive".into(),
            written.path.clone().into(),
        ],
        &[],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        text.stdout
            .contains(&format!("intact: {IN_RANGE} entries verified")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!(
            "after {}, last hash {}",
            hex(&run.prev),
            hex(&run.last_hash)
        )),
        "{}",
        text.stdout
    );

    // A lower --max-line than its lines: refused at the first, naming the limit and the option.
    let (code, report, out) = verify_archive(&written.path, &["--max-line", "300"]).await;
    assert_eq!(code, 1, "{}", out.combined());
    assert_eq!(report["line"], 2, "{report}");
    let problem = report["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("line 2: it is longer than 300 bytes, the longest this reader takes")
            && problem.contains("--max-line SIZE"),
        "{problem}"
    );
    let (code, _, out) = verify_archive(&written.path, &["--max-line", "2GiB"]).await;
    assert_eq!(code, 0, "{}", out.combined());
    let (code, _, out) = verify_archive(&written.path, &["--max-line", "lots"]).await;
    assert_eq!(code, 2, "{}", out.combined());
    assert!(out.stderr.contains("is not a size"), "{}", out.combined());

    // pgtrail's own events of the range (the user added): source 0, named pgtrail.
    let events = Range {
        source_id: SourceId(0),
        source_name: "pgtrail".into(),
        ..range.clone()
    };
    let expected_events = stored(&store, &events).await;
    assert!(
        !expected_events.is_empty(),
        "the user added is an event in the range"
    );
    let ev = write(&env, &events, &dir, &Sealing::Plain).await;
    assert_eq!(ev.entries as usize, expected_events.len());
    assert!(ev
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("pgtrail-"));
    archive::read_back(&store, &ev, None).await.unwrap();

    // A second archive of the range: a name of its own, the first file untouched.
    let again = write(&env, &range, &dir, &Sealing::Plain).await;
    assert_eq!(
        again.path,
        dir.join(name.replace(".jsonl.zst", "-2.jsonl.zst"))
    );
    assert_eq!(sha256_of(&written.path), written.sha256);
    assert_eq!(again.runs, written.runs);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "no temporary file is left behind: {left:?}");

    tampered_copies_are_named(&written.path, &dir).await;
    the_chain_around_the_range_is_checked(&env, &store, &range, &dir).await;
}

/// `write` refuses a range whose chain breaks just outside it: at the entry after its last
/// (committed after the range), or, for a range reaching the chain's end, at the chain's head;
/// and a range whose ends are not whole microseconds (the store's precision).
async fn the_chain_around_the_range_is_checked(
    env: &TestEnv,
    store: &Client,
    range: &Range,
    dir: &Path,
) {
    let mut client = env.store().await;
    let finer = Range {
        from: range.from + chrono::Duration::nanoseconds(500),
        ..range.clone()
    };
    let e = refused(&mut client, &finer, dir).await;
    assert!(
        matches!(e, ArchiveError::Range(_)) && e.to_string().contains("fraction of a microsecond"),
        "{e}"
    );
    let chain = "coalesce(source, CASE WHEN lsn IS NULL THEN 0 ELSE 1 END) = 1";
    let last = stored(store, range).await.last().unwrap().0;
    let (next, end): (i64, i64) = {
        let row = store
            .query_one(
                &format!("SELECT min(id), max(id) FROM pgtrail.entries WHERE id > $1 AND {chain}"),
                &[&last],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let original: Vec<u8> = store
        .query_one("SELECT hash FROM pgtrail.entries WHERE id = $1", &[&next])
        .await
        .unwrap()
        .get(0);
    // The entry after the range changed (past the trigger): the range is not archived.
    let forged = format!("UPDATE pgtrail.entry_rows SET hash = sha256(hash) WHERE id = {next}");
    past_the_triggers_of(store, &["pgtrail.entry_rows"], &forged).await;
    let e = refused(&mut client, range, dir).await;
    assert!(
        matches!(e, ArchiveError::StoreBroken { id, .. } if id == next)
            && e.to_string().contains(&format!("following entry {last}")),
        "the entry after the range is named: {e}"
    );
    let restore = format!(
        "UPDATE pgtrail.entry_rows SET hash = '\\x{}'::bytea WHERE id = {next}",
        hex(&original)
    );
    past_the_triggers_of(store, &["pgtrail.entry_rows"], &restore).await;
    // A range to the chain's end: the head must be its last entry's hash.
    let to_the_end = Range {
        to: range.to + chrono::Duration::days(1),
        ..range.clone()
    };
    let whole = archive::write(&mut client, &to_the_end, dir, &Sealing::Plain)
        .await
        .unwrap();
    assert_eq!(whole.runs.last().unwrap().last_id, end);
    past_the_triggers_of(
        store,
        &["pgtrail.chain_heads"],
        "UPDATE pgtrail.chain_heads SET hash = sha256(hash) WHERE source = 1",
    )
    .await;
    let e = refused(&mut client, &to_the_end, dir).await;
    assert!(
        matches!(e, ArchiveError::StoreBroken { id, .. } if id == end)
            && e.to_string().contains("chain's head"),
        "the chain's last entry is named: {e}"
    );
}

/// The error of writing an archive of `range` that must be refused.
async fn refused(client: &mut Client, range: &Range, dir: &Path) -> ArchiveError {
    match archive::write(client, range, dir, &Sealing::Plain).await {
        Ok(w) => panic!("the archive of {range:?} was written: {}", w.path.display()),
        Err(e) => e,
    }
}

/// The decompressed lines of an archive.
fn lines_of(path: &Path) -> Vec<String> {
    let text = zstd::decode_all(std::fs::File::open(path).unwrap()).unwrap();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A copy of `lines` (edited) as an archive file in `dir`.
fn copy_with(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let text = lines.join("\n") + "\n";
    std::fs::write(&path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
    path
}

async fn assert_broken(file: &Path, line: Option<u64>, needle: &str) {
    let (code, report, out) = verify_archive(file, &[]).await;
    assert_eq!(code, 1, "{}", out.combined());
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["line"].as_u64(), line, "{report}");
    assert!(
        report["problem"].as_str().unwrap().contains(needle),
        "{report}"
    );
    let args = [
        "verify".into(),
        "--archive".into(),
        file.as_os_str().to_owned(),
    ];
    let text = run_pgtrail(&args, &[], Duration::from_secs(60)).await;
    assert_eq!(text.status.code(), Some(1));
    assert!(
        text.stdout.contains("BROKEN: ") && text.stdout.contains("NOT INTACT"),
        "{}",
        text.stdout
    );
    if let Some(line) = line {
        assert!(
            text.stdout.contains(&format!("line {line} ")),
            "{}",
            text.stdout
        );
    }
}

async fn tampered_copies_are_named(original: &Path, dir: &Path) {
    let lines = lines_of(original);
    // One value edited in entry line 10 (its "after" holds `in N`).
    let mut edited = lines.clone();
    let id = serde_json::from_str::<Value>(&edited[9]).unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(edited[9].contains("\"in "), "{}", edited[9]);
    edited[9] = edited[9].replacen("\"in ", "\"IN ", 1);
    let path = copy_with(dir, "edited.jsonl.zst", &edited);
    assert_broken(&path, Some(10), &format!("line 10 (entry {id})")).await;
    // One line dropped: the next one no longer follows.
    let mut dropped = lines.clone();
    dropped.remove(19);
    let path = copy_with(dir, "dropped.jsonl.zst", &dropped);
    assert_broken(&path, Some(20), "does not follow").await;
    // Cut short.
    let bytes = std::fs::read(original).unwrap();
    let path = dir.join("cut.jsonl.zst");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_broken(&path, None, "truncated").await;
    // Not found: could not be checked at all (exit 2).
    let (code, _, out) = verify_archive(&dir.join("missing.jsonl.zst"), &[]).await;
    assert_eq!(code, 2, "{}", out.combined());
    assert!(
        out.combined().contains("cannot open the archive"),
        "{}",
        out.combined()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_archive_checks_out_with_its_identity_and_a_changed_store_is_found() {
    let (env, store, range) = captured_range().await;
    let dir = env.trail.dir().join("archives");
    std::fs::create_dir(&dir).unwrap();
    let key = age::x25519::Identity::generate();
    let key_file = env.trail.dir().join("archive-key.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, format!("{}\n", key.to_string().expose_secret())).unwrap();
    }
    let recipients = Recipients::parse(&[key.to_public().to_string()]).unwrap();
    let written = write(&env, &range, &dir, &Sealing::Age(recipients)).await;
    assert!(written.encrypted);
    assert!(
        written.path.to_str().unwrap().ends_with(".jsonl.zst.age"),
        "{:?}",
        written.path
    );
    assert!(std::fs::read(&written.path)
        .unwrap()
        .starts_with(b"age-encryption.org/v1"));

    // Without the identity only the ciphertext is read back; with it, every entry.
    let back = archive::read_back(&store, &written, None).await.unwrap();
    assert_eq!(back.label(), "ciphertext");
    let back = archive::read_back(&store, &written, Some(&key_file))
        .await
        .unwrap();
    assert_eq!(back.label(), "plaintext");

    let (code, _, out) = verify_archive(&written.path, &[]).await;
    assert_eq!(code, 2, "{}", out.combined());
    assert!(
        out.combined().contains("encrypted with age") && out.combined().contains("--identity"),
        "{}",
        out.combined()
    );
    let (code, report, out) =
        verify_archive(&written.path, &["--identity", key_file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{}", out.combined());
    assert_eq!(
        (report["encrypted"].clone(), report["entries"].clone()),
        (Value::Bool(true), Value::from(IN_RANGE))
    );
    assert_eq!(report["sha256"], hex(&written.sha256));

    // The store's range changed after the archive was written (an entry's hash, past the
    // trigger): the comparison says so, and a new archive of the broken range is refused.
    let victim = stored(&store, &range).await[100].0;
    past_the_triggers_of(
        &store,
        &["pgtrail.entry_rows"],
        &format!("UPDATE pgtrail.entry_rows SET hash = sha256(hash) WHERE id = {victim}"),
    )
    .await;
    let e = archive::compare_with_store(&store, &written)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ArchiveError::Mismatch { .. }) && e.to_string().contains("differ"),
        "{e}"
    );
    let mut client = env.store().await;
    let e = archive::write(&mut client, &range, &dir, &Sealing::Plain)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ArchiveError::StoreBroken { id, .. } if id == victim),
        "the entry whose hash was changed is named: {e}"
    );
    assert!(e.to_string().contains("pgtrail verify"), "{e}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "a refused archive leaves no file: {files:?}"
    );
}
