-- The daemon's security events (a message from the source that failed
-- pgtrail's signature check, see docs/security.md) belong to a source
-- transaction: action EVENT with that transaction's xid and LSN, stored next
-- to its changes and linked into the capture chain. pgtrail's other events
-- still have no source transaction. So: an entry has both xid and LSN or
-- neither, and only an EVENT may have neither. The chains are told apart by
-- the LSN (src/store/chain.rs), which on every store written before this
-- migration is the same split as by action.
ALTER TABLE pgtrail.entries DROP CONSTRAINT entries_event_has_no_txn;
-- NOT VALID then VALIDATE: a large store is checked without blocking the daemon's writes.
ALTER TABLE pgtrail.entries ADD CONSTRAINT entries_txn_whole
    CHECK ((xid IS NULL) = (lsn IS NULL)) NOT VALID;
ALTER TABLE pgtrail.entries VALIDATE CONSTRAINT entries_txn_whole;
ALTER TABLE pgtrail.entries ADD CONSTRAINT entries_only_events_lack_txn
    CHECK (action = 'EVENT' OR lsn IS NOT NULL) NOT VALID;
ALTER TABLE pgtrail.entries VALIDATE CONSTRAINT entries_only_events_lack_txn;

-- The key that checks pgtrail's messages from a source (sql/source/context.sql
-- makes it there, readable by setup's role only). `setup` copies it here for
-- its slot, so that the daemon can check messages whatever role it
-- replicates as. Read by the daemon only: roles.sql grants it to
-- pgtrail_writer and withholds it from pgtrail_reader.
CREATE TABLE pgtrail.message_keys (
    slot      text        PRIMARY KEY,
    inner_pad bytea       NOT NULL CHECK (length(inner_pad) = 64),
    outer_pad bytea       NOT NULL CHECK (length(outer_pad) = 64),
    copied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON TABLE pgtrail.message_keys FROM PUBLIC;
