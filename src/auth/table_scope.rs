//! One pattern of a user's or token's tables ([`ScopedPattern`]): a
//! `schema.table` pattern as capture's config has it ([`TablePattern`]),
//! for every source database, or named for one: `shop-eu:public.orders`.
//!
//! A source name is lower-case letters, digits, `_` and `-`, so the `:` that
//! ends it cannot be part of it; a schema whose name holds a `:` is written
//! quoted (`"a:b".t`), as one holding a `.` already is. A scope stored
//! before sources, with such a schema unquoted, was quoted by `setup`
//! ([`crate::store::legacy_scopes`]): none changes its meaning.

use crate::store::sources::SourceName;
use crate::table::{TableName, TablePattern};

/// `schema.table` in every source, or `source:schema.table` in one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedPattern {
    text: String,
    /// The one source it is limited to; `None`: every source.
    source: Option<SourceName>,
    table: TablePattern,
}

impl ScopedPattern {
    /// Parses one pattern; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<ScopedPattern, String> {
        let how = "write schema.table for every source database, or source:schema.table for one \
                   (e.g. shop-eu:public.orders)";
        let (source, rest) = match split_source(text) {
            None => (None, text),
            Some(("", _)) => {
                return Err(format!(
                    "invalid table scope {text:?}: no source name before ':'; {how}"
                ))
            }
            Some((name, _)) if name == SourceName::PGTRAIL => {
                return Err(format!(
                    "invalid table scope {text:?}: pgtrail's own events are no source database's \
                     tables (whether a user sees them is its role's business); {how}"
                ))
            }
            Some((name, rest)) => {
                let source = SourceName::parse(name)
                    .map_err(|e| format!("invalid table scope {text:?}: {e}; {how}"))?;
                (Some(source), rest)
            }
        };
        let table = TablePattern::parse(rest).map_err(|e| match source {
            Some(_) => format!("in table scope {text:?}: {e}"),
            None => e.to_string(),
        })?;
        Ok(ScopedPattern {
            text: text.to_owned(),
            source,
            table,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The source it is limited to; `None` for every source.
    pub fn source(&self) -> Option<&str> {
        self.source.as_ref().map(SourceName::as_str)
    }

    /// The `schema.table` pattern, in whichever source.
    pub fn table(&self) -> &TablePattern {
        &self.table
    }

    /// Whether an entry of `table` captured from `source` matches.
    pub fn matches(&self, source: &str, table: &TableName) -> bool {
        self.source().is_none_or(|s| s == source) && self.table.matches(table)
    }

    /// Whether every table of every source `other` matches, this matches too.
    pub fn covers(&self, other: &ScopedPattern) -> bool {
        let source = match (self.source(), other.source()) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        };
        source && self.table.covers(&other.table)
    }
}

impl std::fmt::Display for ScopedPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `(source, schema.table)` when `text` starts with `source:`: an unquoted
/// first part that holds a `:` before its `.`.
fn split_source(text: &str) -> Option<(&str, &str)> {
    if text.starts_with('"') {
        return None;
    }
    let end = text.find(['.', '"']).unwrap_or(text.len());
    let colon = text[..end].find(':')?;
    Some((&text[..colon], &text[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, n: &str) -> TableName {
        TableName::new(s, n)
    }

    #[test]
    fn a_source_prefix_limits_the_pattern_to_that_source() {
        let p = ScopedPattern::parse("shop-eu:public.orders").unwrap();
        assert_eq!(p.source(), Some("shop-eu"));
        assert_eq!(p.as_str(), "shop-eu:public.orders");
        assert!(p.matches("shop-eu", &t("public", "orders")));
        assert!(!p.matches("shop-us", &t("public", "orders")));
        assert!(!p.matches("shop-eu", &t("public", "items")));
        let every = ScopedPattern::parse("public.orders").unwrap();
        assert_eq!(every.source(), None);
        assert!(every.matches("shop-eu", &t("public", "orders")));
        assert!(every.matches("shop-us", &t("public", "orders")));
        let wild = ScopedPattern::parse("a_1:sales.*").unwrap();
        assert!(wild.matches("a_1", &t("sales", "x")));
        // A quoted schema may hold a colon, and names no source.
        let quoted = ScopedPattern::parse("\"a:b\".t").unwrap();
        assert_eq!(quoted.source(), None);
        assert!(quoted.matches("x", &t("a:b", "t")));
        let after_dot = ScopedPattern::parse("public.\"a:b\"").unwrap();
        assert_eq!(after_dot.source(), None);
    }

    #[test]
    fn malformed_scopes_say_what_is_wrong() {
        for (bad, says) in [
            (":public.x", "no source name before ':'"),
            ("bad name:x.y", "not a valid source name"),
            ("Shop:x.y", "not a valid source name"),
            ("pgtrail:pgtrail.export", "pgtrail's own events"),
            ("a:nodot", "missing '.'"),
            ("a:", "empty schema or table name"),
        ] {
            let e = ScopedPattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains(bad) || e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_source_pattern_is_within_one_for_every_source_not_the_other_way() {
        let p = |s: &str| ScopedPattern::parse(s).unwrap();
        assert!(p("public.*").covers(&p("a:public.orders")));
        assert!(p("a:public.*").covers(&p("a:public.orders")));
        assert!(!p("a:public.*").covers(&p("b:public.orders")));
        assert!(!p("a:public.*").covers(&p("public.orders")));
        assert!(!p("a:public.orders").covers(&p("a:public.*")));
    }
}
