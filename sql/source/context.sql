-- Installed by `pgtrail setup` in the audited (source) database, in its own
-- schema. A BEFORE STATEMENT trigger on each captured table calls
-- pgtrail.emit_context(); it emits one transactional logical message (prefix
-- 'pgtrail') carrying who is making the change, once per transaction and
-- again only when that changes within the transaction (SET LOCAL ROLE, a new
-- pgtrail.actor). The message is part of the transaction: rolled back with
-- it, or with its savepoint.
--
-- Applications may add their own context, with no other change:
--   SET LOCAL pgtrail.actor = 'alice@example.com';
--   SET LOCAL pgtrail.source = 'billing-batch';
--   SET LOCAL pgtrail.remarks = 'ticket #4411';

CREATE SCHEMA IF NOT EXISTS pgtrail;
-- Every role that writes to a captured table runs these functions.
GRANT USAGE ON SCHEMA pgtrail TO PUBLIC;

-- Who is making changes in this session, as JSON text.
CREATE OR REPLACE FUNCTION pgtrail.context_json() RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT json_build_object(
        'session_user',     session_user,
        'current_user',     current_user,
        'client_addr',      host(inet_client_addr()),
        'client_port',      inet_client_port(),
        'application_name', nullif(current_setting('application_name', true), ''),
        'backend_pid',      pg_backend_pid(),
        'actor',            nullif(current_setting('pgtrail.actor', true), ''),
        'source',           nullif(current_setting('pgtrail.source', true), ''),
        'remarks',          nullif(current_setting('pgtrail.remarks', true), '')
    )::text
$fn$;

CREATE OR REPLACE FUNCTION pgtrail.emit_context() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    context text := pgtrail.context_json();
BEGIN
    -- pgtrail.emitted is set transaction-locally, so it is forgotten at commit
    -- or rollback, and reverted with a rolled-back savepoint, like the message.
    IF current_setting('pgtrail.emitted', true) IS DISTINCT FROM context THEN
        PERFORM pg_logical_emit_message(true, 'pgtrail', context);
        PERFORM set_config('pgtrail.emitted', context, true);
    END IF;
    -- TRUNCATE's options (CASCADE, RESTART IDENTITY) are not in the WAL
    -- record wal2json decodes, so the daemon reads them from the client's
    -- query text: sent with the first table of each client statement, then
    -- only the table. The trigger fires for every table the statement
    -- empties, including partitions and tables reached by CASCADE.
    IF TG_OP = 'TRUNCATE' THEN
        DECLARE
            statement_start text := statement_timestamp()::text;
            sent boolean := current_setting('pgtrail.truncate_statement', true) IS NOT DISTINCT FROM statement_start;
        BEGIN
            PERFORM pg_logical_emit_message(true, 'pgtrail_truncate', json_build_object(
                'schema',          TG_TABLE_SCHEMA,
                'table',           TG_TABLE_NAME,
                'statement_start', statement_start,
                'query',           CASE WHEN sent THEN NULL ELSE current_query() END
            )::text);
            IF NOT sent THEN
                PERFORM set_config('pgtrail.truncate_statement', statement_start, true);
            END IF;
        END;
    END IF;
    RETURN NULL;
END
$fn$;

-- The capture set, as `setup` last wrote it from the config: the event
-- trigger (ddl.sql) enrols a new table that matches, from its creation.
-- Patterns are SQL LIKE patterns (`*` became `%`).
CREATE TABLE IF NOT EXISTS pgtrail.capture_patterns (
    include     boolean NOT NULL,
    schema_like text    NOT NULL,
    table_like  text    NOT NULL
);
CREATE TABLE IF NOT EXISTS pgtrail.capture_options (
    before_images boolean NOT NULL
);

CREATE OR REPLACE FUNCTION pgtrail.is_captured(schema_name text, table_name text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT EXISTS (SELECT 1 FROM pgtrail.capture_patterns p
                   WHERE p.include AND schema_name LIKE p.schema_like AND table_name LIKE p.table_like)
       AND NOT EXISTS (SELECT 1 FROM pgtrail.capture_patterns p
                       WHERE NOT p.include AND schema_name LIKE p.schema_like AND table_name LIKE p.table_like)
$fn$;
