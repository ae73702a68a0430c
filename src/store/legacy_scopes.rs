//! Table scopes of users and tokens stored before the store had sources
//! (before migration 15), kept meaning what they meant.
//!
//! A scope was then a `schema.table` pattern, and an unquoted schema could
//! hold a `:` (`a:b.orders`: schema `a:b`). Since sources, a `:` in an
//! unquoted schema ends a source name (`shop-eu:public.orders`), so the same
//! text would name source `a` and schema `b`: another table, or more of
//! them. [`requote`] runs in migration 15's transaction, before it: each
//! such scope is written again with its schema quoted (`"a:b".orders`),
//! which both grammars read as schema `a:b`. A schema pattern with `*`
//! cannot be quoted (a quoted part is literal), so such a scope stops the
//! migration, naming it and how to change it. A scope stored since has no
//! such question: it was checked against the grammar with sources.

use tokio_postgres::Transaction;

use super::StoreError;

/// The migration whose transaction [`requote`] runs in, first.
pub const SOURCES_MIGRATION: i32 = 15;

/// `pattern` as it must be written under the grammar with sources to mean
/// what it meant before them: `Ok(None)` when it already does, `Ok(Some)`
/// with its schema quoted, or an error for a schema pattern with `*`
/// holding a `:`, which can no longer be written.
pub fn requoted(pattern: &str) -> Result<Option<String>, String> {
    if pattern.starts_with('"') {
        return Ok(None);
    }
    let end = pattern.find('.').unwrap_or(pattern.len());
    let schema = &pattern[..end];
    if !schema.contains(':') {
        return Ok(None);
    }
    if schema.contains('*') {
        return Err(format!(
            "{pattern:?}: a schema pattern holding ':' was written before a scope could name a \
             source, and now reads as source {:?}; a quoted schema is literal, so no pattern \
             means what it meant",
            &schema[..schema.find(':').unwrap_or(0)]
        ));
    }
    let quoted = schema.replace('"', "\"\"");
    Ok(Some(format!("\"{quoted}\"{}", &pattern[end..])))
}

/// Rewrites the stored scopes of users and tokens that [`requoted`] quotes;
/// refuses, changing nothing, when one cannot be.
pub async fn requote(tx: &Transaction<'_>) -> Result<(), StoreError> {
    for (kind, table) in [("user", "pgtrail.users"), ("token", "pgtrail.tokens")] {
        let rows = tx
            .query(&format!("SELECT name, tables FROM {table}"), &[])
            .await?;
        for row in rows {
            let name: String = row.get(0);
            let tables: Vec<String> = row.get(1);
            let mut changed = false;
            let mut out = Vec::with_capacity(tables.len());
            for pattern in tables {
                match requoted(&pattern) {
                    Ok(None) => out.push(pattern),
                    Ok(Some(new)) => {
                        tracing::info!(%kind, %name, old = %pattern, new = %new, "a table scope stored before sources is quoted to keep its meaning");
                        changed = true;
                        out.push(new);
                    }
                    Err(why) => {
                        return Err(StoreError::LegacyScope(format!(
                            "the {kind} {name:?} is limited to {why}"
                        )))
                    }
                }
            }
            if changed {
                tx.execute(
                    &format!("UPDATE {table} SET tables = $2 WHERE name = $1"),
                    &[&name, &out],
                )
                .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_in_an_unquoted_schema_is_quoted_and_nothing_else_changes() {
        let q = |p: &str| requoted(p).unwrap();
        assert_eq!(q("a:b.orders"), Some(r#""a:b".orders"#.to_owned()));
        assert_eq!(q(":x.t*"), Some(r#"":x".t*"#.to_owned()));
        for same in [
            "public.orders",
            "sales.*",
            r#""a:b".t"#,
            "public.a:b",
            "x.\"c:d\"",
        ] {
            assert_eq!(q(same), None, "{same}");
        }
        let e = requoted("shop:*.orders").unwrap_err();
        assert!(
            e.contains("\"shop:*.orders\"") && e.contains("source \"shop\""),
            "{e}"
        );
    }
}
