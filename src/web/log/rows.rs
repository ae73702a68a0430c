//! An entry as people read it: one line of the log ([`RowView`],
//! `templates/row.html`, which the transaction page and the live stream
//! reuse), its actor context ([`Context`]), and the texts of times and keys
//! that the entry and history pages show too.

use askama::Template;
use chrono::{DateTime, Utc};

use super::matched::Matched;
use crate::entry::Action;
use crate::store::stored::StoredEntry;
use crate::table::TableName;
use crate::web::diff::{Members, ValueView};
use crate::web::query::{table_param, url, LogQuery};

/// The actor context of an entry (see `src/context.rs`); any field may be null.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub actor: Option<String>,
    pub db_user: Option<String>,
    pub client_addr: Option<String>,
    pub application_name: Option<String>,
    pub source: Option<String>,
    pub remarks: Option<String>,
    /// The effective role, where it differs from `db_user` (after `SET ROLE`).
    pub current_user: Option<String>,
    pub client_port: Option<String>,
    pub backend_pid: Option<String>,
}

impl Context {
    pub fn of(entry: &StoredEntry) -> Context {
        let m = Members::parse(entry.context());
        let get = |k: &str| {
            m.get(k).and_then(|v| match v.get() {
                "null" => None,
                t if t.starts_with('"') => serde_json::from_str::<String>(t).ok(),
                t => Some(t.to_owned()),
            })
        };
        Context {
            actor: get("actor"),
            db_user: get("db_user"),
            client_addr: get("client_addr"),
            application_name: get("application_name"),
            source: get("source"),
            remarks: get("remarks"),
            current_user: get("current_user").filter(|u| get("db_user").as_ref() != Some(u)),
            client_port: get("client_port"),
            backend_pid: get("backend_pid"),
        }
    }

    /// Who, as the log shows it: the application's actor, else the database role.
    pub fn who(&self) -> Option<&str> {
        self.actor.as_deref().or(self.db_user.as_deref())
    }
}

/// `2024-05-01 10:00:03` (UTC).
pub fn short_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `2024-05-01 10:00:03.123456` (UTC): the facts of an entry.
pub fn long_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// `id=5`, `a=1, b=x`: a primary key for people.
pub fn key_text(primary_key: Option<&str>) -> String {
    let m = Members::parse(primary_key);
    let text =
        m.0.iter()
            .map(|(k, v)| format!("{k}={}", ValueView::of(v).text))
            .collect::<Vec<_>>()
            .join(", ");
    crate::text::clip(&text)
}

/// `/history?table=…&pk=…&db=…` for the entry's row, if it has a key.
/// Links name the source database even where the store has one: the same
/// table and key in another source is another row, and a link kept stays
/// right when a second source joins.
pub fn history_url(entry: &StoredEntry) -> Option<String> {
    let pk = entry.primary_key()?;
    let table = TableName::new(entry.schema.clone(), entry.table.clone());
    Some(url(
        "/history",
        &[
            ("table", table_param(&table)),
            ("pk", pk.to_owned()),
            ("db", entry.source.clone()),
        ],
    ))
}

/// `/transactions/{xid}?db=…` for the entry's transaction, if it has one:
/// transaction ids are the source database's own (see [`history_url`]).
pub fn transaction_url(entry: &StoredEntry) -> Option<String> {
    let xid = entry.xid?;
    Some(url(
        &format!("/transactions/{xid}"),
        &[("db", entry.source.clone())],
    ))
}

/// One entry as a line of the log.
#[derive(Debug, Clone)]
pub struct RowView {
    pub id: i64,
    pub time: String,
    pub time_full: String,
    pub actor: String,
    /// The role, shown under the actor when both are known.
    pub role: String,
    /// No application actor was recorded: `actor` is the database role, and says so.
    pub actor_is_role: bool,
    pub actor_url: String,
    pub ip: String,
    pub ip_url: String,
    pub action: String,
    pub action_class: String,
    pub action_url: String,
    pub table: String,
    pub table_url: String,
    /// The source database and the view narrowed to it; `None` where the
    /// page leaves the column out (a store with one source).
    pub db: Option<String>,
    pub db_url: String,
    pub pk: String,
    pub history_url: Option<String>,
    pub changes: String,
    pub entry_url: String,
    /// The value that matched the view's free text, marked.
    pub matched: Option<Matched>,
}

impl RowView {
    /// `base` is the current view; the actor, IP, action, database and
    /// table cells link to it narrowed by that value. `show_db`: the row has
    /// a Database cell ([`crate::web::AppState::shows_db`]).
    pub fn new(e: &StoredEntry, base: &LogQuery, show_db: bool) -> RowView {
        let ctx = Context::of(e);
        let table = TableName::new(e.schema.clone(), e.table.clone());
        let narrowed = |set: &dyn Fn(&mut LogQuery)| base.first_page_url(set);
        let who = ctx.who().unwrap_or("").to_owned();
        let role = match (&ctx.actor, &ctx.db_user) {
            (Some(_), Some(role)) => role.clone(),
            _ => String::new(),
        };
        let action = e.action.clone();
        RowView {
            id: e.id,
            time: short_time(&e.committed_at),
            time_full: e.committed_at_text(),
            actor_url: narrowed(&|q| q.filter.actor = Some(who.clone())),
            actor: who.clone(),
            role,
            actor_is_role: ctx.actor.is_none() && ctx.db_user.is_some(),
            ip_url: narrowed(&|q| q.filter.ip = ctx.client_addr.clone()),
            ip: ctx.client_addr.clone().unwrap_or_default(),
            action_url: narrowed(&|q| {
                q.filter.actions = action
                    .parse::<Action>()
                    .map(|a| vec![a])
                    .unwrap_or_default();
            }),
            action_class: e.action.to_lowercase(),
            action: e.action.clone(),
            table_url: narrowed(&|q| q.filter.tables = vec![table.clone()]),
            table: table_param(&table),
            db: show_db.then(|| e.source.clone()),
            db_url: narrowed(&|q| q.filter.dbs = vec![e.source.clone()]),
            pk: key_text(e.primary_key()),
            history_url: history_url(e),
            changes: changes(e),
            entry_url: format!("/entries/{}", e.id),
            matched: base.filter.q.as_deref().and_then(|t| Matched::find(e, t)),
        }
    }
}

/// The Changes column: the changed columns of an update, or one line saying what happened.
pub fn changes(e: &StoredEntry) -> String {
    let key = key_text(e.primary_key());
    let with_key = |what: &str| {
        if key.is_empty() {
            what.to_owned()
        } else {
            format!("{what} {key}")
        }
    };
    match e.action.as_str() {
        "INSERT" => with_key("new row"),
        "DELETE" => with_key("deleted row"),
        "TRUNCATE" => truncate_text(e.details()),
        "EVENT" => crate::web::event::headline(e),
        "DDL" => {
            let m = Members::parse(e.after());
            let field = |k: &str| m.get(k).map(|v| ValueView::of(v).text).unwrap_or_default();
            crate::text::clip(
                format!("{} {}", field("command_tag"), field("object_identity")).trim(),
            )
        }
        _ => match e
            .changed_columns()
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        {
            Some(cols) if cols.is_empty() => "no column changed".into(),
            Some(cols) => {
                const SHOWN: usize = 6;
                let mut text = cols
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if cols.len() > SHOWN {
                    text.push_str(&format!(" +{} more", cols.len() - SHOWN));
                }
                text
            }
            None => "updated (old values not captured)".into(),
        },
    }
}

/// A TRUNCATE's line: what was emptied and with which options, from `details`.
fn truncate_text(details: Option<&str>) -> String {
    let details: serde_json::Map<String, serde_json::Value> = details
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let flag = |k: &str| details.get(k).and_then(serde_json::Value::as_bool);
    let mut text = match details.get("partition").and_then(|p| p.as_str()) {
        Some(p) => format!("partition {p} truncated"),
        None => "table truncated".to_owned(),
    };
    if flag("via_cascade") == Some(true) {
        text.push_str(" by CASCADE");
    }
    let mut options = Vec::new();
    if flag("cascade") == Some(true) && flag("via_cascade") != Some(true) {
        options.push("CASCADE");
    }
    if flag("restart_identity") == Some(true) {
        options.push("RESTART IDENTITY");
    }
    if !options.is_empty() {
        text = format!("{text} ({})", options.join(", "));
    }
    crate::text::clip(&text)
}

/// The row fragment alone: what the live stream sends.
#[derive(Template)]
#[template(path = "row.html")]
pub struct RowFragment<'a> {
    pub r: &'a RowView,
}

#[cfg(test)]
mod tests {
    use super::truncate_text;

    #[test]
    fn truncate_lines_say_what_was_emptied_and_how() {
        for (details, text) in [
            (None, "table truncated"),
            (
                Some(r#"{"cascade":false,"restart_identity":false}"#),
                "table truncated",
            ),
            (
                Some(r#"{"cascade":null,"restart_identity":null}"#),
                "table truncated",
            ),
            (
                Some(r#"{"cascade":true,"restart_identity":true}"#),
                "table truncated (CASCADE, RESTART IDENTITY)",
            ),
            (
                Some(r#"{"cascade":true,"restart_identity":false,"via_cascade":true}"#),
                "table truncated by CASCADE",
            ),
            (
                Some(r#"{"partition":"public.o_1","restart_identity":true,"cascade":false}"#),
                "partition public.o_1 truncated (RESTART IDENTITY)",
            ),
        ] {
            assert_eq!(truncate_text(details), text, "{details:?}");
        }
    }
}
