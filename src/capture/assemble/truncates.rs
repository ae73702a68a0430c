//! TRUNCATE records: one entry per statement and captured table (of its
//! root, for a partition), with the options the context trigger announced
//! ([`crate::capture::truncate`]) in `details`.

use super::{open_mut, AssembleError, Assembler};
use crate::capture::truncate;
use crate::entry::{Action, AuditEntry, Event};
use crate::pg::Lsn;
use crate::table::TableName;

impl Assembler {
    /// A truncated table. Truncating a partitioned table also sends a record
    /// for each partition below it, which that table's entry already covers.
    pub(super) fn on_truncate(
        &mut self,
        lsn: Lsn,
        leaf: TableName,
        out: &mut Vec<Event>,
    ) -> Result<(), AssembleError> {
        let open = open_mut(&mut self.open, "truncate", lsn)?;
        let options = open.truncates.take(&leaf);
        // Looked up by ancestor, not by scanning what was truncated:
        // one statement may truncate thousands of partitions.
        let covered = self
            .partitions
            .root_of(&leaf)
            .is_some_and(|r| open.truncated.contains(r))
            || self
                .partitions
                .ancestors(&leaf)
                .any(|a| open.truncated.contains(a));
        open.truncated.insert(leaf.clone());
        let (table, partition) = match self.partitions.root_of(&leaf) {
            Some(root) => (root.clone(), Some(leaf)),
            None => (leaf, None),
        };
        if !open.skip && !covered && self.filter.matches(&table) {
            out.push(Event::Entry(AuditEntry {
                txn: open.txn.clone(),
                table,
                action: Action::Truncate,
                primary_key: None,
                before: None,
                after: None,
                changed_columns: None,
                context: open.context.clone(),
                details: truncate_details(partition.as_ref(), options),
            }));
        }
        Ok(())
    }
}

/// A TRUNCATE entry's `details`: the partition, and the options when the
/// context trigger announced them (`null` where they could not be told).
fn truncate_details(
    partition: Option<&TableName>,
    options: Option<truncate::Options>,
) -> Option<String> {
    let mut details = serde_json::Map::new();
    if let Some(p) = partition {
        details.insert("partition".into(), p.to_string().into());
    }
    if let Some(o) = options {
        details.insert("cascade".into(), o.cascade.into());
        details.insert("restart_identity".into(), o.restart_identity.into());
        if o.via_cascade {
            details.insert("via_cascade".into(), true.into());
        }
    }
    (!details.is_empty()).then(|| serde_json::Value::Object(details).to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assembler, entries, feed, BEGIN_9, COMMIT_9};
    use crate::capture::partition::PartitionMap;
    use crate::table::{TableName, TablePattern, Wal2jsonFilter};

    /// A two-level tree o → o_eu → o_eu_lo, and o → o_us, captured by the
    /// root's name only; records as wal2json 2.5 sent them for a row moved
    /// between partitions, a partition created while running, and TRUNCATEs.
    #[test]
    fn partitions_are_named_by_their_root_and_truncates_carry_options() {
        use crate::capture::partition::Member;
        let t = |n: &str| TableName::new("public", n);
        let member = |root: &str, parent: &str| Member {
            root: t(root),
            parent: t(parent),
        };
        let map = PartitionMap::new([
            (t("o_eu"), member("o", "o")),
            (t("o_eu_lo"), member("o", "o_eu")),
            (t("o_us"), member("o", "o")),
        ]);
        let mut filter = Wal2jsonFilter::from_patterns(&[TablePattern::parse("public.o").unwrap()]);
        filter.add_schema("public");
        let mut a = assembler(&["public.o", "public.x"])
            .with_partitions(map)
            .with_stream_filter(filter);
        let q = "TRUNCATE o_eu; TRUNCATE public.x RESTART IDENTITY CASCADE; TRUNCATE o";
        let out = feed(
            &mut a,
            &[
                BEGIN_9,
                r#"{"action":"D","xid":9,"schema":"public","table":"o_eu_lo","identity":[{"name":"id","typeoid":23,"value":1},{"name":"region","typeoid":25,"value":"eu"}],"pk":[{"name":"id","typeoid":23},{"name":"region","typeoid":25}]}"#,
                r#"{"action":"I","xid":9,"schema":"public","table":"o_us","columns":[{"name":"id","typeoid":23,"value":1},{"name":"region","typeoid":25,"value":"us"}],"pk":[{"name":"id","typeoid":23},{"name":"region","typeoid":25}]}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_partitions","content":"{\"root\" : {\"schema\" : \"public\", \"name\" : \"o\"}, \"members\" : [{\"schema\" : \"public\", \"name\" : \"o_eu\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}, {\"schema\" : \"public\", \"name\" : \"o_eu_lo\", \"parent_schema\" : \"public\", \"parent_name\" : \"o_eu\"}, {\"schema\" : \"public\", \"name\" : \"o_us\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}, {\"schema\" : \"public\", \"name\" : \"o_new\", \"parent_schema\" : \"public\", \"parent_name\" : \"o\"}]}"}"#,
                r#"{"action":"I","xid":9,"schema":"public","table":"o_new","columns":[{"name":"id","typeoid":23,"value":2},{"name":"region","typeoid":25,"value":"new"}],"pk":[{"name":"id","typeoid":23},{"name":"region","typeoid":25}]}"#,
                &format!(
                    r#"{{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{{\"schema\":\"public\",\"table\":\"o_eu\",\"statement_start\":\"s1\",\"query\":\"{q}\"}}"}}"#
                ),
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"o_eu_lo\",\"statement_start\":\"s1\"}"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o_eu"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o_eu_lo"}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"x\",\"statement_start\":\"s1\"}"}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"y\",\"statement_start\":\"s1\"}"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"x"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"y"}"#,
                r#"{"action":"M","xid":9,"transactional":true,"prefix":"pgtrail_truncate","content":"{\"schema\":\"public\",\"table\":\"o\",\"statement_start\":\"s1\"}"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o_eu"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o_us"}"#,
                r#"{"action":"T","xid":9,"schema":"public","table":"o_eu_lo"}"#,
                COMMIT_9,
            ],
        );
        let got: Vec<(String, &str, Option<&str>)> = entries(&out)
            .iter()
            .map(|e| (e.table.to_string(), e.action.as_str(), e.details.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "public.o".into(),
                    "DELETE",
                    Some(r#"{"partition":"public.o_eu_lo"}"#)
                ),
                (
                    "public.o".into(),
                    "INSERT",
                    Some(r#"{"partition":"public.o_us"}"#)
                ),
                (
                    "public.o".into(),
                    "INSERT",
                    Some(r#"{"partition":"public.o_new"}"#)
                ),
                (
                    "public.o".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":false,"partition":"public.o_eu","restart_identity":false}"#)
                ),
                (
                    "public.x".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":true,"restart_identity":true}"#)
                ),
                (
                    "public.o".into(),
                    "TRUNCATE",
                    Some(r#"{"cascade":false,"restart_identity":false}"#)
                ),
            ],
            "y is not captured; a partition truncated with its parent is no entry of its own"
        );
        // Both rows of the moved row's history share one row key.
        let e = entries(&out);
        assert_eq!(
            crate::entry::row_key(&e[0].table, r#"{"id":1,"region":"eu"}"#),
            crate::entry::row_key(&e[1].table, r#"{"id":1,"region":"eu"}"#)
        );
    }
}
