//! The central check, [`assert_store_matches_source`]: replay a table's audit entries in id order
//! and compare the result with the table's real rows, rendered in the store's value shapes (see
//! [`source_rows`]). Together with exact per-action counts it catches losses, duplicates and
//! wrong images.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tokio_postgres::Client;

use super::{qualified, query_pairs, quote_ident, quote_literal, source_table_entries, Entry};

/// Output settings a replication session pins (see the wal2json notes); the comparator renders
/// source values under the same settings so that text forms agree.
pub const OUTPUT_SETTINGS: &str = "SET DateStyle = 'ISO'; SET TimeZone = 'UTC'; \
     SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3;";

/// The rows of `schema.table` as JSON objects in the store's value shapes: integers and floats as
/// numbers (NaN/±Infinity as null), numeric as its exact text, bool as bool, json/jsonb nested,
/// everything else (bytea, timestamps, arrays, uuid, domains, …) as its text output under the
/// replication session's output settings.
pub async fn source_rows(source: &Client, schema: &str, table: &str) -> Vec<Value> {
    let cols = source
        .query(
            "SELECT a.attname::text, t.typname::text, t.typtype::text \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = format('%I.%I', $1::text, $2::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .expect("read columns");
    assert!(
        !cols.is_empty() && cols.len() <= 50,
        "{schema}.{table}: {} columns (1..=50 supported)",
        cols.len()
    );
    let mut parts = Vec::new();
    for c in &cols {
        let name: String = c.get(0);
        let typ: String = c.get(1);
        let kind: String = c.get(2);
        let col = format!("t.{}", quote_ident(&name));
        // The type's output function, as wal2json uses it (a ::text cast would trim char(n)).
        let text =
            format!("CASE WHEN {col} IS NULL THEN NULL ELSE to_json(format('%s', {col})) END");
        let expr = if kind != "b" && kind != "e" {
            // Domains (and anything exotic) arrive as text.
            text
        } else {
            match typ.as_str() {
                "int2" | "int4" | "int8" | "oid" | "bool" => format!("to_json({col})"),
                "float4" | "float8" => {
                    format!("CASE WHEN {col}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE to_json({col}) END")
                }
                "numeric" => format!("CASE WHEN {col}::text IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE to_json({col}::text) END"),
                "json" | "jsonb" => format!("{col}::json"),
                _ => text,
            }
        };
        parts.push(format!("{}, {expr}", quote_literal(&name)));
    }
    let sql = format!(
        "SELECT json_build_object({})::text FROM {} t",
        parts.join(", "),
        qualified(schema, table)
    );
    source
        .batch_execute(&format!("BEGIN; {OUTPUT_SETTINGS}"))
        .await
        .unwrap();
    let rows = source.query(&sql, &[]).await;
    source.batch_execute("COMMIT").await.unwrap();
    rows.expect("read source rows")
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).expect("row json"))
        .collect()
}

/// Does `row` contain every field of `subset` with an equal value?
fn contains_fields(row: &Value, subset: &Value) -> bool {
    match (row.as_object(), subset.as_object()) {
        (Some(r), Some(s)) => s.iter().all(|(k, v)| r.get(k) == Some(v)),
        _ => false,
    }
}

/// Key of `img` under the key columns `cols`, as canonical JSON text; None if a column is missing.
fn key_text(img: &Value, cols: &[String]) -> Option<String> {
    let obj = img.as_object()?;
    let vals: Option<Vec<&Value>> = cols.iter().map(|c| obj.get(c)).collect();
    Some(serde_json::to_string(&vals?).unwrap())
}

fn key_columns(pk: &Value) -> Vec<String> {
    pk.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Replay entries (of one table, in id order) into the multiset of rows they imply, checking the
/// per-action shape rules on the way: rows with a primary key are tracked by key (an INSERT of a
/// present key is a duplicate), rows without one as a multiset matched on the whole before image.
pub fn replay(entries: &[Entry]) -> Result<Vec<Value>, String> {
    replay_partitioned(entries, &HashMap::new())
}

/// [`replay`] for a partitioned table, whose entries name the partition in `details.partition`:
/// a TRUNCATE of one partition empties only the rows that were last written to it or to a
/// partition below it. `ancestors` maps each partition (`schema.name`) to the partitions above it.
pub fn replay_partitioned(
    entries: &[Entry],
    ancestors: &HashMap<String, Vec<String>>,
) -> Result<Vec<Value>, String> {
    // Each replayed row with the partition its last entry put it in.
    let mut keyed: HashMap<String, (Value, Option<String>)> = HashMap::new();
    let mut keyless: Vec<(Value, Option<String>)> = Vec::new();
    for e in entries {
        let partition = e
            .details
            .get("partition")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ctx = || format!("entry {} ({} {}.{})", e.id, e.action, e.schema, e.table);
        // Every primary_key field must agree with the image it was taken from.
        let check_key = |img: &Value| -> Result<(), String> {
            if !e.primary_key.is_null()
                && (!e.primary_key.is_object() || !contains_fields(img, &e.primary_key))
            {
                return Err(format!(
                    "{}: primary_key {} does not match the image {}",
                    ctx(),
                    e.primary_key,
                    img
                ));
            }
            Ok(())
        };
        let cols = key_columns(&e.primary_key);
        // Take the row the before image designates out of the replayed table.
        let mut take = |before: &Value| -> Result<Value, String> {
            if cols.is_empty() {
                let at = keyless
                    .iter()
                    .position(|(r, _)| contains_fields(r, before))
                    .ok_or_else(|| {
                        format!("{}: no replayed row matches before {}", ctx(), before)
                    })?;
                Ok(keyless.remove(at).0)
            } else {
                let k = key_text(before, &cols).ok_or_else(|| {
                    format!("{}: before {} lacks key columns {cols:?}", ctx(), before)
                })?;
                let (row, _) = keyed.remove(&k).ok_or_else(|| {
                    format!("{}: no replayed row with key {k} (before {before})", ctx())
                })?;
                if !contains_fields(&row, before) {
                    return Err(format!(
                        "{}: before {} differs from the replayed row {}",
                        ctx(),
                        before,
                        row
                    ));
                }
                Ok(row)
            }
        };
        match e.action.as_str() {
            "INSERT" | "UPDATE" => {
                if !e.after.is_object() {
                    return Err(format!("{}: no after image: {e:?}", ctx()));
                }
                check_key(&e.after)?;
                if e.action == "INSERT" {
                    if !e.before.is_null() || !e.changed_columns.is_null() {
                        return Err(format!(
                            "{}: INSERT must have before=null, changed_columns=null: {e:?}",
                            ctx()
                        ));
                    }
                } else {
                    let by = if e.before.is_object() {
                        e.before.clone()
                    } else {
                        e.primary_key.clone()
                    };
                    take(&by)?;
                }
                if cols.is_empty() {
                    keyless.push((e.after.clone(), partition.clone()));
                } else {
                    let k = key_text(&e.after, &cols).unwrap();
                    if keyed
                        .insert(k.clone(), (e.after.clone(), partition.clone()))
                        .is_some()
                    {
                        return Err(format!(
                            "{}: key {k} is already present (a duplicate?)",
                            ctx()
                        ));
                    }
                }
            }
            "DELETE" => {
                if !e.after.is_null() || !e.before.is_object() || !e.changed_columns.is_null() {
                    return Err(format!("{}: DELETE must have after=null, before=object, changed_columns=null: {e:?}", ctx()));
                }
                check_key(&e.before)?;
                take(&e.before)?;
            }
            "TRUNCATE" => {
                if !(e.primary_key.is_null()
                    && e.before.is_null()
                    && e.after.is_null()
                    && e.changed_columns.is_null())
                {
                    return Err(format!("{}: TRUNCATE must have primary_key/before/after/changed_columns null: {e:?}", ctx()));
                }
                match &partition {
                    None => {
                        keyed.clear();
                        keyless.clear();
                    }
                    Some(p) => {
                        let emptied = |row_partition: &Option<String>| {
                            row_partition.as_ref().is_some_and(|rp| {
                                rp == p || ancestors.get(rp).is_some_and(|a| a.contains(p))
                            })
                        };
                        keyed.retain(|_, (_, rp)| !emptied(rp));
                        keyless.retain(|(_, rp)| !emptied(rp));
                    }
                }
            }
            // A schema change: no row changes; DDL tests check these entries themselves.
            "DDL" => {}
            other => return Err(format!("{}: unknown action {other:?}", ctx())),
        }
    }
    Ok(keyed
        .into_values()
        .chain(keyless)
        .map(|(row, _)| row)
        .collect())
}

/// Each partition below `schema.table` (`schema.name`) with the partitions above it, from the
/// source's catalog; empty for a table that is not partitioned.
pub async fn partition_ancestors(
    source: &Client,
    schema: &str,
    table: &str,
) -> HashMap<String, Vec<String>> {
    query_pairs(
        source,
            "SELECT format('%s.%s', n.nspname, c.relname),
                    array(SELECT format('%s.%s', an.nspname, ac.relname)
                          FROM pg_partition_ancestors(t.relid) a(relid)
                          JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
                          WHERE a.relid <> t.relid)
             FROM pg_partition_tree(format('%I.%I', $1::text, $2::text)::regclass) t
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE t.level > 0",
        &[&schema, &table],
    )
    .await
    .into_iter()
    .collect()
}

/// Replay the store's entries for `schema.table` and compare with the table's actual rows.
pub async fn assert_store_matches_source(
    source: &Client,
    store: &Client,
    schema: &str,
    table: &str,
) {
    assert_store_matches_source_named(source, store, None, schema, table).await;
}

/// [`assert_store_matches_source`] with the entries of the source named `name` only (`None`:
/// every source's), for a store that holds several sources' entries.
pub async fn assert_store_matches_source_named(
    source: &Client,
    store: &Client,
    name: Option<&str>,
    schema: &str,
    table: &str,
) {
    let entries = source_table_entries(store, name, schema, table).await;
    let ancestors = partition_ancestors(source, schema, table).await;
    let replayed = replay_partitioned(&entries, &ancestors)
        .unwrap_or_else(|e| panic!("replaying {schema}.{table}: {e}"));
    let actual = source_rows(source, schema, table).await;
    let canon = |rows: &[Value]| {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        v.sort();
        v
    };
    let (replayed, actual) = (canon(&replayed), canon(&actual));
    if replayed != actual {
        let mut missing: BTreeMap<&String, i64> = BTreeMap::new();
        for r in &actual {
            *missing.entry(r).or_default() += 1;
        }
        for r in &replayed {
            *missing.entry(r).or_default() -= 1;
        }
        let only_source: Vec<_> = missing.iter().filter(|(_, n)| **n > 0).take(10).collect();
        let only_store: Vec<_> = missing.iter().filter(|(_, n)| **n < 0).take(10).collect();
        panic!(
            "{schema}.{table}: replaying {} entries gives {} rows, the source has {} rows\n\
             in the source but not the replay (first 10): {only_source:#?}\n\
             in the replay but not the source (first 10): {only_store:#?}",
            entries.len(),
            replayed.len(),
            actual.len()
        );
    }
}
