-- Which database a source is (src/store/binding.rs). A `[source] name` alone
-- cannot tell two databases apart: two shards both called `shop` would share
-- a checkpoint, a chain and a message key. So a source is bound to the
-- database it was first set up or captured from: the cluster's system
-- identifier (pg_control_system(), the same as IDENTIFY_SYSTEM's systemid,
-- written as the unsigned number PostgreSQL prints), the database's OID and,
-- for messages, its name (a renamed database keeps its OID and stays the
-- same source). `setup` and the daemon refuse a source name whose database
-- is not the bound one; `pgtrail setup --rebind-source` moves the binding
-- when the database really moved to a replaced or restored server
-- (docs/operations.md, "Moving a source to another server").
--
-- Sources registered before this migration are unbound (all four NULL): the
-- next `setup` or daemon start that reads the source binds them to what it
-- finds. Source 0 (pgtrail's own events) is never bound.
ALTER TABLE pgtrail.sources
    ADD COLUMN system_identifier text CHECK (system_identifier ~ '^[0-9]{1,20}$'),
    ADD COLUMN database_oid bigint CHECK (database_oid BETWEEN 1 AND 4294967295),
    ADD COLUMN database_name text,
    ADD COLUMN bound_at timestamptz,
    ADD CONSTRAINT sources_bound_whole CHECK (
        num_nulls(system_identifier, database_oid, database_name, bound_at) IN (0, 4)),
    ADD CONSTRAINT sources_events_unbound CHECK (id <> 0 OR system_identifier IS NULL);

-- How the daemon binds an unbound source: it may fill the binding in, never
-- change one (only setup, as the store's owner, re-binds a source, and it
-- records that as an event). The caller reads the row back and compares.
CREATE FUNCTION pgtrail.bind_source(
    p_source smallint, p_system_identifier text, p_database_oid bigint, p_database_name text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE pgtrail.sources
        SET system_identifier = p_system_identifier, database_oid = p_database_oid,
            database_name = p_database_name, bound_at = now()
        WHERE id = p_source AND id <> 0 AND system_identifier IS NULL;
$$;
REVOKE ALL ON FUNCTION pgtrail.bind_source(smallint, text, bigint, text) FROM PUBLIC;
-- roles.sql grants it too, for a store whose roles are made after this runs.
DO $grant$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgtrail_writer') THEN
        GRANT EXECUTE ON FUNCTION pgtrail.bind_source(smallint, text, bigint, text) TO pgtrail_writer;
    END IF;
END
$grant$;

-- Quarantined and undecodable records belong to a registered source. Every
-- row already there passes: migration 15 gave the old rows source 1, which
-- always exists (its chain head references it), and every later row took its
-- id from pgtrail.sources. The tables hold only the rare records capture could
-- not store, so validating here is a short scan, and the check on insert is
-- one index probe per such record.
ALTER TABLE pgtrail.quarantine
    ADD CONSTRAINT quarantine_source_fkey FOREIGN KEY (source) REFERENCES pgtrail.sources (id);
ALTER TABLE pgtrail.decode_errors
    ADD CONSTRAINT decode_errors_source_fkey FOREIGN KEY (source) REFERENCES pgtrail.sources (id);

-- A daemon that stops cleanly says so at once (src/store/capture_state.rs),
-- rather than leaving the web view to infer it from polls that stop coming.
ALTER TABLE pgtrail.capture_state ADD COLUMN stopped_at timestamptz;
