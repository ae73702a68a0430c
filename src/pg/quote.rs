//! Quoting identifiers and literals for SQL text that cannot use parameters
//! (DDL in `setup`, the SQL shown to a DBA before it runs).

/// Quotes an identifier for SQL text, doubling embedded quotes.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes a string literal for SQL text, doubling embedded single quotes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
