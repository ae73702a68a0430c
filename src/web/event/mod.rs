//! pgtrail's own events (`EVENT` entries, see [`crate::store::events`]) as
//! people read them: one sentence per kind of event for the log's Changes
//! column ([`headline`]: "demo signed in", "alice exported 1,204 entries as
//! CSV"), and an event's particulars as labelled values for its page
//! ([`particulars`]).
//!
//! Both read only what the entry stores (`details`, `context`, `before` and
//! `after`), so an event reads the same whichever pgtrail recorded it; a kind
//! this version does not know falls back to the summary recorded with it.
//! `moved` words a source's move to another server or database, the longest of them.

mod moved;

use serde_json::{Map, Value};

use crate::auth::Tables;
use crate::export::Format;
use crate::store::stored::StoredEntry;

/// A count for people: `1204` as `1,204`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An entry's JSON object column; empty when absent or not an object.
fn object(text: Option<&str>) -> Map<String, Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// A JSON value as plain text: a string's content, a number, `yes`/`no`,
/// a list joined by commas; `None` for null.
fn plain(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.as_i64().map_or_else(|| n.to_string(), thousands)),
        Value::Array(items) if items.is_empty() => Some("none".into()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| plain(i).unwrap_or_else(|| "null".into()))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::Object(_) => Some(v.to_string()),
    }
}

/// What one event entry says, read once.
pub struct Said {
    /// `sign_in`, `export`, … (`details.event`); empty when missing.
    pub event: String,
    details: Map<String, Value>,
    context: Map<String, Value>,
    before: Map<String, Value>,
    after: Map<String, Value>,
}

impl Said {
    pub fn of(e: &StoredEntry) -> Said {
        let details = object(e.details());
        Said {
            event: details
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            details,
            context: object(e.context()),
            before: object(e.before()),
            after: object(e.after()),
        }
    }

    /// A detail as text, `?` when it is missing.
    fn d(&self, key: &str) -> String {
        self.details
            .get(key)
            .and_then(plain)
            .unwrap_or_else(|| "?".into())
    }

    fn flag(&self, key: &str) -> bool {
        self.details.get(key).and_then(Value::as_bool) == Some(true)
    }

    /// `1 entry`, `1,204 entries`: a counted detail with its noun.
    fn many(&self, key: &str, one: &str, more: &str) -> String {
        match self.details.get(key).and_then(Value::as_i64) {
            Some(1) => format!("1 {one}"),
            Some(n) => format!("{} {more}", thousands(n)),
            None => format!("? {more}"),
        }
    }

    /// A member of the context (the actor, the client's address) as text.
    pub fn context(&self, key: &str) -> Option<String> {
        self.context.get(key).and_then(plain)
    }

    /// The pgtrail user who did it (`os:NAME` for the CLI), or `someone`.
    fn actor(&self) -> String {
        self.context("actor").unwrap_or_else(|| "someone".into())
    }

    /// `alice ` before a verb, or nothing when nobody is named.
    fn by(&self) -> String {
        self.context("actor")
            .map(|a| format!("{a} "))
            .unwrap_or_default()
    }

    fn ip(&self) -> String {
        self.context("client_addr")
            .unwrap_or_else(|| "an unknown address".into())
    }

    /// A field of the user's or token's record after the change (before, for what no longer exists).
    fn record(&self, key: &str) -> String {
        self.after
            .get(key)
            .or_else(|| self.before.get(key))
            .and_then(plain)
            .unwrap_or_else(|| "?".into())
    }

    /// A record's tables as people read them: `every table`, or the patterns.
    fn tables(&self) -> String {
        let stored = self.after.get("tables").and_then(|t| {
            serde_json::from_value::<Vec<String>>(t.clone())
                .ok()
                .and_then(|l| Tables::from_stored(l).ok())
        });
        match stored {
            Some(t) if t.is_all() => "every table".into(),
            Some(t) => t.describe(),
            None => "?".into(),
        }
    }

    /// The sentence for this kind of event, if this version knows the kind.
    fn sentence(&self) -> Option<String> {
        let (by, a, name) = (self.by(), self.actor(), self.record("name"));
        let text = match self.event.as_str() {
            "sign_in" if self.flag("while_locked") => {
                format!("{a} signed in while the account was locked to others")
            }
            "sign_in" => format!("{a} signed in"),
            "sign_in_failed" if self.flag("locked") => {
                format!("failed sign-in as {a} (account locked)")
            }
            "sign_in_failed" => format!("failed sign-in as {a}"),
            "locked" => format!(
                "{a} locked out for {} s after {}",
                self.d("seconds"),
                self.many("failures", "failed sign-in", "failed sign-ins")
            ),
            "sign_out" => self.sign_out(),
            "address_throttled" => format!(
                "sign-ins from {} refused for {} s after {}",
                self.ip(),
                self.d("seconds"),
                self.many("failures", "failed sign-in", "failed sign-ins")
            ),
            "sign_in_failures" if self.flag("unlisted") => format!(
                "{} from too many addresses at once to list",
                self.many("failures", "failed sign-in", "failed sign-ins")
            ),
            "sign_in_failures" => format!(
                "{} more as {a} from {}",
                self.many("failures", "failed sign-in", "failed sign-ins"),
                self.ip()
            ),
            "sign_ins_refused" => format!(
                "{} from {} refused unchecked",
                self.many("refused", "sign-in", "sign-ins"),
                self.ip()
            ),
            "user_added" => format!("{by}added user {name} as {}", self.record("role")),
            "role_changed" => format!(
                "{by}changed the role of {name} from {} to {}",
                self.before.get("role").and_then(plain).unwrap_or_default(),
                self.record("role")
            ),
            "tables_changed" => {
                format!("{by}changed the tables of {name} to {}", self.tables())
            }
            "role_and_tables_changed" => format!(
                "{by}made {name} {} of {}",
                self.record("role"),
                self.tables()
            ),
            "user_disabled" => format!("{by}disabled user {name}"),
            "user_enabled" => format!("{by}enabled user {name}"),
            "password_reset" => format!("{by}reset the password of {name}"),
            "token_created" => {
                format!("{by}created API token {name} as {}", self.record("role"))
            }
            "token_revoked" => format!("{by}revoked API token {name}"),
            "export" => self.export(),
            "config_reloaded" => format!("configuration reloaded from {}", self.d("path")),
            "config_reload_failed" => format!("configuration not reloaded: {}", self.d("error")),
            "slot_lost" => format!(
                "audit gap: replication slot {} lost; changes after {} were not captured",
                self.d("slot"),
                self.d("last_stored_lsn")
            ),
            "slot_recreated" => format!(
                "{by}recreated replication slot {} at {}; changes after {} were not captured",
                self.d("slot"),
                self.d("to_lsn"),
                self.d("from_lsn")
            ),
            "source_moved" => self.moved(),
            "transaction_quarantined" => format!(
                "transaction {} quarantined: {} kept raw",
                self.d("xid"),
                self.many("records", "record", "records")
            ),
            _ => return None,
        };
        Some(text)
    }

    fn sign_out(&self) -> String {
        let a = self.actor();
        let sessions = self.many("sessions", "session", "sessions");
        match self.details.get("user").and_then(plain) {
            Some(user) => format!("{a} signed {user} out everywhere ({sessions})"),
            None if self.flag("everywhere") => format!("{a} signed out everywhere ({sessions})"),
            None => format!("{a} signed out"),
        }
    }

    fn export(&self) -> String {
        let format = self.d("format");
        let label = Format::parse(&format).map(Format::label);
        let how = format!(
            "{}{}",
            label.unwrap_or(format.as_str()),
            if self.flag("encrypted") {
                ", encrypted"
            } else {
                ""
            }
        );
        let entries = self.many("entries", "entry", "entries");
        let by = self
            .context("actor")
            .map(|a| format!(" by {a}"))
            .unwrap_or_default();
        // Older events may lack `completed`: only a recorded error says it failed.
        if !self.details.contains_key("error") {
            format!("{}exported {entries} as {how}", self.by())
        } else if self.flag("abandoned") {
            format!("export as {how}{by} abandoned by the client after {entries}")
        } else {
            format!("export as {how}{by} failed after {entries}")
        }
    }
}

/// The Changes column of an event: what happened, in one line.
pub fn headline(e: &StoredEntry) -> String {
    let said = Said::of(e);
    let text = said
        .sentence()
        .or_else(|| said.context("remarks"))
        .unwrap_or_else(|| format!("pgtrail event {}", said.event).trim().to_owned());
    clip(&text)
}

/// Longer than [`crate::text::clip`]'s 60 characters: a sentence, cut only
/// where a recorded error or path runs on. A source's move names two servers
/// (19-digit identifiers), two databases and two positions, about 220
/// characters, and must not lose what was not captured at its end.
fn clip(text: &str) -> String {
    const MAX: usize = 300;
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// One particular of an event, as its page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Particular {
    pub label: String,
    /// Empty for null: the page shows a dash.
    pub value: String,
}

/// A detail's key as a label: `last_stored_lsn` → `Last stored LSN`.
fn label(key: &str) -> String {
    let words: Vec<String> = key
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| match w {
            "lsn" | "xid" | "bom" | "ip" | "csv" | "oid" => w.to_uppercase(),
            "sha256" => "SHA-256".into(),
            other => other.to_owned(),
        })
        .collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => key.to_owned(),
    }
}

/// An event's details but its name, each as a label and a value; an object
/// (an export's filters) becomes one line per member.
pub fn particulars(e: &StoredEntry) -> Vec<Particular> {
    let details = object(e.details());
    let mut out = Vec::new();
    for (key, value) in details.iter().filter(|(k, _)| *k != "event") {
        match value {
            Value::Object(members) if members.is_empty() => out.push(Particular {
                label: label(key),
                value: "none".into(),
            }),
            Value::Object(members) => {
                for (k, v) in members {
                    let words: Vec<&str> = k
                        .split('_')
                        .map(|w| if w == "oid" { "OID" } else { w })
                        .collect();
                    out.push(Particular {
                        label: format!("{}: {}", label(key), words.join(" ")),
                        value: value_of(k, v),
                    });
                }
            }
            other => out.push(Particular {
                label: label(key),
                value: value_of(key, other),
            }),
        }
    }
    out
}

/// A detail's value as text: an OID as PostgreSQL prints it (it is a name,
/// not a count to group by thousands), anything else [`plain`].
fn value_of(key: &str, v: &Value) -> String {
    match v.as_u64() {
        Some(n) if key == "oid" || key.ends_with("_oid") => n.to_string(),
        _ => plain(v).unwrap_or_default(),
    }
}

/// Who an actor name is: a pgtrail user, or the operating-system user of the CLI.
pub fn actor_kind(actor: &str) -> &'static str {
    if actor.starts_with("os:") {
        "operating-system user, at the command line"
    } else if actor.starts_with("token:") {
        "API token"
    } else {
        "pgtrail user"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::{Category, OwnEvent};

    /// The stored entry of an event as the store would read it back.
    pub(super) fn stored(e: &OwnEvent) -> StoredEntry {
        let mut details = Map::new();
        details.insert("event".into(), Value::String(e.name.into()));
        details.extend(e.details.clone());
        let context = serde_json::json!({"actor": e.actor, "client_addr": e.client_addr, "remarks": e.summary});
        StoredEntry {
            id: 1,
            committed_at: chrono::Utc::now(),
            xid: None,
            lsn: None,
            schema: "pgtrail".into(),
            table: e.category.table_name().into(),
            action: "EVENT".into(),
            source: "pgtrail".into(),
            json: [
                e.primary_key.as_ref().map(Value::to_string),
                e.before.clone().map(|b| Value::Object(b).to_string()),
                e.after.clone().map(|a| Value::Object(a).to_string()),
                None,
                Some(context.to_string()),
                Some(Value::Object(details).to_string()),
            ],
        }
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1204, "1,204"),
            (-1_234_567, "-1,234,567"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }

    #[test]
    fn an_export_reads_as_what_was_exported() {
        use crate::export::{event, Options, Origin};
        let origin = Origin {
            actor: Some("demo".into()),
            client_addr: Some("10.0.0.9".into()),
            application: "pgtrail web",
            destination: "download x.csv".into(),
        };
        let csv = Options {
            format: Format::Csv,
            bom: false,
        };
        let e = |enc, entries, error: Option<&str>, gone| {
            headline(&stored(&event(
                &origin,
                csv,
                enc,
                Map::new(),
                entries,
                error,
                gone,
            )))
        };
        assert_eq!(
            e(false, 1204, None, false),
            "demo exported 1,204 entries as CSV"
        );
        assert_eq!(
            e(true, 1, None, false),
            "demo exported 1 entry as CSV, encrypted"
        );
        assert_eq!(
            e(false, 10, Some("boom"), true),
            "export as CSV by demo abandoned by the client after 10 entries"
        );
        assert_eq!(
            e(false, 0, Some("boom"), false),
            "export as CSV by demo failed after 0 entries"
        );
    }

    #[test]
    fn gap_events_say_what_was_lost() {
        use crate::pipeline::gap::recreated_event;
        let slot = crate::pg::SlotName::parse("pgtrail_slot").unwrap();
        let source = crate::store::sources::SourceName::parse("shop").unwrap();
        let e = recreated_event(
            (&source, &slot),
            &crate::pipeline::gap::Found::Missing,
            None,
            "0/16B3748".parse().unwrap(),
            Some("os:root".into()),
        );
        assert_eq!(
            headline(&stored(&e)),
            "os:root recreated replication slot pgtrail_slot at 0/16B3748; changes after ? were not captured"
        );
    }

    #[test]
    fn particulars_label_each_detail_and_spread_objects() {
        let e = OwnEvent::new(Category::Export, "export", "pgtrail web", "x")
            .detail("last_stored_lsn", "0/1")
            .detail("encrypted", true)
            .detail("entries", 1204)
            .detail("from_lsn", Value::Null)
            .detail(
                "filters",
                serde_json::json!({"table": ["public.a", "public.b"], "actor": "bob"}),
            )
            .detail("tables", Vec::<String>::new());
        let p = particulars(&stored(&e));
        let pairs: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.label.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("Encrypted", "yes"),
                ("Entries", "1,204"),
                ("Filters: actor", "bob"),
                ("Filters: table", "public.a, public.b"),
                ("From LSN", ""),
                ("Last stored LSN", "0/1"),
                ("Tables", "none"),
            ]
        );
    }

    #[test]
    fn an_unknown_kind_falls_back_to_its_recorded_summary() {
        let e = OwnEvent::new(
            Category::Config,
            "new_kind",
            "pgtrail run",
            "something new happened",
        );
        assert_eq!(headline(&stored(&e)), "something new happened");
    }
}
