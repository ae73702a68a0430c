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
//! when it was made. Changes decoded between the checkpoint and the first
//! announcement are mapped by the catalog as it is at session start, which
//! differs from the past only if the tree changed in that window.

use std::collections::HashMap;

use serde::Deserialize;

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

    /// Is `ancestor` above `table` in its tree (its parent, its parent's parent, …)?
    pub fn is_below(&self, table: &TableName, ancestor: &TableName) -> bool {
        let mut at = table;
        // A tree is at most as deep as the map is large; the bound guards a
        // cycle that a stale map could in theory hold.
        for _ in 0..=self.members.len() {
            match self.members.get(at) {
                Some(m) if &m.parent == ancestor => return true,
                Some(m) => at = &m.parent,
                None => return false,
            }
        }
        false
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
    fn a_malformed_announcement_is_an_error() {
        assert!(tree_from_message(r#"{"members":[]}"#).is_err());
    }
}
