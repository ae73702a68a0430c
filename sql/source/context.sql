-- Installed by `pgtrail setup` in the audited (source) database, in its own
-- schema. A BEFORE STATEMENT trigger on each captured table calls
-- pgtrail.emit_context(); it emits one transactional logical message (prefix
-- 'pgtrail') carrying who is making the change, once per transaction and
-- again only when that changes within the transaction (SET LOCAL ROLE, a new
-- pgtrail.actor). The message is part of the transaction: rolled back with
-- it, or with its savepoint. Every message is signed (pgtrail.message_key
-- below): the daemon acts only on messages pgtrail's own functions made.
--
-- Applications may add their own context, with no other change:
--   SET LOCAL pgtrail.actor = 'alice@example.com';
--   SET LOCAL pgtrail.source = 'billing-batch';
--   SET LOCAL pgtrail.remarks = 'ticket #4411';

CREATE SCHEMA IF NOT EXISTS pgtrail;
-- Every role that writes to a captured table runs these functions.
GRANT USAGE ON SCHEMA pgtrail TO PUBLIC;

-- The key that signs pgtrail's messages (HMAC-SHA256, kept as its inner and
-- outer pads). Only its owner, the role that ran setup, may read it: the
-- daemon (which connects as that role) reads it to check every message, and
-- the SECURITY DEFINER functions below read it to sign. A role that calls
-- pg_logical_emit_message itself cannot sign, so the daemon refuses its
-- message and records the attempt. Made once; kept when setup runs again.
CREATE TABLE IF NOT EXISTS pgtrail.message_key (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    inner_pad bytea   NOT NULL CHECK (length(inner_pad) = 64),
    outer_pad bytea   NOT NULL CHECK (length(outer_pad) = 64)
);
REVOKE ALL ON TABLE pgtrail.message_key FROM PUBLIC;
DO $do$
DECLARE
    -- 256 bits from three UUIDs of the server's strong random source.
    key bytea := sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                   || gen_random_uuid()::text, 'UTF8'))
                 || '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    inner_pad bytea := key;
    outer_pad bytea := key;
BEGIN
    IF NOT EXISTS (SELECT FROM pgtrail.message_key) THEN
        FOR i IN 0..63 LOOP
            inner_pad := set_byte(inner_pad, i, get_byte(key, i) # 54);
            outer_pad := set_byte(outer_pad, i, get_byte(key, i) # 92);
        END LOOP;
        INSERT INTO pgtrail.message_key (inner_pad, outer_pad) VALUES (inner_pad, outer_pad);
    END IF;
END
$do$;

-- HMAC-SHA256, in hex, under the key's pads, of a domain (a message's
-- prefix), a transaction's 32-bit xid and a body: binding the xid means a
-- signed message is worth nothing in another transaction. A pure function
-- (only who holds the pads can make use of it), and one SQL expression so
-- that the planner inlines it into the trigger: the trigger runs it on every
-- statement.
CREATE OR REPLACE FUNCTION pgtrail.hmac(inner_pad bytea, outer_pad bytea, domain text, xid bigint, body text)
RETURNS text LANGUAGE sql STABLE AS $fn$
    SELECT encode(sha256(outer_pad || sha256(inner_pad || convert_to(domain, 'UTF8') || '\x00'::bytea
                  || convert_to(xid::text, 'UTF8') || '\x00'::bytea || convert_to(body, 'UTF8'))), 'hex')
$fn$;
DROP FUNCTION IF EXISTS pgtrail.message_mac(text, text);

-- Emits a transactional message whose content is its signature (64 hex
-- digits) followed by the body. Not for PUBLIC: only pgtrail's own
-- functions sign, and only content they made themselves.
CREATE OR REPLACE FUNCTION pgtrail.emit_signed(prefix text, body text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    key pgtrail.message_key;
BEGIN
    SELECT * INTO key FROM pgtrail.message_key;
    PERFORM pg_logical_emit_message(true, prefix, pgtrail.hmac(key.inner_pad, key.outer_pad, prefix,
        pg_current_xact_id()::text::bigint & 4294967295, body) || body);
END
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail.emit_signed(text, text) FROM PUBLIC;

-- Who is making changes in this session, as JSON text. `current_user` is
-- the role the session acts as (SET ROLE), read from the `role` setting,
-- which only SET ROLE's own permission check can change: inside pgtrail's
-- SECURITY DEFINER functions current_user itself names their owner.
CREATE OR REPLACE FUNCTION pgtrail.context_json() RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT json_build_object(
        'session_user',     session_user,
        'current_user',     CASE current_setting('role') WHEN 'none' THEN session_user::text
                                 ELSE current_setting('role') END,
        'client_addr',      host(inet_client_addr()),
        'client_port',      inet_client_port(),
        'application_name', nullif(current_setting('application_name', true), ''),
        'backend_pid',      pg_backend_pid(),
        'actor',            nullif(current_setting('pgtrail.actor', true), ''),
        'source',           nullif(current_setting('pgtrail.source', true), ''),
        'remarks',          nullif(current_setting('pgtrail.remarks', true), '')
    )::text
$fn$;

-- SECURITY DEFINER, so that it may sign; a trigger function cannot be
-- called directly, so it signs only what it builds itself.
CREATE OR REPLACE FUNCTION pgtrail.emit_context() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    context text := pgtrail.context_json();
    xid bigint := pg_current_xact_id()::text::bigint & 4294967295;
    key pgtrail.message_key;
    -- What pgtrail.emitted holds once this context is emitted in this
    -- transaction: a MAC the caller cannot compute, so that setting it
    -- with set_config cannot silence the trigger.
    seen text;
BEGIN
    SELECT * INTO key FROM pgtrail.message_key;
    seen := pgtrail.hmac(key.inner_pad, key.outer_pad, 'pgtrail.emitted', xid, context);
    -- pgtrail.emitted is set transaction-locally, so it is forgotten at commit
    -- or rollback, and reverted with a rolled-back savepoint, like the message.
    IF current_setting('pgtrail.emitted', true) IS DISTINCT FROM seen THEN
        PERFORM pgtrail.emit_signed('pgtrail', context);
        PERFORM set_config('pgtrail.emitted', seen, true);
    END IF;
    -- TRUNCATE's options (CASCADE, RESTART IDENTITY) are not in the WAL
    -- record wal2json decodes, so the daemon reads them from the client's
    -- query text: sent with the first table of each client statement, then
    -- only the table. The trigger fires for every table the statement
    -- empties, including partitions and tables reached by CASCADE.
    IF TG_OP = 'TRUNCATE' THEN
        DECLARE
            statement_start text := statement_timestamp()::text;
            -- A MAC again, so that the caller cannot withhold the query text.
            statement_seen text := pgtrail.hmac(key.inner_pad, key.outer_pad, 'pgtrail.truncate_statement', xid, statement_start);
            sent boolean := current_setting('pgtrail.truncate_statement', true) IS NOT DISTINCT FROM statement_seen;
        BEGIN
            PERFORM pgtrail.emit_signed('pgtrail_truncate', json_build_object(
                'schema',          TG_TABLE_SCHEMA,
                'table',           TG_TABLE_NAME,
                'statement_start', statement_start,
                'query',           CASE WHEN sent THEN NULL ELSE current_query() END
            )::text);
            IF NOT sent THEN
                PERFORM set_config('pgtrail.truncate_statement', statement_seen, true);
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
