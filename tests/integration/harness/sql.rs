//! Plain SQL plumbing for the tests: connecting with tokio-postgres, quoting names and literals,
//! and reading a query's rows as a list.

use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls};

/// Connect with tokio-postgres and spawn the connection on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The first column of every row `sql` returns, in order.
pub async fn query_column<T>(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<T>
where
    T: for<'a> FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The first two columns of every row `sql` returns, in order.
pub async fn query_pairs<A, B>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<(A, B)>
where
    A: for<'a> FromSql<'a>,
    B: for<'a> FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The first column of the one row `sql` returns.
pub async fn query_value<T>(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T
where
    T: for<'a> FromSql<'a>,
{
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The ids (the first column, a bigint) of every row `sql` returns, in order.
pub async fn query_ids(client: &Client, sql: &str) -> Vec<i64> {
    query_column(client, sql, &[]).await
}

/// The number a `SELECT count(*) …` returns.
pub async fn query_count(client: &Client, sql: &str) -> i64 {
    query_value(client, sql, &[]).await
}
