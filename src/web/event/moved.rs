//! The sentence of a `source_moved` event (`setup --rebind-source`, see
//! `pipeline::gap::moved_event`), from what its details carry: the source,
//! the database and server on either side (`from_server`, `to_server`), the
//! store's old checkpoint (`from_lsn`) and the new slot's start (`to_lsn`).

use serde_json::Value;

use super::{plain, Said};

impl Said {
    /// `source_moved` (`setup --rebind-source`): who moved which source from
    /// which database and server to which, and what was not captured: the old
    /// server's changes after the store's checkpoint and the new one's before
    /// its slot's start (two servers' positions, so no single range).
    pub(super) fn moved(&self) -> String {
        let side = |key: &str, field: &str| {
            self.details
                .get(key)
                .and_then(|s| s.get(field))
                .and_then(plain)
                .unwrap_or_else(|| "?".into())
        };
        let db = |key: &str| format!("database {:?}", side(key, "database"));
        let (from_sys, to_sys) = (
            side("from_server", "system_identifier"),
            side("to_server", "system_identifier"),
        );
        // An OID as PostgreSQL prints it, without the thousands' commas of a count.
        let oid = |key: &str| {
            self.details
                .get(key)
                .and_then(|s| s.get("database_oid"))
                .and_then(Value::as_u64)
                .map_or_else(|| "?".into(), |n| n.to_string())
        };
        let (from_db, to_db) = (db("from_server"), db("to_server"));
        // Name what differs: the server, the database, or both.
        let whence = if from_sys == to_sys {
            // Another database on the same server: its OID tells a re-created namesake apart.
            format!(
                "from {from_db} (OID {}) to {to_db} (OID {}) on server {to_sys}",
                oid("from_server"),
                oid("to_server")
            )
        } else if from_db == to_db {
            format!("({to_db}) from server {from_sys} to server {to_sys}")
        } else {
            format!("from {from_db} on server {from_sys} to {to_db} on server {to_sys}")
        };
        let start = self.d("to_lsn");
        let lost = match self.details.get("from_lsn").and_then(plain) {
            Some(checkpoint) => format!(
                "changes between the old checkpoint {checkpoint} and the new slot's start {start} were not captured"
            ),
            None => format!(
                "nothing had been stored; changes before the new slot's start {start} were not captured"
            ),
        };
        format!(
            "{}moved source {} {whence}; {lost}",
            self.by(),
            self.d("source")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::headline;
    use super::super::tests::stored;

    #[test]
    fn a_move_says_who_moved_what_from_where_to_where_and_what_was_not_captured() {
        use crate::pipeline::gap::{moved_event, LastStored};
        use crate::store::binding::SourceServer;
        let slot = crate::pg::SlotName::parse("pgtrail_slot").unwrap();
        let source = crate::store::sources::SourceName::parse("shop").unwrap();
        let at = |sys: &str, oid, db: &str| SourceServer {
            system_identifier: sys.into(),
            database_oid: oid,
            database: db.into(),
        };
        let (old, new) = ("7312345678901234567", "7412345678901234568");
        let last = LastStored {
            lsn: "0/16B3748".parse().unwrap(),
            checkpoint_written: chrono::Utc::now(),
            commit: None,
        };
        let said = |from: SourceServer, to: SourceServer, last: Option<&LastStored>| {
            let start = "0/3000028".parse().unwrap();
            let e = moved_event(
                (&source, &slot),
                (&from, &to),
                last,
                start,
                Some("os:root".into()),
            );
            headline(&stored(&e))
        };
        let lost = "changes between the old checkpoint 0/16B3748 and the new slot's start 0/3000028 were not captured";
        assert_eq!(
            said(at(old, 16384, "shop"), at(new, 16384, "shop"), Some(&last)),
            format!("os:root moved source shop (database \"shop\") from server {old} to server {new}; {lost}")
        );
        assert_eq!(
            said(at(old, 16384, "shop"), at(new, 24576, "shop_v2"), Some(&last)),
            format!("os:root moved source shop from database \"shop\" on server {old} to database \"shop_v2\" on server {new}; {lost}")
        );
        assert_eq!(
            said(at(old, 16384, "shop"), at(old, 24576, "shop"), None),
            format!("os:root moved source shop from database \"shop\" (OID 16384) to database \"shop\" (OID 24576) on server {old}; \
                     nothing had been stored; changes before the new slot's start 0/3000028 were not captured")
        );
    }
}
