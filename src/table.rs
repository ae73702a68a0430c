//! Table names and the capture patterns (`public.*`, `"Sales EU"."Order Items"`)
//! that choose which tables are audited.
//!
//! Names are kept exactly as PostgreSQL stores them (case-sensitive, unquoted),
//! which is also how wal2json prints them. Patterns match case-sensitively too,
//! like wal2json's own table filters.

use std::fmt;

use crate::pg::quote_ident;

/// A table, by schema and name, both as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name quoted for use in SQL text: `"Sales EU"."Order Items"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::str::FromStr for TableName {
    type Err = PatternError;

    /// Parses `schema.table` (parts may be double-quoted); no wildcards.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let pattern = TablePattern::parse(text)?;
        match (pattern.schema, pattern.table) {
            (Glob::Exact(schema), Glob::Exact(name)) => Ok(TableName { schema, name }),
            _ => Err(PatternError {
                pattern: text.to_owned(),
                reason: "a table name cannot contain '*' unless quoted",
            }),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One `schema.table` pattern; `*` in an unquoted part matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    text: String,
    schema: Glob,
    table: Glob,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Glob {
    Exact(String),
    /// Literal pieces separated by `*`.
    Wild(Vec<String>),
}

impl Glob {
    /// `*` becomes `%`; LIKE's own `%`, `_` and `\` are escaped.
    fn sql_like(&self) -> String {
        let escape = |part: &str| {
            part.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        };
        match self {
            Glob::Exact(name) => escape(name),
            Glob::Wild(pieces) => pieces
                .iter()
                .map(|p| escape(p))
                .collect::<Vec<_>>()
                .join("%"),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Glob::Exact(e) => e == s,
            Glob::Wild(pieces) => wildcard_match(pieces, s),
        }
    }

    /// Whether every name `other` matches, this glob matches too. A `*` of
    /// `other` stands in as a character none of this glob's literal pieces
    /// hold: only a `*` here can match it, and whatever that `*` matches it
    /// matches in its place, so the one test decides for every name.
    fn covers(&self, other: &Glob) -> bool {
        match other {
            Glob::Exact(name) => self.matches(name),
            Glob::Wild(pieces) => {
                let literal = |c: char| match self {
                    Glob::Exact(e) => e.contains(c),
                    Glob::Wild(mine) => mine.iter().any(|p| p.contains(c)),
                };
                // A glob holding all 6,400 private-use characters covers
                // nothing wild (a refusal, never a wrong yes).
                let Some(stand_in) = ('\u{E000}'..='\u{F8FF}').find(|c| !literal(*c)) else {
                    return false;
                };
                self.matches(&pieces.join(stand_in.encode_utf8(&mut [0; 4])))
            }
        }
    }
}

fn wildcard_match(pieces: &[String], s: &str) -> bool {
    // pieces[0] must be a prefix, the last a suffix, the rest found in order between.
    let (first, rest) = match pieces.split_first() {
        Some(x) => x,
        None => return s.is_empty(),
    };
    let Some(mut remaining) = s.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for piece in middle {
        match remaining.find(piece.as_str()) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid table pattern {pattern:?}: {reason}; write schema.table, e.g. \"public.*\" or \"\\\"Sales EU\\\".orders\"")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl TablePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_owned(),
            reason,
        };
        let (schema, rest) = parse_part(text).map_err(err)?;
        let rest = rest
            .strip_prefix('.')
            .ok_or_else(|| err("missing '.' between schema and table"))?;
        let (table, rest) = parse_part(rest).map_err(err)?;
        if !rest.is_empty() {
            return Err(err("unexpected text after the table name"));
        }
        Ok(TablePattern {
            text: text.to_owned(),
            schema,
            table,
        })
    }

    pub fn matches(&self, table: &TableName) -> bool {
        self.schema.matches(&table.schema) && self.table.matches(&table.name)
    }

    /// Whether every table `other` matches, this pattern matches too
    /// (`sales.*` covers `sales.orders` and `sales.ord*`, not `*.orders`).
    pub fn covers(&self, other: &TablePattern) -> bool {
        self.schema.covers(&other.schema) && self.table.covers(&other.table)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern as two SQL `LIKE` patterns (schema, table), for matching
    /// inside the source database (the event trigger that enrols new tables).
    pub fn sql_like(&self) -> (String, String) {
        (self.schema.sql_like(), self.table.sql_like())
    }
}

/// What wal2json's `add-tables` option is set to: entries of an exact or
/// any (`*`) schema and table. It is fixed for a session, so it is kept to
/// tell whether a table that appears later would be decoded at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wal2jsonFilter {
    /// (schema, table); `None` is wal2json's `*`.
    entries: Vec<(Option<String>, Option<String>)>,
}

impl Wal2jsonFilter {
    /// The include patterns, widened where wal2json cannot express them:
    /// wal2json knows `*` only as a whole schema or table name, so a partial
    /// glob widens to `*`; the daemon's own filter then narrows it exactly.
    pub fn from_patterns(patterns: &[TablePattern]) -> Self {
        let part = |g: &Glob| match g {
            Glob::Exact(name) => Some(name.clone()),
            Glob::Wild(_) => None,
        };
        Wal2jsonFilter {
            entries: patterns
                .iter()
                .map(|p| (part(&p.schema), part(&p.table)))
                .collect(),
        }
    }

    /// Adds every table of `schema` (partitions live wherever they were created).
    pub fn add_schema(&mut self, schema: &str) {
        let entry = (Some(schema.to_owned()), None);
        if !self.covers_schema(schema) {
            self.entries.push(entry);
        }
    }

    fn covers_schema(&self, schema: &str) -> bool {
        self.entries
            .iter()
            .any(|(s, t)| t.is_none() && s.as_ref().is_none_or(|s| s == schema))
    }

    pub fn covers(&self, table: &TableName) -> bool {
        self.entries.iter().any(|(s, t)| {
            s.as_ref().is_none_or(|s| *s == table.schema)
                && t.as_ref().is_none_or(|t| *t == table.name)
        })
    }

    /// The option's value: `schema.table` entries, special characters escaped.
    pub fn to_option(&self) -> String {
        let part = |p: &Option<String>| {
            p.as_deref()
                .map(escape_wal2json)
                .unwrap_or_else(|| "*".into())
        };
        self.entries
            .iter()
            .map(|(s, t)| format!("{}.{}", part(s), part(t)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn escape_wal2json(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if matches!(c, ' ' | '\'' | ',' | '.' | '*' | '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses one quoted or unquoted part and returns it with what follows it.
fn parse_part(s: &str) -> Result<(Glob, &str), &'static str> {
    if let Some(body) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if matches!(chars.peek(), Some((_, '"'))) {
                    chars.next();
                    name.push('"');
                } else {
                    return Ok((Glob::Exact(name), &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        Err("unterminated quoted name")
    } else {
        let end = s.find('.').unwrap_or(s.len());
        let part = &s[..end];
        if part.is_empty() {
            return Err("empty schema or table name");
        }
        if part.contains('"') {
            return Err("a quote inside an unquoted name");
        }
        let glob = if part.contains('*') {
            Glob::Wild(part.split('*').map(str::to_owned).collect())
        } else {
            Glob::Exact(part.to_owned())
        };
        Ok((glob, &s[end..]))
    }
}

/// Which tables are captured: those matching an include pattern and no exclude pattern.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    pub include: Vec<TablePattern>,
    pub exclude: Vec<TablePattern>,
}

impl TableFilter {
    pub fn matches(&self, table: &TableName) -> bool {
        matches!(self.explain(table), FilterVerdict::Included(_))
    }

    /// True when some include pattern's schema part matches `schema`: DDL
    /// there is captured.
    pub fn captures_schema(&self, schema: &str) -> bool {
        self.include.iter().any(|p| p.schema.matches(schema))
    }

    /// Whether a table is captured, and which pattern decided it. pgtrail's
    /// own schema in the source is never captured, whatever the patterns say.
    pub fn explain(&self, table: &TableName) -> FilterVerdict<'_> {
        if table.schema == "pgtrail" {
            return FilterVerdict::NotIncluded;
        }
        match self.include.iter().find(|p| p.matches(table)) {
            None => FilterVerdict::NotIncluded,
            Some(include) => match self.exclude.iter().find(|p| p.matches(table)) {
                Some(exclude) => FilterVerdict::Excluded(exclude),
                None => FilterVerdict::Included(include),
            },
        }
    }
}

/// Why a table is or is not captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterVerdict<'a> {
    Included(&'a TablePattern),
    Excluded(&'a TablePattern),
    NotIncluded,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, n: &str) -> TableName {
        TableName::new(s, n)
    }

    #[test]
    fn wildcards_match_like_shell_globs() {
        let p = TablePattern::parse("public.*").unwrap();
        assert!(p.matches(&t("public", "orders")));
        assert!(!p.matches(&t("billing", "orders")));
        let p = TablePattern::parse("app*.ord*s").unwrap();
        assert!(p.matches(&t("app_eu", "orders")));
        assert!(p.matches(&t("app", "ords")));
        assert!(!p.matches(&t("app", "ord")));
        assert!(!p.matches(&t("xapp", "orders")));
        let p = TablePattern::parse("*.*").unwrap();
        assert!(p.matches(&t("a", "b")));
    }

    #[test]
    fn quoted_parts_are_exact_and_keep_dots_and_quotes() {
        let p = TablePattern::parse(r#""Sales EU"."Order ""Items"".v2""#).unwrap();
        assert!(p.matches(&t("Sales EU", r#"Order "Items".v2"#)));
        assert!(!p.matches(&t("sales eu", r#"Order "Items".v2"#)));
        let p = TablePattern::parse(r#""a*".b"#).unwrap();
        assert!(!p.matches(&t("ab", "b")));
        assert!(p.matches(&t("a*", "b")));
    }

    #[test]
    fn a_pattern_covers_what_matches_only_tables_it_matches() {
        let covers = |a: &str, b: &str| {
            TablePattern::parse(a)
                .unwrap()
                .covers(&TablePattern::parse(b).unwrap())
        };
        for (a, b) in [
            ("sales.*", "sales.orders"),
            ("sales.*", "sales.ord*"),
            ("sales.*", "sales.*"),
            ("*.*", "*.orders"),
            ("s*.o*s", "sa*.or*rs"),
            ("s*.*", "\"s*\".x"),
            ("\"a*\".b", "\"a*\".b"),
            ("a*b*c.t", "a*xb*yc.t"),
        ] {
            assert!(covers(a, b), "{a} covers {b}");
        }
        for (a, b) in [
            ("sales.orders", "sales.*"),
            ("sales.*", "*.orders"),
            ("sales.*", "public.orders"),
            ("s*.o*s", "s*.o*"),
            ("\"a*\".b", "a*.b"),
            ("a*b*c.t", "a*c.t"),
            ("ab*.t", "a*b.t"),
        ] {
            assert!(!covers(a, b), "{a} does not cover {b}");
        }
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in [
            "public",
            "public.",
            ".x",
            "\"unterminated.x",
            "a.b.c",
            "a.\"b\"c",
        ] {
            assert!(TablePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = TableFilter {
            include: vec![TablePattern::parse("public.*").unwrap()],
            exclude: vec![TablePattern::parse("public.sessions").unwrap()],
        };
        assert!(f.matches(&t("public", "orders")));
        assert!(!f.matches(&t("public", "sessions")));
    }

    #[test]
    fn wal2json_filter_escapes_special_characters() {
        let option = |pattern: &str| {
            Wal2jsonFilter::from_patterns(&[TablePattern::parse(pattern).unwrap()]).to_option()
        };
        assert_eq!(option(r#""Sales EU"."a.b*c""#), r"Sales\ EU.a\.b\*c");
        assert_eq!(t("public", "orders").quoted(), r#""public"."orders""#);
        assert_eq!(option("app*.orders"), "*.orders");
        assert_eq!(
            TablePattern::parse(r#"app*_x."50%"*"#.replace('\\', "").as_str())
                .map(|p| p.sql_like())
                .ok(),
            None,
            "a quote inside an unquoted part is rejected"
        );
        assert_eq!(
            TablePattern::parse("app*_x.*").unwrap().sql_like(),
            (r"app%\_x".to_owned(), "%".to_owned())
        );
        assert_eq!(
            TablePattern::parse(r#""50%".t"#).unwrap().sql_like(),
            (r"50\%".to_owned(), "t".to_owned())
        );
        assert_eq!(option(r#""Sales EU".*"#), r"Sales\ EU.*");
    }

    #[test]
    fn the_stream_filter_widens_for_partitions_and_knows_what_it_covers() {
        let patterns = [
            TablePattern::parse("public.orders").unwrap(),
            TablePattern::parse("app*.x*").unwrap(),
        ];
        let mut f = Wal2jsonFilter::from_patterns(&patterns);
        assert_eq!(f.to_option(), "public.orders,*.*");
        let mut f2 = Wal2jsonFilter::from_patterns(&patterns[..1]);
        assert!(!f2.covers(&t("public", "orders_2024")));
        f2.add_schema("public");
        f2.add_schema("public");
        f2.add_schema("Sales EU");
        assert_eq!(f2.to_option(), r"public.orders,public.*,Sales\ EU.*");
        assert!(f2.covers(&t("public", "orders_2024")));
        assert!(!f2.covers(&t("archive", "orders_2024")));
        f.add_schema("public");
        assert_eq!(f.to_option(), "public.orders,*.*", "already covered");
    }
}
