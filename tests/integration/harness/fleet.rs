//! A fleet for the tests: two source clusters, each with a database `app` holding the same bank
//! tables and a slot of the same name, set up as two sources (`[source] name` shop-eu and
//! shop-us) of one store on shop-eu's cluster.

use serde_json::Value;
use tokio_postgres::Client;

use super::*;

/// One source of the fleet: its cluster, its config and a client on its database `app`.
pub struct Member {
    pub name: &'static str,
    pub cluster: Cluster,
    pub trail: Pgtrail,
}

impl Member {
    /// A new cluster with the bank in `app`, configured as source `name` into `store_url`
    /// (`None`: a store on this cluster).
    pub async fn start(name: &'static str, store_url: Option<String>) -> Member {
        let cluster = tokio::task::block_in_place(Cluster::start);
        cluster.create_db("app").await;
        let src = cluster.client("app").await;
        create_marker_table(&src).await;
        bank::create(&src).await;
        let mut config = Config::for_cluster(&cluster);
        config.source_toml = format!("name = {}\n", toml_str(name));
        if let Some(url) = store_url {
            config.store_url = url;
        }
        Member {
            name,
            trail: Pgtrail::new(config),
            cluster,
        }
    }

    pub async fn source(&self) -> Client {
        self.cluster.client("app").await
    }

    pub async fn sync(&self) {
        sync_via(
            &self.source().await,
            &self.trail.config.store_url,
            SYNC_TIMEOUT,
        )
        .await;
    }

    pub async fn kill_and_restart(&self, daemon: &mut Daemon) {
        daemon.kill_9().await;
        wait_slot_inactive(&self.cluster.client("postgres").await, SLOT).await;
        *daemon = self.trail.spawn();
    }

    /// `verify --json --source NAME`: must pass; its report.
    pub async fn verify(&self) -> Value {
        let out = self
            .trail
            .cli(&["verify", "--json", "--source", self.name])
            .await;
        out.assert_success();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// Two members (shop-us far ahead in WAL) whose store is on shop-eu's cluster, both set up.
pub async fn fleet() -> (Member, Member, Client) {
    let eu = Member::start("shop-eu", None).await;
    let us = Member::start("shop-us", Some(eu.trail.config.store_url.clone())).await;
    // Far apart in WAL: a daemon resuming from the other's checkpoint would skip or repeat.
    let ballast = "INSERT INTO ballast VALUES (1); SELECT pg_switch_wal();".repeat(10);
    us.source()
        .await
        .batch_execute(&format!("CREATE TABLE ballast (x int); {ballast}"))
        .await
        .unwrap();
    eu.trail.setup().await;
    us.trail.setup().await;
    let store = connect(&eu.trail.config.store_url).await.unwrap();
    let sources: Vec<(i16, String)> = query_pairs(
        &store,
        "SELECT id, name FROM pgtrail.sources ORDER BY id",
        &[],
    )
    .await;
    let names: Vec<(i16, String)> = [(0, "pgtrail"), (1, "shop-eu"), (2, "shop-us")]
        .map(|(i, n)| (i, n.to_owned()))
        .to_vec();
    assert_eq!(sources, names);
    (eu, us, store)
}
