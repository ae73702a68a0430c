//! Synthetic entries written straight into the store: the web tests pin every filter, sort and
//! context field (actor, role, IP… which capture does not fill) with exact expectations, and the
//! access tests need rows of a few tables without running capture.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::query_column;

/// An entry written straight into the store.
#[derive(Debug, Clone)]
pub struct Synth {
    pub at: DateTime<Utc>,
    pub xid: i64,
    pub schema: String,
    pub table: String,
    pub action: &'static str,
    pub pk: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub changed: Option<String>,
    pub actor: Option<String>,
    pub role: Option<String>,
    pub ip: Option<String>,
    pub app: Option<String>,
    pub source: Option<String>,
    pub remarks: Option<String>,
}

impl Synth {
    pub fn new(table: &str, action: &'static str) -> Synth {
        let (schema, name) = table.split_once('.').unwrap();
        Synth {
            at: Utc::now(),
            xid: 1000,
            schema: schema.into(),
            table: name.into(),
            action,
            pk: None,
            before: None,
            after: None,
            changed: None,
            actor: None,
            role: None,
            ip: None,
            app: None,
            source: None,
            remarks: None,
        }
    }
    pub fn pk(mut self, pk: &str) -> Self {
        self.pk = Some(pk.into());
        self
    }
    pub fn before(mut self, v: &str) -> Self {
        self.before = Some(v.into());
        self
    }
    pub fn after(mut self, v: &str) -> Self {
        self.after = Some(v.into());
        self
    }
    pub fn changed(mut self, v: &str) -> Self {
        self.changed = Some(v.into());
        self
    }
    pub fn at(mut self, t: DateTime<Utc>) -> Self {
        self.at = t;
        self
    }
    pub fn xid(mut self, x: i64) -> Self {
        self.xid = x;
        self
    }
    pub fn who(mut self, actor: Option<&str>, role: Option<&str>) -> Self {
        self.actor = actor.map(Into::into);
        self.role = role.map(Into::into);
        self
    }
    pub fn from(mut self, ip: Option<&str>, app: Option<&str>, source: Option<&str>) -> Self {
        self.ip = ip.map(Into::into);
        self.app = app.map(Into::into);
        self.source = source.map(Into::into);
        self
    }
    pub fn remarks(mut self, r: &str) -> Self {
        self.remarks = Some(r.into());
        self
    }
    pub fn context(&self) -> String {
        let j = |v: &Option<String>| serde_json::to_string(v).unwrap();
        format!(
            "{{\"db_user\":{},\"client_addr\":{},\"application_name\":{},\"actor\":{},\"source\":{},\"remarks\":{}}}",
            j(&self.role),
            j(&self.ip),
            j(&self.app),
            j(&self.actor),
            j(&self.source),
            j(&self.remarks)
        )
    }
}

/// Counts `n` entries written straight into the store (source 1's) in the source's chain head,
/// as the writer counts what it stores: the web view follows the heads to learn of new entries
/// (its book of tables and keys), as it follows the events chain's for new gaps.
pub async fn count_in_chain(store: &Client, n: i64) {
    store
        .execute(
            "UPDATE pgtrail.chain_heads SET entries = entries + $1 WHERE source = 1",
            &[&n],
        )
        .await
        .expect("count the entries in source 1's chain head");
}

/// Writes `entries` in order (ids ascending), counted in source 1's chain head, and returns their
/// ids.
pub async fn store_entries(store: &Client, entries: &[Synth]) -> Vec<i64> {
    let ids = store_uncounted(store, entries).await;
    count_in_chain(store, ids.len() as i64).await;
    ids
}

/// [`store_entries`] without moving the chain head: for an entry written inside a transaction
/// left open while others are stored (the head's row lock would hold them all back); count it
/// with [`count_in_chain`] once committed.
pub async fn store_uncounted(store: &Client, entries: &[Synth]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let table = pgtrail::table::TableName::new(e.schema.clone(), e.table.clone());
        let row_key =
            e.pk.as_deref()
                .map(|pk| pgtrail::entry::row_key(&table, pk));
        let lsn = format!("0/{:X}", 0x1000_0000u64 + i as u64 * 0x100);
        // The plain context columns, as pgtrail's writer fills them.
        let cols = pgtrail::store::context::ContextColumns::of(&e.context());
        // The partition the entry goes to, as the writer would make it.
        store
            .execute("SELECT pgtrail.ensure_partition($1)", &[&e.at])
            .await
            .expect("make the entry's partition");
        let id: i64 = store
            .query_one(
                "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, \
                 before, after, changed_columns, context, row_key, actor, client_addr, source) VALUES ($1, $2, $3::text::pg_lsn, $4, $5, $6, \
                 $7::text::json, $8::text::json, $9::text::json, $10::text::json, $11::text::json, $12, $13, $14, 1) RETURNING id",
                &[&e.at, &e.xid, &lsn, &e.schema, &e.table, &e.action, &e.pk, &e.before, &e.after, &e.changed, &e.context(), &row_key, &cols.actor, &cols.client_addr],
            )
            .await
            .unwrap_or_else(|err| panic!("insert synthetic entry {e:?}: {err}"))
            .get(0);
        ids.push(id);
    }
    ids
}

/// The ids at the positions `which`.
pub fn pick(ids: &[i64], which: &[usize]) -> Vec<i64> {
    which.iter().map(|&i| ids[i]).collect()
}

/// Newest first.
pub fn sorted_desc(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// Rows of three tables written straight into the store (what the web view
/// reads is the subject here, not capture); their ids, newest first.
pub async fn stored_rows(store: &Client) -> Vec<i64> {
    store
        .batch_execute(
            "INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key, after, context, source) VALUES
               (now(), 10, '0/10', 'public', 'orders', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}', 1),
               (now(), 11, '0/11', 'public', 'customers', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}', 1),
               (now(), 12, '0/12', 'sales', 'leads', 'INSERT', '{\"id\":1}', '{\"id\":1}', '{}', 1)",
        )
        .await
        .unwrap();
    query_column(
        store,
        "SELECT id FROM pgtrail.entries WHERE action <> 'EVENT' ORDER BY id DESC",
        &[],
    )
    .await
}
