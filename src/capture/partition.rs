//! Partitioned tables: which root table each partition belongs to.
//!
//! wal2json reports a change under the leaf partition that holds the row;
//! entries are named by the root instead (the leaf goes into `details`), so
//! that a capture pattern, the history of a row (`row_key`) and the web view
//! all see one table however it is partitioned.
//!
//! The map starts from the source's catalog at session start and is then
//! kept current in-stream: the DDL event trigger (sql/source/ddl.sql)
//! announces a root's whole partition tree as a transactional message (prefix
//! `pgtrail_partitions`) whenever a partition is created, attached or
//! detached, so a change decoded after the announcement is mapped as it was
//! when it was made. The map after each announcement is stored with the
//! checkpoint (`pgtrail.partition_maps`), and a session starts from the stored
//! map when there is one, so changes decoded between the checkpoint and the
//! next announcement are mapped as they were then too. Only a session with no
//! stored map (no announcement ever stored: the event trigger is missing, or
//! no tree changed yet) starts from the catalog as it is at session start.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::table::TableName;

/// Prefix of the partition tree announcements.
pub const PARTITIONS_PREFIX: &str = "pgtrail_partitions";

/// Where one partition (a leaf, or a partitioned table below the root) sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The top of its tree, however deep the partitioning goes.
    pub root: TableName,
    /// The table it is directly a partition of.
    pub parent: TableName,
}

/// Partition → root and parent. Roots and unpartitioned tables are not in it.
#[derive(Debug, Clone, Default)]
pub struct PartitionMap {
    members: HashMap<TableName, Member>,
}

impl PartitionMap {
    pub fn new(members: impl IntoIterator<Item = (TableName, Member)>) -> Self {
        PartitionMap {
            members: members.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The root of `table`'s tree, if it is a partition.
    pub fn root_of(&self, table: &TableName) -> Option<&TableName> {
        self.members.get(table).map(|m| &m.root)
    }

    pub fn members(&self) -> impl Iterator<Item = (&TableName, &Member)> {
        self.members.iter()
    }

    /// The tables above `table` in its tree, nearest first: its parent, its
    /// parent's parent, …, up to the root. Empty for a table not in the map.
    pub fn ancestors<'a>(
        &'a self,
        table: &'a TableName,
    ) -> impl Iterator<Item = &'a TableName> + 'a {
        let mut at = table;
        // A tree is at most as deep as the map is large; the bound guards a
        // cycle that a stale map could in theory hold.
        (0..=self.members.len()).map_while(move |_| {
            let parent = &self.members.get(at)?.parent;
            at = parent;
            Some(parent)
        })
    }

    /// Is `ancestor` above `table` in its tree (its parent, its parent's parent, …)?
    pub fn is_below(&self, table: &TableName, ancestor: &TableName) -> bool {
        self.ancestors(table).any(|a| a == ancestor)
    }

    /// The map as JSON, for the store: `[{"schema", "name", "root_schema",
    /// "root_name", "parent_schema", "parent_name"}, …]`, in a stable order.
    pub fn to_json(&self) -> String {
        let mut rows: Vec<StoredMember<'_>> = self
            .members
            .iter()
            .map(|(t, m)| StoredMember {
                schema: t.schema.as_str().into(),
                name: t.name.as_str().into(),
                root_schema: m.root.schema.as_str().into(),
                root_name: m.root.name.as_str().into(),
                parent_schema: m.parent.schema.as_str().into(),
                parent_name: m.parent.name.as_str().into(),
            })
            .collect();
        rows.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
    }

    /// Reads what [`PartitionMap::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<PartitionMap, serde_json::Error> {
        let rows: Vec<StoredMember<'_>> = serde_json::from_str(text)?;
        Ok(PartitionMap::new(rows.into_iter().map(|r| {
            (
                TableName::new(r.schema, r.name),
                Member {
                    root: TableName::new(r.root_schema, r.root_name),
                    parent: TableName::new(r.parent_schema, r.parent_name),
                },
            )
        })))
    }

    /// `table` is gone, or is a plain table again (dropped, or created anew
    /// under a partition's old name): it leaves the map, with everything below
    /// it when it was partitioned. Returns whether the map changed.
    pub fn forget(&mut self, table: &TableName) -> bool {
        let below: Vec<TableName> = self
            .members
            .iter()
            .filter(|(t, m)| &m.root == table || self.is_below(t, table))
            .map(|(t, _)| t.clone())
            .collect();
        let mut changed = self.members.remove(table).is_some();
        for t in below {
            changed |= self.members.remove(&t).is_some();
        }
        changed
    }

    /// Applies an announcement: `root`'s tree is now exactly `members`.
    /// Partitions that left the tree (DETACH) are tables of their own again.
    pub fn apply(&mut self, tree: &Tree) {
        self.members.retain(|_, m| m.root != tree.root);
        // The announced root is a root now, even if it was attached elsewhere before.
        self.members.remove(&tree.root);
        for (table, parent) in &tree.members {
            self.members.insert(
                table.clone(),
                Member {
                    root: tree.root.clone(),
                    parent: parent.clone(),
                },
            );
        }
    }
}

/// One announcement: a root and every partition below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub root: TableName,
    /// Each partition with its direct parent.
    pub members: Vec<(TableName, TableName)>,
}

#[derive(Serialize, Deserialize)]
struct StoredMember<'a> {
    #[serde(borrow)]
    schema: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    root_schema: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    root_name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    parent_schema: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    parent_name: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireName {
    schema: String,
    name: String,
}

#[derive(Deserialize)]
struct WireMember {
    schema: String,
    name: String,
    parent_schema: String,
    parent_name: String,
}

#[derive(Deserialize)]
struct WireTree {
    root: WireName,
    #[serde(default)]
    members: Vec<WireMember>,
}

/// Reads an announcement as the event trigger writes it:
/// `{"root": {"schema", "name"}, "members": [{"schema", "name", "parent_schema", "parent_name"}]}`.
pub fn tree_from_message(content: &str) -> Result<Tree, serde_json::Error> {
    let w: WireTree = serde_json::from_str(content)?;
    Ok(Tree {
        root: TableName::new(w.root.schema, w.root.name),
        members: w
            .members
            .into_iter()
            .map(|m| {
                (
                    TableName::new(m.schema, m.name),
                    TableName::new(m.parent_schema, m.parent_name),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: &str) -> TableName {
        TableName::new("public", n)
    }

    #[test]
    fn announcements_replace_a_roots_tree() {
        let mut map = PartitionMap::default();
        let tree = tree_from_message(
            r#"{"root":{"schema":"public","name":"o"},"members":[
                {"schema":"public","name":"o_eu","parent_schema":"public","parent_name":"o"},
                {"schema":"public","name":"o_eu_lo","parent_schema":"public","parent_name":"o_eu"},
                {"schema":"public","name":"o_us","parent_schema":"public","parent_name":"o"}]}"#,
        )
        .unwrap();
        map.apply(&tree);
        assert_eq!(map.root_of(&t("o_eu_lo")), Some(&t("o")));
        assert_eq!(map.root_of(&t("o")), None);
        assert!(map.is_below(&t("o_eu_lo"), &t("o_eu")));
        assert!(map.is_below(&t("o_eu_lo"), &t("o")));
        assert!(!map.is_below(&t("o_us"), &t("o_eu")));
        assert_eq!(
            map.ancestors(&t("o_eu_lo")).collect::<Vec<_>>(),
            [&t("o_eu"), &t("o")]
        );
        assert_eq!(map.ancestors(&t("o")).count(), 0);
        // o_us detached: it is a table of its own again.
        map.apply(&Tree {
            root: t("o"),
            members: vec![(t("o_eu"), t("o")), (t("o_eu_lo"), t("o_eu"))],
        });
        assert_eq!(map.root_of(&t("o_us")), None);
        // o attached under a new root: its partitions follow.
        map.apply(&Tree {
            root: t("all"),
            members: vec![
                (t("o"), t("all")),
                (t("o_eu"), t("o")),
                (t("o_eu_lo"), t("o_eu")),
            ],
        });
        assert_eq!(map.root_of(&t("o_eu_lo")), Some(&t("all")));
        assert_eq!(map.root_of(&t("o")), Some(&t("all")));
    }

    #[test]
    fn a_dropped_table_leaves_the_map_with_what_was_below_it() {
        let mut map = PartitionMap::new([
            (
                t("o_eu"),
                Member {
                    root: t("o"),
                    parent: t("o"),
                },
            ),
            (
                t("o_eu_lo"),
                Member {
                    root: t("o"),
                    parent: t("o_eu"),
                },
            ),
            (
                t("o_us"),
                Member {
                    root: t("o"),
                    parent: t("o"),
                },
            ),
        ]);
        assert!(map.forget(&t("o_eu")));
        assert_eq!(map.root_of(&t("o_eu_lo")), None);
        assert_eq!(map.root_of(&t("o_us")), Some(&t("o")));
        assert!(!map.forget(&t("unrelated")));
        assert!(map.forget(&t("o")), "a dropped root takes its tree along");
        assert!(map.is_empty());
    }

    #[test]
    fn the_stored_form_reads_back_as_the_same_map() {
        let q = TableName::new("Sales \"EU\"", "o.2026");
        let map = PartitionMap::new([
            (
                t("o_eu"),
                Member {
                    root: t("o"),
                    parent: t("o"),
                },
            ),
            (
                q.clone(),
                Member {
                    root: t("o"),
                    parent: t("o_eu"),
                },
            ),
        ]);
        let back = PartitionMap::from_json(&map.to_json()).unwrap();
        assert_eq!(back.members, map.members);
        assert_eq!(back.to_json(), map.to_json(), "stable order");
        assert!(PartitionMap::from_json("[{\"schema\":1}]").is_err());
    }

    #[test]
    fn a_malformed_announcement_is_an_error() {
        assert!(tree_from_message(r#"{"members":[]}"#).is_err());
    }
}
