//! pgtrail's own events — sign-ins, exports, user and token changes,
//! configuration reloads, audit gaps — written into the store as entries with action
//! `EVENT`, so the audit log audits its own use and shows it in the same view.
//!
//! An event entry has no source transaction (`xid` and `lsn` are null); its
//! table is `pgtrail.<category>` (`pgtrail.session`, `pgtrail.export`, …); its
//! `context` has `source` = `"pgtrail"`, the pgtrail user as `actor` and the
//! client's address; `details` holds `{"event": "<name>", …particulars}`.
//! Where an event changes a record (a user's role), `before` and `after` hold
//! that record so View Difference shows the change.

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::chain::Content;
use super::StoreError;

/// What an event is about: its entry's table is `pgtrail.<category>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Sign-ins, failed sign-ins, sign-outs, lockouts.
    Session,
    /// Users added or changed.
    User,
    /// API tokens created or revoked.
    Token,
    /// Exports of entries.
    Export,
    /// Configuration reloads.
    Config,
    /// Source transactions kept raw in `pgtrail.quarantine` instead of as entries.
    Quarantine,
    /// Audit gaps: the replication slot was lost or replaced, so changes
    /// went uncaptured (`pipeline::gap`).
    Gap,
    /// Retention's drops of old partitions (recorded by `pgtrail.drop_partition`)
    /// and archives that failed, so a partition was kept.
    Retention,
}

impl Category {
    /// The entry's table name. `pgtrail.record_event` (sql/store/0007_record_event.sql)
    /// accepts exactly these: a new category needs a migration that widens its list.
    pub fn table_name(self) -> &'static str {
        match self {
            Category::Session => "session",
            Category::User => "user",
            Category::Token => "token",
            Category::Export => "export",
            Category::Config => "config",
            Category::Quarantine => "quarantine",
            Category::Gap => "gap",
            Category::Retention => "retention",
        }
    }
}

/// One of pgtrail's own events, ready to record.
#[derive(Debug, Clone)]
pub struct OwnEvent {
    pub category: Category,
    /// `sign_in`, `export`, `role_changed`, …: stored as `details.event`.
    pub name: &'static str,
    /// The pgtrail user who did it (or tried to), if known.
    pub actor: Option<String>,
    /// The client's IP address, if the event came over the network.
    pub client_addr: Option<String>,
    /// `pgtrail web`, `pgtrail cli`, `pgtrail run`: where in pgtrail it happened.
    pub application: &'static str,
    /// One human sentence, shown as the entry's remarks: "signed in", "exported 120 entries as CSV".
    pub summary: String,
    /// The record the event is about (`{"name":"alice"}` for a user), so its history can be followed.
    pub primary_key: Option<Value>,
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
    /// Particulars beyond the event's name (filters, format, counts).
    pub details: Map<String, Value>,
}

impl OwnEvent {
    pub fn new(
        category: Category,
        name: &'static str,
        application: &'static str,
        summary: impl Into<String>,
    ) -> Self {
        OwnEvent {
            category,
            name,
            actor: None,
            client_addr: None,
            application,
            summary: summary.into(),
            primary_key: None,
            before: None,
            after: None,
            details: Map::new(),
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn client_addr(mut self, addr: Option<String>) -> Self {
        self.client_addr = addr;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The entry's `context`, with the same keys as a row change's.
    fn context(&self) -> Value {
        serde_json::json!({
            "db_user": null,
            "client_addr": self.client_addr,
            "application_name": self.application,
            "actor": self.actor,
            "source": "pgtrail",
            "remarks": self.summary,
            "current_user": null,
            "client_port": null,
            "backend_pid": null,
        })
    }

    /// Columns whose values differ between `before` and `after`, when both exist.
    fn changed_columns(&self) -> Option<Value> {
        let (before, after) = (self.before.as_ref()?, self.after.as_ref()?);
        let mut keys: Vec<&String> = after
            .keys()
            .chain(before.keys().filter(|k| !after.contains_key(*k)))
            .collect();
        keys.retain(|k| before.get(*k) != after.get(*k));
        Some(Value::Array(
            keys.into_iter().map(|k| Value::String(k.clone())).collect(),
        ))
    }
}

/// Records an event; returns its entry id. Runs on any client or transaction,
/// so an event can commit together with the change it describes.
///
/// The entry goes in through `pgtrail.record_event` (`sql/store/0007_record_event.sql`),
/// which links it into the events chain: the head's row lock orders
/// concurrent events and holds until the surrounding transaction ends, so
/// ids follow the chain's order.
pub async fn record<C: GenericClient>(client: &C, event: &OwnEvent) -> Result<i64, StoreError> {
    let mut details = Map::new();
    details.insert("event".into(), Value::String(event.name.into()));
    details.extend(event.details.clone());
    let text = |v: Option<Value>| v.map(|v| v.to_string());
    let context = event.context().to_string();
    // The same plain columns the writer fills for a row change.
    let cols = super::context::ContextColumns::of(&context);
    // The time is taken here, to the microsecond the store keeps, because the
    // hash covers it.
    let now = chrono::Utc::now();
    let committed_at = now.timestamp_micros();
    let at = chrono::DateTime::from_timestamp_micros(committed_at).unwrap_or(now);
    let table = event.category.table_name();
    let primary_key = text(event.primary_key.clone());
    let before = text(event.before.clone().map(Value::Object));
    let after = text(event.after.clone().map(Value::Object));
    let changed = text(event.changed_columns());
    let details = Value::Object(details).to_string();
    let digest = Content {
        committed_at_micros: committed_at,
        xid: None,
        lsn: None,
        schema: "pgtrail",
        table,
        action: "EVENT",
        primary_key: primary_key.as_deref(),
        before: before.as_deref(),
        after: after.as_deref(),
        changed_columns: changed.as_deref(),
        context: &context,
        details: Some(&details),
    }
    .digest();
    let row = client
        .query_one(
            "SELECT pgtrail.record_event($11, $1, $2::text::json, $3::text::json, $4::text::json, \
                 $5::text::json, $6::text::json, $7::text::json, $8, $9, $10)",
            &[
                &table,
                &primary_key,
                &before,
                &after,
                &changed,
                &context,
                &details,
                &cols.actor,
                &cols.client_addr,
                &&digest[..],
                &at,
            ],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_columns_lists_differences_only() {
        let mut e = OwnEvent::new(
            Category::User,
            "role_changed",
            "pgtrail cli",
            "role of alice changed",
        );
        e.before = json!({"name": "alice", "role": "viewer", "disabled": false})
            .as_object()
            .cloned();
        e.after = json!({"name": "alice", "role": "admin", "disabled": false})
            .as_object()
            .cloned();
        assert_eq!(e.changed_columns(), Some(json!(["role"])));
        e.after = None;
        assert_eq!(e.changed_columns(), None);
    }

    #[test]
    fn context_marks_pgtrail_as_source() {
        let e = OwnEvent::new(Category::Session, "sign_in", "pgtrail web", "signed in")
            .actor("alice")
            .client_addr(Some("10.0.0.7".into()));
        let c = e.context();
        assert_eq!(c["source"], "pgtrail");
        assert_eq!(c["actor"], "alice");
        assert_eq!(c["client_addr"], "10.0.0.7");
        assert_eq!(c.as_object().map(|o| o.len()), Some(9));
    }
}
