//! A pgbench-like workload: a small bank in the source database, `bank_accounts`, `bank_tellers`,
//! `bank_branches` with primary keys and `bank_history` without one (REPLICA IDENTITY FULL).

use tokio_postgres::Client;

use super::{
    assert_source_counts, assert_store_matches_source_named, connect, Counts, Daemon, TestEnv,
};

pub const ACCOUNTS: i64 = 1000;
pub const TELLERS: i64 = 10;
pub const BRANCHES: i64 = 1;
pub const TABLES: [&str; 4] = [
    "bank_accounts",
    "bank_tellers",
    "bank_branches",
    "bank_history",
];

/// Create the (empty) tables. Run before `pgtrail setup` or after; they start empty either way.
pub async fn create(source: &Client) {
    source
        .batch_execute(
            "CREATE TABLE bank_branches (bid int PRIMARY KEY, bbalance bigint NOT NULL, filler text);
             CREATE TABLE bank_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance bigint NOT NULL, filler text);
             CREATE TABLE bank_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance bigint NOT NULL, filler text);
             CREATE TABLE bank_history (tid int, bid int, aid int, delta int, mtime timestamptz, filler text);
             ALTER TABLE bank_history REPLICA IDENTITY FULL;",
        )
        .await
        .expect("create bank tables");
}

/// The bank in `env`'s source, set up and captured by a new daemon, then filled: the source
/// client and the daemon.
pub async fn captured(env: &TestEnv) -> (Client, Daemon) {
    let src = env.source().await;
    create(&src).await;
    env.setup().await;
    let daemon = env.spawn();
    load(&src).await;
    (src, daemon)
}

/// Fill the tables (captured: these are INSERTs the store must hold).
pub async fn load(source: &Client) {
    source
        .batch_execute(&format!(
            "INSERT INTO bank_branches SELECT b, 0, 'branch' FROM generate_series(1, {BRANCHES}) b;
             INSERT INTO bank_tellers SELECT t, 1, 0, 'teller' FROM generate_series(1, {TELLERS}) t;
             INSERT INTO bank_accounts SELECT a, 1, 0, 'account ' || a FROM generate_series(1, {ACCOUNTS}) a;"
        ))
        .await
        .expect("load bank tables");
}

/// Run `txns` tpcb-like transactions on a new connection to `url`. Each commits three UPDATEs
/// and one INSERT. Returns the number committed (always `txns`; any error panics).
pub async fn run(url: String, txns: u64, seed: u64) -> u64 {
    run_while(url, seed, move |done| done < txns).await
}

/// Run tpcb-like transactions (as [`run`]) until `stop` is set, at least `min` of them.
/// Returns how many committed. For tests that must still be writing at some later point,
/// however fast the daemon is.
pub async fn run_until(
    url: String,
    seed: u64,
    min: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    run_while(url, seed, move |done| {
        done < min || !stop.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await
}

async fn run_while(url: String, seed: u64, mut more: impl FnMut(u64) -> bool) -> u64 {
    let client = connect(&url).await.expect("bank client");
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut next = move |n: i64| -> i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as i64
    };
    let mut done = 0u64;
    while more(done) {
        let aid = next(ACCOUNTS) + 1;
        let tid = next(TELLERS) + 1;
        let bid = next(BRANCHES) + 1;
        let delta = next(10000) - 5000;
        let delta = if delta == 0 { 1 } else { delta };
        client
            .batch_execute(&format!(
                "BEGIN;
                 UPDATE bank_accounts SET abalance = abalance + {delta} WHERE aid = {aid};
                 UPDATE bank_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};
                 UPDATE bank_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};
                 INSERT INTO bank_history VALUES ({tid}, {bid}, {aid}, {delta}, now(), 'h');
                 COMMIT;"
            ))
            .await
            .expect("bank transaction");
        done += 1;
    }
    done
}

/// Exact expected counts after `load` and `txns` transactions, then compare every table.
pub async fn assert_store_matches(source: &Client, store: &Client, txns: i64) {
    assert_source_matches(source, store, None, txns).await;
}

/// [`assert_store_matches`] with the entries of the source named `name` only (`None`: every
/// source's).
pub async fn assert_source_matches(source: &Client, store: &Client, name: Option<&str>, txns: i64) {
    let expected = [
        Counts::new(ACCOUNTS, txns, 0, 0),
        Counts::new(TELLERS, txns, 0, 0),
        Counts::new(BRANCHES, txns, 0, 0),
        Counts::new(txns, 0, 0, 0),
    ];
    for (table, counts) in TABLES.into_iter().zip(expected) {
        assert_source_counts(store, name, "public", table, counts).await;
    }
    for t in TABLES {
        assert_store_matches_source_named(source, store, name, "public", t).await;
    }
}
