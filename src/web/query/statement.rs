//! The log's statements: the `WHERE` of every filter that is set, and from
//! it a page (with the keyset condition of its cursor), a capped count, and
//! an export's reading and total. Values are always parameters.

use chrono::{DateTime, Utc};

use super::order::{Dir, SortKey};
use super::params::{Filter, LogQuery};
use super::resolve::Resolved;
use super::sql::Sql;
use crate::store::sources::ENTRY_SOURCE_SQL;
use crate::text::push_json_string;

/// The predicate of the index `entries_rare_action` (sql/store/0014).
pub const RARE_ACTIONS: &str = " AND action NOT IN ('INSERT', 'UPDATE', 'DELETE')";

/// Entry rows, each with its transaction's columns looked up by primary key:
/// a nested loop whatever the planner estimates, so reading a window of ids
/// costs a probe per entry and never a pass over every transaction (which
/// the view `pgtrail.entries`, joined by a hash, cost the facets: seconds at
/// 2,000,000 entries). Every column keeps its name, so [`Filter::push_where`]
/// applies as it does to the view.
pub const ENTRIES_PROBED: &str = "pgtrail.entry_rows e CROSS JOIN LATERAL ( \
     SELECT t.xid, t.lsn, t.context, t.actor, t.client_addr FROM pgtrail.transactions t \
     WHERE t.id = e.txn AND t.source = e.source AND t.committed_at = e.committed_at LIMIT 1) t";

impl Filter {
    /// Whether a filter reads a column of the entries' transactions (who,
    /// from where, which application): else the entry rows alone answer, with
    /// no join.
    pub fn reads_transactions(&self) -> bool {
        self.actor.is_some()
            || self.role.is_some()
            || self.app.is_some()
            || self.source.is_some()
            || self.ip.is_some()
    }

    /// What a statement that returns no transaction column reads: the entry
    /// rows alone when the filter allows.
    pub fn relation(&self) -> &'static str {
        if self.reads_transactions() {
            "pgtrail.entries"
        } else {
            "pgtrail.entry_rows"
        }
    }

    /// Appends ` AND …` for every filter that is set.
    pub fn push_where(&self, sql: &mut Sql, r: &Resolved, now: DateTime<Utc>) {
        self.scope.push_where(sql);
        // pgtrail's own events, where the view leaves them out and the scope
        // would show them (a scope without events has the condition already).
        if self.hides_events() && self.scope.sees_events() {
            sql.text.push_str(" AND action <> 'EVENT'");
        }
        if let Some(lo) = r.lo {
            let p = sql.param(lo);
            sql.text.push_str(&format!(" AND id >= {p}"));
        }
        if let Some(hi) = r.hi {
            let p = sql.param(hi);
            sql.text.push_str(&format!(" AND id < {p}"));
        }
        if !self.actions.is_empty() {
            let p = sql.param(
                self.actions
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect::<Vec<String>>(),
            );
            sql.text.push_str(&format!(" AND action = ANY({p})"));
            if self.actions.iter().all(|a| !a.is_row_change()) {
                // The predicate of the partial index entries_rare_action,
                // spelled out: the planner cannot prove it from a parameter.
                sql.text.push_str(RARE_ACTIONS);
            }
        }
        if !self.tables.is_empty() {
            let mut alternatives = Vec::new();
            for t in &self.tables {
                let s = sql.param(t.schema.clone());
                let n = sql.param(t.name.clone());
                alternatives.push(format!("(schema_name = {s} AND table_name = {n})"));
            }
            sql.text
                .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        if !self.dbs.is_empty() {
            // By name, in the statement's own snapshot (`resolve` has
            // refused a name the store does not know).
            let p = sql.param(self.dbs.clone());
            sql.text.push_str(&format!(
                " AND {ENTRY_SOURCE_SQL} IN (SELECT id FROM pgtrail.sources WHERE name = ANY({p}))"
            ));
        }
        if let Some(actor) = &self.actor {
            let p = sql.param(actor.clone());
            // The actor is never empty here, so this is `actor = …` in the
            // form the index entries_actor holds.
            sql.text
                .push_str(&format!(" AND coalesce(actor, '') = {p}"));
        }
        let exact = [
            ("db_user", &self.role),
            ("application_name", &self.app),
            ("source", &self.source),
        ];
        for (key, value) in exact {
            if let Some(v) = value {
                let p = sql.param(v.clone());
                sql.text.push_str(&format!(" AND context->>'{key}' = {p}"));
            }
        }
        if let Some(ip) = &self.ip {
            let p = sql.param(ip.clone());
            sql.text
                .push_str(&format!(" AND client_addr <<= ({p}::text)::inet"));
            if !ip.contains('/') {
                // One address: the same condition in the form the index
                // entries_client_addr holds, so it is looked up, not walked to.
                sql.text.push_str(&format!(
                    " AND coalesce(host(client_addr), '') = host(({p}::text)::inet)"
                ));
            }
        }
        if let Some(since) = self.since(now) {
            let p = sql.param(since);
            sql.text.push_str(&format!(" AND committed_at >= {p}"));
        }
        if let Some((_, to)) = &self.to {
            let p = sql.param(*to);
            sql.text.push_str(&format!(" AND committed_at < {p}"));
        }
        if let Some(m) = &r.pk {
            let mut alternatives = Vec::new();
            if !m.row_keys.is_empty() {
                let k = sql.param(m.row_keys.clone());
                let t = sql.param(m.texts.clone());
                alternatives.push(format!(
                    "(row_key = ANY({k}) AND primary_key::text = ANY({t}))"
                ));
            }
            if let Some((tables, value)) = &m.partial {
                let mut in_tables = Vec::new();
                for t in tables {
                    let s = sql.param(t.schema.clone());
                    let n = sql.param(t.name.clone());
                    in_tables.push(format!("(schema_name = {s} AND table_name = {n})"));
                }
                let v = sql.param(value.clone());
                alternatives.push(format!(
                    "(({}) AND EXISTS (SELECT 1 FROM json_each_text(primary_key) k WHERE k.value = {v}))",
                    in_tables.join(" OR ")
                ));
            }
            if alternatives.is_empty() {
                // No table can have such a key.
                sql.text.push_str(" AND false");
            } else {
                sql.text
                    .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
            }
        }
        if let Some(q) = &self.q {
            // A cheap scan of the JSON text first (the term escaped as JSON
            // would write it), then the exact check on values, so that column
            // names do not match.
            let mut json_term = String::new();
            push_json_string(&mut json_term, q);
            let json_term = &json_term[1..json_term.len() - 1];
            let rough = sql.param(format!("%{}%", like_escape(json_term)));
            let exact = sql.param(format!("%{}%", like_escape(q)));
            sql.text.push_str(&format!(
                " AND (before::text ILIKE {rough} OR after::text ILIKE {rough}) \
                 AND EXISTS (SELECT 1 FROM json_each_text(before) v WHERE v.value ILIKE {exact} \
                 UNION ALL SELECT 1 FROM json_each_text(after) v WHERE v.value ILIKE {exact})"
            ));
        }
    }
}

/// Escapes LIKE's wildcards (the default escape character is `\`).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Filter {
    /// Every matching entry in commit order: what an export reads.
    pub fn export_sql(&self, r: &Resolved, now: DateTime<Utc>) -> Sql {
        let mut sql = Sql::new(format!(
            "SELECT {} FROM pgtrail.entries WHERE true",
            crate::store::stored::ENTRY_COLUMNS
        ));
        self.push_where(&mut sql, r, now);
        sql.text.push_str(" ORDER BY id");
        sql
    }

    /// How many entries match (all of them, no cap): the total of an export's progress bar.
    pub fn count_all_sql(&self, r: &Resolved, now: DateTime<Utc>) -> Sql {
        let mut sql = Sql::new(format!(
            "SELECT count(*) FROM {} WHERE true",
            self.relation()
        ));
        self.push_where(&mut sql, r, now);
        sql
    }
}

/// A page of the log: its statement, and what the rows' extra columns mean.
pub struct PageSql {
    pub sql: Sql,
    /// How many sort key columns follow the entry columns.
    pub key_count: usize,
    /// Rows come in reverse (a backward cursor): the caller flips them.
    pub reversed: bool,
}

impl LogQuery {
    /// The page statement: entries (see `export::ENTRY_COLUMNS`), then the sort
    /// key values for cursors; `limit + 1` rows so the caller knows whether
    /// there is more.
    pub fn page_sql(&self, r: &Resolved, now: DateTime<Utc>) -> PageSql {
        let exprs = self.sort.key.exprs();
        let mut sql = Sql::new(format!("SELECT {}", crate::store::stored::ENTRY_COLUMNS));
        for e in exprs {
            if SortKey::numeric(e) {
                // Named apart: ORDER BY takes a bare name for an output
                // column first, and `txn::text` would be named `txn`, so
                // the order would be the text's ("12" before "5").
                sql.text.push_str(&format!(", {e}::text AS {e}_text"));
            } else {
                sql.text.push_str(&format!(", {e}"));
            }
        }
        sql.text.push_str(" FROM pgtrail.entries WHERE true");
        self.filter.push_where(&mut sql, r, now);
        let backward = self.cursor.as_ref().is_some_and(|c| c.backward);
        // Going back reads the other way from the cursor, then flips.
        let dir = if backward {
            self.sort.dir.flip()
        } else {
            self.sort.dir
        };
        if let Some(c) = &self.cursor {
            let mut left: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
            left.push("id".into());
            let mut right: Vec<String> = exprs
                .iter()
                .zip(&c.keys)
                .map(|(e, k)| {
                    let p = sql.param(k.clone());
                    if SortKey::numeric(e) {
                        format!("{p}::text::bigint")
                    } else {
                        p
                    }
                })
                .collect();
            right.push(sql.param(c.id));
            let op = if dir == Dir::Desc { "<" } else { ">" };
            if left.len() == 1 {
                sql.text.push_str(&format!(" AND id {op} {}", right[0]));
            } else {
                sql.text.push_str(&format!(
                    " AND ({}) {op} ({})",
                    left.join(", "),
                    right.join(", ")
                ));
            }
        }
        let order: Vec<String> = exprs
            .iter()
            .chain(&["id"])
            .map(|e| format!("{e} {}", dir.as_str().to_uppercase()))
            .collect();
        let limit = sql.param(self.limit + 1);
        sql.text
            .push_str(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        PageSql {
            sql,
            key_count: exprs.len(),
            reversed: backward,
        }
    }

    /// Counts matches with ids in `[lower, upper)`, stopping after `cap`.
    pub fn count_sql(
        &self,
        r: &Resolved,
        now: DateTime<Utc>,
        lower: i64,
        upper: i64,
        cap: i64,
    ) -> Sql {
        let mut sql = Sql::new(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {} WHERE true",
            self.filter.relation()
        ));
        self.filter.push_where(&mut sql, r, now);
        let (l, u, c) = (sql.param(lower), sql.param(upper), sql.param(cap));
        sql.text
            .push_str(&format!(" AND id >= {l} AND id < {u} LIMIT {c}) s"));
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::query::params::pairs;

    #[test]
    fn sql_is_parameterised() {
        let raw = "actor=x%27%3B%20DROP%20TABLE%20t&q=50%25_off&table=public.t&sort=table&cursor=";
        let q = LogQuery::from_pairs(&pairs(Some(raw)).unwrap(), true, Utc::now()).unwrap();
        let page = q.page_sql(&Resolved::default(), Utc::now());
        assert!(!page.sql.text.contains("DROP"), "{}", page.sql.text);
        assert!(
            page.sql
                .text
                .contains("ORDER BY schema_name ASC, table_name ASC, id ASC"),
            "{}",
            page.sql.text
        );
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn counts_join_the_transactions_only_for_a_filter_on_their_columns() {
        let count = |raw: &str| {
            let q = LogQuery::from_pairs(&pairs(Some(raw)).unwrap(), true, Utc::now()).unwrap();
            q.count_sql(&Resolved::default(), Utc::now(), 0, 10, 5).text
        };
        for raw in ["", "table=public.t", "action=DELETE&q=x", "db=shop", "pk=7"] {
            assert!(
                count(raw).contains(" FROM pgtrail.entry_rows WHERE"),
                "{raw}: {}",
                count(raw)
            );
        }
        for raw in [
            "actor=ann",
            "role=app",
            "app=psql",
            "source=batch",
            "ip=10.0.0.1",
        ] {
            assert!(
                count(raw).contains(" FROM pgtrail.entries WHERE"),
                "{raw}: {}",
                count(raw)
            );
        }
    }

    #[test]
    fn only_rare_actions_spell_out_the_partial_index_predicate() {
        let spelled = |raw: &str| {
            let q = LogQuery::from_pairs(&pairs(Some(raw)).unwrap(), true, Utc::now()).unwrap();
            q.page_sql(&Resolved::default(), Utc::now())
                .sql
                .text
                .contains(RARE_ACTIONS)
        };
        assert!(spelled("action=TRUNCATE"));
        assert!(spelled("action=DDL,EVENT"));
        assert!(!spelled("action=TRUNCATE,DELETE"));
        assert!(!spelled("action=UPDATE"));
        assert!(!spelled("table=public.t"));
    }

    #[test]
    fn events_are_left_out_where_the_view_and_the_scope_say() {
        use crate::web::query::{Events, Scope};
        let tail = |events: Events, action: Option<&str>, scope: Scope| {
            let raw = action.map_or(String::new(), |a| format!("action={a}"));
            let mut q =
                LogQuery::from_pairs(&pairs(Some(&raw)).unwrap(), true, Utc::now()).unwrap();
            q.filter.events = events;
            q.filter.scope = scope;
            let mut sql = Sql::new("");
            q.filter
                .push_where(&mut sql, &Resolved::default(), Utc::now());
            sql.text.contains("action <> 'EVENT'")
        };
        let viewer = Scope::Limited {
            events: false,
            tables: Default::default(),
        };
        assert!(tail(Events::Omitted, None, Scope::everything()));
        assert!(!tail(Events::Shown, None, Scope::everything()));
        assert!(!tail(Events::Omitted, Some("EVENT"), Scope::everything()));
        assert!(
            tail(Events::Omitted, None, viewer),
            "the scope's own condition"
        );
    }
}
