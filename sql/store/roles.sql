-- Least privilege in the store: two group roles (NOLOGIN) that login roles
-- are made members of. Applied by `pgtrail setup` whenever it applies
-- migrations or a role is missing; needs a setup role that may create roles
-- (superuser or CREATEROLE), and otherwise only says so.
--
-- pgtrail_reader: the web view and exports. Reads the store; manages the web
--   view's users, sessions and tokens; records pgtrail's own events only
--   through pgtrail.record_event. No INSERT, UPDATE or DELETE on entries.
-- pgtrail_writer: the daemon (`pgtrail run`, which also serves the web view):
--   the reader's rights, plus INSERT of entries, decode errors and quarantined
--   records, and moving the checkpoint, the chain heads, the partition map
--   and the capture state. It reads its source's id in pgtrail.sources (a
--   reader's right); only setup, as the owner, registers sources. No UPDATE or
--   DELETE on entries (and the append-only trigger refuses them for anyone).
-- The writer may make a time partition of entries through
-- pgtrail.ensure_partition (owned by the setup role, as the partitions are);
-- neither role may drop one.
--
-- A setup role that may not create roles (the store's owner, say) still
-- grants on its objects when both roles exist: a migration that replaces a
-- table (0016) must not leave the daemon and the web view without rights.
DO $roles$
BEGIN
    IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgtrail_reader') THEN
            CREATE ROLE pgtrail_reader NOLOGIN;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgtrail_writer') THEN
            CREATE ROLE pgtrail_writer NOLOGIN;
        END IF;
        GRANT pgtrail_reader TO pgtrail_writer;
    ELSIF NOT (EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgtrail_reader')
               AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgtrail_writer')) THEN
        RAISE NOTICE 'pgtrail_reader and pgtrail_writer not created: % may not create roles', current_user;
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA pgtrail TO pgtrail_reader, pgtrail_writer;
    GRANT SELECT ON ALL TABLES IN SCHEMA pgtrail TO pgtrail_reader;
    GRANT INSERT, UPDATE, DELETE ON pgtrail.users, pgtrail.sessions, pgtrail.tokens TO pgtrail_reader;
    GRANT EXECUTE ON FUNCTION pgtrail.record_event(timestamptz, text, json, json, json, json, json, json, text, inet, bytea) TO pgtrail_reader;
    -- Every column of an entry but its id, which only the sequence gives:
    -- ids are unique without a unique index across partitions. Once entries
    -- are split (0023), the writer writes the entry rows and their
    -- transactions (whose ids it reserves from their sequence), and nobody
    -- inserts into the view pgtrail.entries but the owner.
    IF to_regclass('pgtrail.entry_rows') IS NULL THEN
        REVOKE INSERT ON pgtrail.entries FROM pgtrail_writer;
        GRANT INSERT (committed_at, xid, lsn, schema_name, table_name, action, primary_key, before, after,
                      changed_columns, context, row_key, details, actor, client_addr, hash, source)
            ON pgtrail.entries TO pgtrail_writer;
    ELSE
        REVOKE INSERT ON pgtrail.entries, pgtrail.entry_rows FROM pgtrail_writer;
        GRANT INSERT (committed_at, schema_name, table_name, action, primary_key, before, after,
                      changed_columns, row_key, details, hash, source, txn)
            ON pgtrail.entry_rows TO pgtrail_writer;
        GRANT INSERT ON pgtrail.transactions TO pgtrail_writer;
        GRANT USAGE ON SEQUENCE pgtrail.transactions_id_seq TO pgtrail_writer;
    END IF;
    GRANT INSERT ON pgtrail.decode_errors, pgtrail.partition_maps, pgtrail.signed_heads, pgtrail.quarantine TO pgtrail_writer;
    GRANT UPDATE ON pgtrail.checkpoints, pgtrail.chain_heads, pgtrail.partition_maps TO pgtrail_writer;
    -- Entries take their id from this sequence (no identity column on a partitioned table).
    GRANT USAGE ON SEQUENCE pgtrail.entries_id_seq TO pgtrail_writer;
    -- Partitions are made by this SECURITY DEFINER function only, and owned by
    -- the setup role: neither role may create, alter or drop one.
    -- The web view never needs it (record_event runs as the owner).
    REVOKE EXECUTE ON FUNCTION pgtrail.ensure_partition(timestamptz) FROM pgtrail_reader;
    GRANT EXECUTE ON FUNCTION pgtrail.ensure_partition(timestamptz) TO pgtrail_writer;
    -- Retention drops partitions through this SECURITY DEFINER function only
    -- (sql/store/0018_retention.sql): the writer's, never the reader's.
    IF to_regprocedure('pgtrail.drop_partition(text, json)') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION pgtrail.drop_partition(text, json) TO pgtrail_writer;
    END IF;
    -- The monitor's last reading of the slot (state, overwritten at every poll).
    GRANT INSERT, UPDATE ON pgtrail.capture_state TO pgtrail_writer;
    -- Binding its source to the database it captures, once (0017).
    GRANT EXECUTE ON FUNCTION pgtrail.bind_source(smallint, text, bigint, text) TO pgtrail_writer;
    -- The key that checks the source's messages: the daemon's alone.
    REVOKE ALL ON pgtrail.message_keys FROM pgtrail_reader;
    GRANT SELECT ON pgtrail.message_keys TO pgtrail_writer;
END
$roles$;
