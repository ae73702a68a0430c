//! Which entries a principal may see ([`Scope`]): the SQL predicate every
//! entry query carries ([`Scope::push_where`]) and the same rule in Rust for
//! single entries ([`Scope::allows`]). Its default is to see nothing, so a
//! query that forgets to set it fails closed. pgtrail's own `EVENT` entries
//! are for admins only: they name users, addresses and what others exported.
//!
//! Authentication (`web/access.rs`, `Principal::scope`) gives each principal
//! its scope.

use super::sql::Sql;
use crate::auth::Tables;
use crate::store::sources::ENTRY_SOURCE_SQL;
use crate::store::stored::StoredEntry;
use crate::table::TableName;

/// Which entries a principal may see.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    /// Nothing: what a query gets when nobody set its scope.
    #[default]
    Nothing,
    Limited {
        /// pgtrail's own EVENT entries.
        events: bool,
        /// Tables of row changes and DDL; empty means every table.
        tables: Tables,
    },
}

impl Scope {
    /// Everything: for the CLI, which has the store's own credentials anyway.
    pub fn everything() -> Scope {
        Scope::Limited {
            events: true,
            tables: Tables::default(),
        }
    }

    /// Appends ` AND …` limiting a query on `pgtrail.entries` to this scope.
    pub fn push_where(&self, sql: &mut Sql) {
        let (events, tables) = match self {
            Scope::Nothing => {
                sql.text.push_str(" AND false");
                return;
            }
            Scope::Limited { events, tables } => (*events, tables),
        };
        let table_match = if tables.is_all() {
            None
        } else {
            let alternatives: Vec<String> = tables
                .0
                .iter()
                .map(|p| {
                    let (s, t) = p.table().sql_like();
                    let (s, t) = (sql.param(s), sql.param(t));
                    match p.source() {
                        None => format!("(schema_name LIKE {s} AND table_name LIKE {t})"),
                        // A source the store does not know matches nothing.
                        Some(source) => {
                            let n = sql.param(source.to_owned());
                            format!(
                                "({ENTRY_SOURCE_SQL} = (SELECT id FROM pgtrail.sources WHERE name = {n}) \
                                 AND schema_name LIKE {s} AND table_name LIKE {t})"
                            )
                        }
                    }
                })
                .collect();
            Some(alternatives.join(" OR "))
        };
        match (events, table_match) {
            (true, None) => {}
            (true, Some(m)) => sql
                .text
                .push_str(&format!(" AND (action = 'EVENT' OR {m})")),
            (false, None) => sql.text.push_str(" AND action <> 'EVENT'"),
            (false, Some(m)) => sql
                .text
                .push_str(&format!(" AND action <> 'EVENT' AND ({m})")),
        }
    }

    /// The same rule for one entry.
    pub fn allows(&self, entry: &StoredEntry) -> bool {
        match self {
            Scope::Nothing => false,
            Scope::Limited { events, tables } => {
                if entry.action == "EVENT" {
                    *events
                } else {
                    let table = TableName::new(entry.schema.clone(), entry.table.clone());
                    tables.is_all() || tables.0.iter().any(|p| p.matches(&entry.source, &table))
                }
            }
        }
    }

    /// Whether pgtrail's own events are in scope.
    pub fn sees_events(&self) -> bool {
        matches!(self, Scope::Limited { events: true, .. })
    }

    /// Whether row changes of `table` are in scope in some source (a
    /// pattern named for one source allows its table here: the entries
    /// themselves are checked by [`Scope::allows`] and [`Scope::push_where`]).
    pub fn allows_table(&self, table: &TableName) -> bool {
        match self {
            Scope::Nothing => false,
            Scope::Limited { tables, .. } => {
                tables.is_all() || tables.0.iter().any(|p| p.table().matches(table))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(schema: &str, table: &str, action: &str) -> StoredEntry {
        StoredEntry {
            id: 1,
            committed_at: chrono::Utc::now(),
            xid: None,
            lsn: None,
            schema: schema.into(),
            table: table.into(),
            action: action.into(),
            source: "shop".into(),
            json: Default::default(),
        }
    }

    fn sql_of(scope: &Scope) -> (String, usize) {
        let mut sql = Sql::new("SELECT 1 FROM pgtrail.entries WHERE true");
        scope.push_where(&mut sql);
        let n = sql.refs().len();
        (sql.text, n)
    }

    #[test]
    fn the_default_scope_sees_nothing() {
        let s = Scope::default();
        assert!(sql_of(&s).0.ends_with(" AND false"));
        assert!(!s.allows(&entry("public", "t", "INSERT")));
    }

    #[test]
    fn scopes_as_sql_and_in_rust_agree() {
        let restricted = Tables::parse_list("public.orders, sales.*").unwrap();
        let cases = [
            (Scope::everything(), "", 0),
            (Scope::Limited { events: false, tables: Tables::default() }, " AND action <> 'EVENT'", 0),
            (
                Scope::Limited { events: true, tables: restricted.clone() },
                " AND (action = 'EVENT' OR (schema_name LIKE $1 AND table_name LIKE $2) OR (schema_name LIKE $3 AND table_name LIKE $4))",
                4,
            ),
            (
                Scope::Limited { events: false, tables: restricted.clone() },
                " AND action <> 'EVENT' AND ((schema_name LIKE $1 AND table_name LIKE $2) OR (schema_name LIKE $3 AND table_name LIKE $4))",
                4,
            ),
        ];
        for (scope, tail, params) in &cases {
            let (text, n) = sql_of(scope);
            assert_eq!(
                &text["SELECT 1 FROM pgtrail.entries WHERE true".len()..],
                *tail
            );
            assert_eq!(n, *params);
        }
        let viewer = &cases[3].0;
        assert!(viewer.allows(&entry("public", "orders", "UPDATE")));
        assert!(viewer.allows(&entry("sales", "leads", "DDL")));
        assert!(!viewer.allows(&entry("public", "customers", "UPDATE")));
        assert!(!viewer.allows(&entry("pgtrail", "session", "EVENT")));
        let admin = &cases[2].0;
        assert!(admin.allows(&entry("pgtrail", "session", "EVENT")));
        assert!(!admin.allows(&entry("public", "customers", "UPDATE")));
        // LIKE's own wildcards in a name are literal.
        let odd = Scope::Limited {
            events: false,
            tables: Tables::parse_list("public.a_b").unwrap(),
        };
        assert!(!odd.allows_table(&TableName::new("public", "axb")));
    }

    #[test]
    fn a_pattern_named_for_a_source_checks_the_source_too() {
        let scope = Scope::Limited {
            events: false,
            tables: Tables::parse_list("a:public.accounts, public.audit").unwrap(),
        };
        let (text, n) = sql_of(&scope);
        assert_eq!(
            &text["SELECT 1 FROM pgtrail.entries WHERE true".len()..],
            format!(
                " AND action <> 'EVENT' AND (({ENTRY_SOURCE_SQL} = (SELECT id FROM pgtrail.sources WHERE name = $3) \
                 AND schema_name LIKE $1 AND table_name LIKE $2) OR (schema_name LIKE $4 AND table_name LIKE $5))"
            )
        );
        assert_eq!(n, 5);
        let from = |source: &str, table: &str| StoredEntry {
            source: source.into(),
            ..entry("public", table, "UPDATE")
        };
        assert!(scope.allows(&from("a", "accounts")));
        assert!(!scope.allows(&from("b", "accounts")));
        assert!(scope.allows(&from("b", "audit")));
        assert!(!scope.allows(&from("a", "other")));
        // A table the scope names in some source is one the viewer may look for.
        assert!(scope.allows_table(&TableName::new("public", "accounts")));
    }
}
