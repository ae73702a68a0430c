//! TRUNCATE options: `CASCADE` and `RESTART IDENTITY`, and which tables were
//! truncated only because of a CASCADE.
//!
//! wal2json's truncate record names the table and nothing else. The context
//! trigger fires BEFORE TRUNCATE for every table the statement empties (named,
//! partitions and inheritance children of named ones, and tables reached by
//! CASCADE), and emits a message (prefix `pgtrail_truncate`) with that table,
//! the client's query text and the statement's start time. This module reads
//! the TRUNCATE statements out of that text with a real SQL tokenizer
//! (comments, quoted identifiers, string and dollar-quoted literals, several
//! statements in one string) and tells which statement, and so which options,
//! each firing belongs to.
//!
//! Exact: one TRUNCATE per query string, or several that name different
//! tables; `TRUNCATE ONLY`, `TABLE`, quoted and schema-qualified names.
//! Heuristic: the same table in several TRUNCATE statements of one query
//! string (matched in order), an unqualified name that exists in more than one
//! schema, and inheritance children (taken as not cascaded). Unknown (`null`
//! options): a TRUNCATE run from inside a function, whose text is not the
//! client's query.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Word};

use crate::capture::partition::PartitionMap;
use crate::table::TableName;

/// Prefix of the context trigger's BEFORE TRUNCATE messages.
pub const TRUNCATE_PREFIX: &str = "pgtrail_truncate";

/// A table named in a TRUNCATE statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` when unqualified (the search path decided).
    pub schema: Option<String>,
    pub name: String,
}

impl Target {
    fn is(&self, table: &TableName) -> bool {
        self.name == table.name && self.schema.as_ref().is_none_or(|s| *s == table.schema)
    }
}

/// One TRUNCATE statement of a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub targets: Vec<Target>,
    pub cascade: bool,
    pub restart_identity: bool,
}

/// The TRUNCATE statements in `query`, in order; empty when there are none or
/// the text cannot be tokenized.
pub fn statements(query: &str) -> Vec<Statement> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, query).tokenize() else {
        return Vec::new();
    };
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    tokens
        .split(|t| *t == Token::SemiColon)
        .filter_map(truncate_statement)
        .collect()
}

fn keyword(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(Word { value, quote_style: None, .. })) if value.eq_ignore_ascii_case(kw))
}

/// An identifier as PostgreSQL stores it: unquoted names fold to lower case.
fn ident(t: Option<&Token>) -> Option<String> {
    match t? {
        Token::Word(Word {
            value,
            quote_style: Some('"'),
            ..
        }) => Some(value.clone()),
        Token::Word(Word {
            value,
            quote_style: None,
            ..
        }) => Some(value.to_ascii_lowercase()),
        _ => None,
    }
}

/// `TRUNCATE [TABLE] [ONLY] name [*] [, …] [RESTART|CONTINUE IDENTITY] [CASCADE|RESTRICT]`.
fn truncate_statement(tokens: &[Token]) -> Option<Statement> {
    let mut at = 0;
    let peek = |at: usize| tokens.get(at);
    if !keyword(peek(at), "truncate") {
        return None;
    }
    at += 1;
    if keyword(peek(at), "table") {
        at += 1;
    }
    let mut targets = Vec::new();
    loop {
        if keyword(peek(at), "only") {
            at += 1;
        }
        // Up to database.schema.table; the last two parts count.
        let mut parts = vec![ident(peek(at))?];
        at += 1;
        while peek(at) == Some(&Token::Period) {
            parts.push(ident(peek(at + 1))?);
            at += 2;
        }
        if peek(at) == Some(&Token::Mul) {
            at += 1;
        }
        let name = parts.pop()?;
        targets.push(Target {
            schema: parts.pop(),
            name,
        });
        if peek(at) == Some(&Token::Comma) {
            at += 1;
        } else {
            break;
        }
    }
    let mut statement = Statement {
        targets,
        cascade: false,
        restart_identity: false,
    };
    while at < tokens.len() {
        if keyword(peek(at), "restart") && keyword(peek(at + 1), "identity") {
            statement.restart_identity = true;
            at += 2;
        } else if keyword(peek(at), "continue") && keyword(peek(at + 1), "identity") {
            at += 2;
        } else if keyword(peek(at), "cascade") {
            statement.cascade = true;
            at += 1;
        } else if keyword(peek(at), "restrict") || peek(at) == Some(&Token::EOF) {
            at += 1;
        } else {
            // Not a TRUNCATE as PostgreSQL would have run it.
            return None;
        }
    }
    Some(statement)
}

/// What a TRUNCATE entry's `details` say about its options; `None` fields
/// are not known (the statement was not found in the client's query text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub cascade: Option<bool>,
    pub restart_identity: Option<bool>,
    /// Emptied only because CASCADE reached it from a named table.
    pub via_cascade: bool,
}

/// A BEFORE TRUNCATE message, as the context trigger writes it.
#[derive(Debug, Deserialize)]
struct Message {
    schema: String,
    table: String,
    /// The client's statement start time: a new value is a new query string.
    statement_start: String,
    /// The query text; left out when it is the one sent last in this transaction.
    query: Option<String>,
}

/// Follows one transaction's BEFORE TRUNCATE messages and holds the options
/// of each table until its truncate record arrives.
#[derive(Debug, Default)]
pub struct Tracker {
    statement_start: Option<String>,
    statements: Vec<Statement>,
    /// The statement the latest firing belonged to.
    cursor: usize,
    /// Tables already fired for in the current statement.
    fired: HashSet<TableName>,
    pending: HashMap<TableName, Options>,
}

impl Tracker {
    /// Takes one message's content; an error if it is not what the trigger writes.
    pub fn message(
        &mut self,
        content: &str,
        partitions: &PartitionMap,
    ) -> Result<(), serde_json::Error> {
        let m: Message = serde_json::from_str(content)?;
        if self.statement_start.as_deref() != Some(m.statement_start.as_str()) || m.query.is_some()
        {
            self.statements = m.query.as_deref().map(statements).unwrap_or_default();
            self.statement_start = Some(m.statement_start);
            self.cursor = 0;
            self.fired.clear();
        }
        let table = TableName::new(m.schema, m.table);
        let options = self.resolve(&table, partitions);
        self.pending.insert(table, options);
        Ok(())
    }

    fn resolve(&mut self, table: &TableName, partitions: &PartitionMap) -> Options {
        let named = |s: &Statement| s.targets.iter().any(|t| t.is(table));
        let Some(current) = self.statements.get(self.cursor) else {
            return Options {
                cascade: None,
                restart_identity: None,
                via_cascade: false,
            };
        };
        let via_cascade = if named(current) && !self.fired.contains(table) {
            false
        } else if let Some(ahead) = self.statements[self.cursor + 1..].iter().position(named) {
            self.cursor += 1 + ahead;
            self.fired.clear();
            false
        } else {
            // Not named: a partition or child of a named table, or reached by CASCADE.
            // By the table's ancestors, not by every member of the map: a
            // statement may reach thousands of partitions.
            let below_named = current.targets.iter().any(|t| {
                partitions.ancestors(table).any(|a| t.is(a))
                    || partitions.root_of(table).is_some_and(|root| t.is(root))
            });
            current.cascade && !below_named
        };
        self.fired.insert(table.clone());
        let s = &self.statements[self.cursor];
        Options {
            cascade: Some(s.cascade),
            restart_identity: Some(s.restart_identity),
            via_cascade,
        }
    }

    /// The options of `table`'s truncate, if its trigger announced it.
    pub fn take(&mut self, table: &TableName) -> Option<Options> {
        self.pending.remove(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(schema: Option<&str>, name: &str) -> Target {
        Target {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn statements_are_read_past_comments_quotes_and_other_statements() {
        let q = r#"BEGIN; -- TRUNCATE nothing CASCADE
            SELECT 'TRUNCATE x CASCADE;'; /* TRUNCATE y; */ DO $$ BEGIN TRUNCATE z CASCADE; END $$;
            truncate TABLE ONLY Public."Order ""Items""", b * RESTART IDENTITY;
            TRUNCATE c.d.e CASCADE; COMMIT"#;
        assert_eq!(
            statements(q),
            vec![
                Statement {
                    targets: vec![
                        target(Some("public"), r#"Order "Items""#),
                        target(None, "b")
                    ],
                    cascade: false,
                    restart_identity: true,
                },
                Statement {
                    targets: vec![target(Some("d"), "e")],
                    cascade: true,
                    restart_identity: false,
                },
            ]
        );
        assert_eq!(statements("TRUNCATE"), vec![]);
        assert_eq!(statements("TRUNCATE 'unterminated"), vec![]);
        assert_eq!(
            statements("TRUNCATE a CONTINUE IDENTITY RESTRICT")[0],
            Statement {
                targets: vec![target(None, "a")],
                cascade: false,
                restart_identity: false
            }
        );
    }

    fn msg(table: &str, start: &str, query: Option<&str>) -> String {
        serde_json::json!({"schema": "public", "table": table, "statement_start": start, "query": query})
            .to_string()
    }

    fn options(cascade: bool, restart: bool, via: bool) -> Option<Options> {
        Some(Options {
            cascade: Some(cascade),
            restart_identity: Some(restart),
            via_cascade: via,
        })
    }

    #[test]
    fn firings_are_matched_to_their_statement() {
        let map = PartitionMap::new([(
            TableName::new("public", "p_1"),
            crate::capture::partition::Member {
                root: TableName::new("public", "p"),
                parent: TableName::new("public", "p"),
            },
        )]);
        let mut t = Tracker::default();
        let q = "TRUNCATE a; TRUNCATE parent RESTART IDENTITY CASCADE; TRUNCATE p CASCADE";
        for (table, query) in [
            ("a", Some(q)),
            ("parent", None),
            ("child", None),
            ("p", None),
            ("p_1", None),
        ] {
            t.message(&msg(table, "t1", query), &map).unwrap();
        }
        let take = |t: &mut Tracker, n: &str| t.take(&TableName::new("public", n));
        assert_eq!(take(&mut t, "a"), options(false, false, false));
        assert_eq!(take(&mut t, "parent"), options(true, true, false));
        assert_eq!(take(&mut t, "child"), options(true, true, true));
        assert_eq!(take(&mut t, "p"), options(true, false, false));
        assert_eq!(
            take(&mut t, "p_1"),
            options(true, false, false),
            "a partition is not cascaded to"
        );
        assert_eq!(take(&mut t, "a"), None, "taken once");
        // A new client statement with the same text starts over.
        t.message(&msg("a", "t2", Some("TRUNCATE a")), &map)
            .unwrap();
        assert_eq!(take(&mut t, "a"), options(false, false, false));
        // From a function: the query text holds no TRUNCATE.
        t.message(&msg("a", "t3", Some("SELECT wipe()")), &map)
            .unwrap();
        assert_eq!(
            take(&mut t, "a"),
            Some(Options {
                cascade: None,
                restart_identity: None,
                via_cascade: false
            })
        );
    }
}
