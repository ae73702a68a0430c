//! One test's world: a cluster holding the source database `app` and the store `pgtrail`, and a
//! config for it.

use tokio_postgres::Client;

use super::{
    connect, create_marker_table, sync_via, wait_slot_inactive, Cluster, ClusterOptions, Config,
    Daemon, Pgtrail, SLOT, SYNC_TIMEOUT,
};

/// The usual setting: one cluster holding the source database `app` and the store `pgtrail`,
/// and a config for it.
pub struct TestEnv {
    pub trail: Pgtrail,
    pub cluster: Cluster,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with(ClusterOptions::default(), |_| {}).await
    }

    /// A cluster with `opts`, the database `app`, and a config adjusted by `adjust`.
    pub async fn start_with(opts: ClusterOptions, adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let cluster = tokio::task::block_in_place(|| Cluster::start_with(opts));
        cluster.create_db("app").await;
        create_marker_table(&cluster.client("app").await).await;
        let mut config = Config::for_cluster(&cluster);
        adjust(&mut config);
        TestEnv {
            trail: Pgtrail::new(config),
            cluster,
        }
    }

    /// A superuser client on the source database `app`.
    pub async fn source(&self) -> Client {
        self.cluster.client("app").await
    }

    /// A superuser client on `app` that has run `sql` (the test's tables, usually).
    pub async fn source_with(&self, sql: &str) -> Client {
        let source = self.source().await;
        source
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        source
    }

    /// A new world whose store is set up (no daemon), and a client on the store.
    pub async fn with_store() -> (TestEnv, Client) {
        let env = TestEnv::start().await;
        env.setup().await;
        let store = env.store().await;
        // Entries written straight into the store (dated up to 40 days back)
        // need a partition, which capture would make for its own.
        store
            .batch_execute(
                "SELECT pgtrail.ensure_partition(now() - make_interval(days => g)) FROM generate_series(0, 40) g",
            )
            .await
            .expect("make the store's partitions of the last 40 days");
        (env, store)
    }

    /// The usual start of a capture test: a new world whose source has run `sql` (its tables),
    /// set up, with a daemon capturing it. The world, a client on the source, the daemon.
    pub async fn capturing(sql: &str) -> (TestEnv, Client, Daemon) {
        let env = TestEnv::start().await;
        let src = env.source_with(sql).await;
        env.setup().await;
        let daemon = env.spawn();
        (env, src, daemon)
    }

    /// A client on the store database.
    pub async fn store(&self) -> Client {
        connect(&self.trail.config.store_url)
            .await
            .expect("connect to the store")
    }

    pub async fn setup(&self) {
        self.trail.setup().await;
    }

    pub fn spawn(&self) -> Daemon {
        self.trail.spawn()
    }

    /// Write a marker to the source and wait until the store has it: then everything committed
    /// before it is stored too (entries are stored in commit order).
    pub async fn sync(&self) {
        let source = self.source().await;
        sync_via(&source, &self.trail.config.store_url, SYNC_TIMEOUT).await;
    }

    /// Wait until the slot is inactive (after a kill the server needs a moment to notice).
    pub async fn wait_slot_inactive(&self) {
        let c = self.cluster.client("postgres").await;
        wait_slot_inactive(&c, SLOT).await;
    }
}
