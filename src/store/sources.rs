//! The sources one store serves (`pgtrail.sources`, `sql/store/0015_sources.sql`):
//! each source database captured into the store has a name (`[source] name`)
//! and a small id that keys everything kept per source: its checkpoint, its
//! chain and its head, its message key, its quarantine. Source 0 is pgtrail
//! itself, whose chain holds pgtrail's own events.
//!
//! `setup` registers a source and binds it to its database
//! ([`super::binding::register`]); the daemon looks its id up by name when a session
//! starts and holds the source's capture lock ([`super::claim`]) for as long
//! as its store connection lives, so a second daemon started for the same
//! source is refused rather than racing the first for the chain.

use tokio_postgres::Client;

use super::StoreError;

/// A source's name: 1 to 63 characters, lower-case letters, digits, `_` and
/// `-`, starting with a letter or digit; `pgtrail` is pgtrail's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceName(String);

impl SourceName {
    /// The name of source 0, pgtrail's own events.
    pub const PGTRAIL: &'static str = "pgtrail";

    pub fn parse(name: &str) -> Result<SourceName, String> {
        let valid = (1..=63).contains(&name.len())
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "{name:?} is not a valid source name: use 1 to 63 lower-case letters, digits, `_` and `-`, starting with a letter or digit"
            ));
        }
        if name == Self::PGTRAIL {
            return Err(format!(
                "{name:?} is reserved for pgtrail's own events: give the source another name"
            ));
        }
        Ok(SourceName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source's id in the store: 0 is pgtrail's own events, each source
/// database has one from 1 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub i16);

impl SourceId {
    /// pgtrail's own events.
    pub const EVENTS: SourceId = SourceId(0);
    /// The source of an existing store's capture before sources had ids:
    /// entries stored then have a NULL source and an LSN.
    pub const FIRST: SourceId = SourceId(1);

    /// The source of an entry as stored: its `source` column, or for an
    /// entry stored before that column, by whether it has an LSN.
    pub fn of_entry(stored: Option<i16>, has_lsn: bool) -> SourceId {
        match stored {
            Some(id) => SourceId(id),
            None if has_lsn => SourceId::FIRST,
            None => SourceId::EVENTS,
        }
    }
}

/// SQL for an entry's source id over `pgtrail.entries` or `pgtrail.entry_rows`:
/// its column, NOT NULL since migration 16 gave the entries stored before
/// sources had ids the one [`SourceId::of_entry`] reads them as. (Reading it
/// from the LSN, as before, would make a count join every entry to its
/// transaction for nothing.)
pub const ENTRY_SOURCE_SQL: &str = "source";

/// The id of the source named `name`, or NotSetUp when `setup` has not registered it.
pub async fn lookup(client: &Client, name: &SourceName) -> Result<SourceId, StoreError> {
    let row = client
        .query_opt(
            "SELECT id FROM pgtrail.sources WHERE name = $1",
            &[&name.as_str()],
        )
        .await?;
    match row {
        Some(row) => Ok(SourceId(row.try_get(0)?)),
        None => Err(StoreError::NotSetUp {
            dbname: "pgtrail".into(),
            reason: format!(
                "the source {:?} is not registered in the store; run `pgtrail setup` with this config",
                name.as_str()
            ),
        }),
    }
}

/// Every source of the store, by id, pgtrail's own (0) included.
pub async fn all(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<(SourceId, String)>, StoreError> {
    let rows = client
        .query("SELECT id, name FROM pgtrail.sources ORDER BY id", &[])
        .await?;
    rows.iter()
        .map(|r| Ok((SourceId(r.try_get(0)?), r.try_get(1)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_and_pgtrail_is_reserved() {
        for ok in ["shop-eu", "app", "a", "0db", "x_y-z9", &"a".repeat(63)] {
            assert_eq!(SourceName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Shop",
            "shop eu",
            "shop.eu",
            "é",
            &"a".repeat(64),
        ] {
            let e = SourceName::parse(bad).unwrap_err();
            assert!(e.contains("not a valid source name"), "{bad:?}: {e}");
        }
        assert!(SourceName::parse("pgtrail")
            .unwrap_err()
            .contains("reserved"));
    }

    #[test]
    fn entries_without_a_source_keep_their_old_chain() {
        assert_eq!(SourceId::of_entry(None, true), SourceId::FIRST);
        assert_eq!(SourceId::of_entry(None, false), SourceId::EVENTS);
        assert_eq!(SourceId::of_entry(Some(3), true), SourceId(3));
        assert_eq!(SourceId::of_entry(Some(0), false), SourceId::EVENTS);
    }
}
