-- Room for what is not a row image, and for pgtrail's own events.
--
-- details: extra facts about an entry, as a JSON object: the leaf partition a
--   change was made in, the options of a TRUNCATE, the particulars of one of
--   pgtrail's own events. Null where there is nothing to add.
-- EVENT: an entry pgtrail writes about itself (a sign-in, an export, a user
--   changed, a configuration reload), with context.source = 'pgtrail'. It has
--   no source transaction, hence no xid and no LSN.
ALTER TABLE pgtrail.entries ADD COLUMN details json;
ALTER TABLE pgtrail.entries ALTER COLUMN xid DROP NOT NULL;
ALTER TABLE pgtrail.entries ALTER COLUMN lsn DROP NOT NULL;
ALTER TABLE pgtrail.entries DROP CONSTRAINT entries_action_check;
-- NOT VALID then VALIDATE: a large store is checked without blocking the daemon's writes.
ALTER TABLE pgtrail.entries ADD CONSTRAINT entries_action_check
    CHECK (action IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'EVENT')) NOT VALID;
ALTER TABLE pgtrail.entries VALIDATE CONSTRAINT entries_action_check;
-- Only pgtrail's events may lack a source transaction.
ALTER TABLE pgtrail.entries ADD CONSTRAINT entries_event_has_no_txn
    CHECK ((action = 'EVENT') = (xid IS NULL AND lsn IS NULL)) NOT VALID;
ALTER TABLE pgtrail.entries VALIDATE CONSTRAINT entries_event_has_no_txn;
