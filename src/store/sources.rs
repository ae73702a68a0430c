//! The sources one store serves (`pgtrail.sources`, `sql/store/0015_sources.sql`):
//! each source database captured into the store has a name (`[source] name`)
//! and a small id that keys everything kept per source: its checkpoint, its
//! chain and its head, its message key, its quarantine. Source 0 is pgtrail
//! itself, whose chain holds pgtrail's own events.
//!
//! `setup` registers a source; the daemon looks its id up by name when a
//! session starts and holds the source's capture lock ([`claim`]) for as
//! long as its store connection lives, so a second daemon started for the
//! same source is refused at once rather than racing the first for the chain.

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

/// SQL for an entry's source id over `pgtrail.entries` (see [`SourceId::of_entry`]).
pub const ENTRY_SOURCE_SQL: &str =
    "coalesce(source, CASE WHEN lsn IS NULL THEN 0::smallint ELSE 1::smallint END)";

/// Advisory lock class of a source's capture (the second key is its id);
/// setup's migrations take 7420501.
const CAPTURE_LOCK: i32 = 7420503;
/// How long [`claim`] waits for a capture lock held by another session.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

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

/// Registers `name` (an existing one keeps its id) with its chain head;
/// returns its id. Run by `setup`, as the store's owner.
pub async fn register(client: &mut Client, name: &SourceName) -> Result<SourceId, StoreError> {
    let tx = client.transaction().await?;
    // Setups of two sources at once must not take the same id.
    tx.batch_execute("LOCK TABLE pgtrail.sources IN SHARE ROW EXCLUSIVE MODE")
        .await?;
    let id: i16 = match tx
        .query_opt(
            "SELECT id FROM pgtrail.sources WHERE name = $1",
            &[&name.as_str()],
        )
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => tx
            .query_one(
                "INSERT INTO pgtrail.sources (id, name) \
                 SELECT coalesce(max(id), 0) + 1, $1 FROM pgtrail.sources RETURNING id",
                &[&name.as_str()],
            )
            .await?
            .try_get(0)?,
    };
    tx.execute(
        "INSERT INTO pgtrail.chain_heads (source, hash) VALUES ($1, decode(repeat('00', 32), 'hex')) \
         ON CONFLICT (source) DO NOTHING",
        &[&id],
    )
    .await?;
    tx.commit().await?;
    Ok(SourceId(id))
}

/// Takes the capture lock of source `id` on `client`'s session: held until
/// that connection closes, so exactly one daemon at a time captures a
/// source. Refused with [`StoreError::SourceTaken`] when another still
/// holds it after [`CLAIM_WAIT`].
pub async fn claim(client: &Client, id: SourceId, name: &SourceName) -> Result<(), StoreError> {
    // A daemon killed a moment ago may still hold it: its store backend
    // lets go once it notices the connection is gone (at once when idle,
    // after the statement it is running otherwise).
    let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        let taken: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2::int)",
                &[&CAPTURE_LOCK, &i32::from(id.0)],
            )
            .await?
            .try_get(0)?;
        if taken {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // Who holds it, as far as this role may see (pg_stat_activity hides
    // other roles' addresses from a role without pg_read_all_stats).
    let holder = client
        .query_opt(
            "SELECT l.pid, a.application_name, host(a.client_addr), \
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"') \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
               AND l.objsubid = 2 AND l.granted LIMIT 1",
            &[&i64::from(CAPTURE_LOCK), &i64::from(id.0)],
        )
        .await?;
    let holder = holder.map_or_else(
        || "another session".to_owned(),
        |r| {
            let pid: i32 = r.get(0);
            let from: Option<String> = r.get(2);
            let since: Option<String> = r.get(3);
            format!(
                "store backend {pid}{}{}",
                from.map(|f| format!(" from {f}")).unwrap_or_default(),
                since.map(|s| format!(" since {s}")).unwrap_or_default()
            )
        },
    );
    Err(StoreError::SourceTaken {
        name: name.to_string(),
        holder,
    })
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
