//! Commit order across interleaved concurrent transactions: three connections begin, write and
//! commit in a fixed pseudo-random interleaving (after the classic case of a transaction that
//! begins first and commits last), and the store must hold each committed transaction as one
//! contiguous group of entries, in commit order, statements in order, commit LSNs increasing.

use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::*;

/// A transaction's xid and its row changes, (action, id) in statement order.
type Ops = (i64, Vec<(&'static str, i64)>);

/// The id of the transaction `c` is in.
async fn txid(c: &Client) -> i64 {
    query_value(c, "SELECT txid_current()", &[]).await
}

/// The classic case: c0 begins first but commits last. The two transactions, in commit order.
async fn begins_first_commits_last(conns: &[Client]) -> Vec<Ops> {
    for c in &conns[0..2] {
        c.batch_execute("BEGIN").await.unwrap();
    }
    conns[0]
        .batch_execute("INSERT INTO il VALUES (1, 0, 0)")
        .await
        .unwrap();
    conns[1]
        .batch_execute("INSERT INTO il VALUES (2, 1, 0)")
        .await
        .unwrap();
    conns[0]
        .batch_execute("INSERT INTO il VALUES (3, 0, 1)")
        .await
        .unwrap();
    let x0 = txid(&conns[0]).await;
    let x1 = txid(&conns[1]).await;
    conns[1].batch_execute("COMMIT").await.unwrap();
    conns[0]
        .batch_execute("INSERT INTO il VALUES (4, 0, 2); COMMIT")
        .await
        .unwrap();
    vec![
        (x1, vec![("INSERT", 2)]),
        (x0, vec![("INSERT", 1), ("INSERT", 3), ("INSERT", 4)]),
    ]
}

/// A deterministic pseudo-random interleaving of three connections: BEGIN, INSERT, UPDATE of a
/// row the transaction wrote, COMMIT. Each transaction with changes, in commit order.
async fn random_interleaving(conns: &[Client]) -> Vec<Ops> {
    let mut open: [Option<Ops>; 3] = [None, None, None];
    let mut committed: Vec<Ops> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next_id = 100i64;
    for step in 0..400 {
        let c = next(3) as usize;
        match &mut open[c] {
            None => {
                conns[c].batch_execute("BEGIN").await.unwrap();
                let xid = txid(&conns[c]).await;
                open[c] = Some((xid, vec![]));
            }
            Some((_, ops)) => match next(5) {
                0 => {
                    conns[c].batch_execute("COMMIT").await.unwrap();
                    let (xid, ops) = open[c].take().unwrap();
                    if !ops.is_empty() {
                        committed.push((xid, ops));
                    }
                }
                1 if !ops.is_empty() => {
                    let (_, id) = ops[next(ops.len() as u64) as usize];
                    conns[c]
                        .batch_execute(&format!("UPDATE il SET step = {step} WHERE id = {id}"))
                        .await
                        .unwrap();
                    ops.push(("UPDATE", id));
                }
                _ => {
                    next_id += 1;
                    conns[c]
                        .batch_execute(&format!("INSERT INTO il VALUES ({next_id}, {c}, {step})"))
                        .await
                        .unwrap();
                    ops.push(("INSERT", next_id));
                }
            },
        }
    }
    for c in 0..3 {
        if let Some((xid, ops)) = open[c].take() {
            conns[c].batch_execute("COMMIT").await.unwrap();
            if !ops.is_empty() {
                committed.push((xid, ops));
            }
        }
    }
    committed
}

/// Grouped by consecutive xid, the entries are the transactions `want` in commit order; commit
/// LSNs are equal within a transaction and strictly increasing between transactions.
fn assert_commit_order(e: &[Entry], want: &[Ops]) {
    // Group consecutive entries by xid: the groups must be the transactions in commit order.
    let mut groups: Vec<(i64, Vec<(&str, i64)>)> = Vec::new();
    for x in e {
        let op = (x.action.as_str(), x.key_i64("id"));
        match groups.last_mut() {
            Some((xid, ops)) if *xid == x.xid => ops.push(op),
            _ => groups.push((x.xid, vec![op])),
        }
    }
    assert_eq!(
        groups.len(),
        want.len(),
        "one contiguous group of entries per committed transaction"
    );
    assert_eq!(
        groups, want,
        "entries follow commit order, and statement order within a transaction"
    );

    // Commit LSNs: equal within a transaction, strictly increasing between transactions.
    let mut prev: Option<(i64, u64)> = None;
    for x in e {
        let lsn = parse_lsn(&x.lsn);
        if let Some((pxid, plsn)) = prev {
            if pxid == x.xid {
                assert_eq!(
                    lsn, plsn,
                    "entry {} of the same transaction has another lsn",
                    x.id
                );
            } else {
                assert!(
                    lsn > plsn,
                    "entry {}: commit lsn {} not after {}",
                    x.id,
                    x.lsn,
                    format_lsn(plsn)
                );
            }
        }
        prev = Some((x.xid, lsn));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_transactions_are_stored_in_commit_order() {
    let (env, src, mut daemon) = TestEnv::capturing(
        "CREATE TABLE il (id int PRIMARY KEY, conn int NOT NULL, step int NOT NULL)",
    )
    .await;

    let conns = [env.source().await, env.source().await, env.source().await];
    let mut committed = begins_first_commits_last(&conns).await;
    committed.extend(random_interleaving(&conns).await);
    env.sync().await;

    let store = env.store().await;
    let e = table_entries(&store, "public", "il").await;
    assert_commit_order(&e, &committed);
    let inserts = committed
        .iter()
        .flat_map(|(_, o)| o)
        .filter(|(a, _)| *a == "INSERT")
        .count() as i64;
    let updates = committed
        .iter()
        .flat_map(|(_, o)| o)
        .filter(|(a, _)| *a == "UPDATE")
        .count() as i64;
    assert_counts(&store, "public", "il", Counts::new(inserts, updates, 0, 0)).await;
    assert_store_matches_source(&src, &store, "public", "il").await;
    tokio::time::timeout(Duration::from_secs(60), daemon.terminate())
        .await
        .expect("terminate");
}
