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

-- Setup runs this in one transaction. The SQL-standard function bodies below
-- are bound to what their names mean now, so nothing a role created in a
-- schema on setup's search_path may stand in for a built-in.
SET LOCAL search_path = pg_catalog, pg_temp;

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

-- The functions the trigger calls are SQL-standard (BEGIN ATOMIC): their
-- bodies are parsed once, when setup creates them, so that no caller's
-- search_path can change what they call, and the planner inlines them into
-- the trigger's expressions.

-- HMAC-SHA256, in hex, under the key's pads, of a domain (a message's
-- prefix), a transaction's 32-bit xid and a body: binding the xid means a
-- signed message is worth nothing in another transaction. A pure function
-- (only who holds the pads can make use of it).
CREATE OR REPLACE FUNCTION pgtrail.hmac(inner_pad bytea, outer_pad bytea, domain text, xid bigint, body text)
RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT encode(sha256(outer_pad || sha256(inner_pad || convert_to(domain, 'UTF8') || '\x00'::bytea
                  || convert_to(xid::text, 'UTF8') || '\x00'::bytea || convert_to(body, 'UTF8'))), 'hex');
END;

-- The low 32 bits of this transaction's xid (what wal2json reports); asking
-- assigns one, as the change about to be made would.
CREATE OR REPLACE FUNCTION pgtrail.xid32() RETURNS bigint LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pg_current_xact_id()::text::bigint & 4294967295;
END;

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
        pgtrail.xid32(), body) || body);
END
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail.emit_signed(text, text) FROM PUBLIC;

-- Who is making changes in this session, as JSON text. `current_user` is
-- the role the session acts as (SET ROLE), read from the `role` setting,
-- which only SET ROLE's own permission check can change: inside pgtrail's
-- SECURITY DEFINER functions current_user itself names their owner.
CREATE OR REPLACE FUNCTION pgtrail.context_json() RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC
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
    )::text;
END;

-- What of the context may change within a session (the address, port and
-- pid cannot), each field quoted so that no two contexts run together.
-- Far cheaper than building the JSON: the trigger compares it on every
-- statement.
CREATE OR REPLACE FUNCTION pgtrail.context_fingerprint() RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT format('%L %L %L %L %L %L', session_user, current_setting('role'),
                  current_setting('application_name', true), current_setting('pgtrail.actor', true),
                  current_setting('pgtrail.source', true), current_setting('pgtrail.remarks', true));
END;

-- What pgtrail.emitted holds once a context is emitted in a transaction:
-- SHA-256 over the key's inner pad, a domain, the xid and the fingerprint,
-- which a caller cannot compute, so that setting pgtrail.emitted cannot
-- silence the trigger. (The inner hash of HMAC: a prefix MAC, safe here from
-- length extension because the padding it would append holds zero bytes,
-- which no text, and so no fingerprint, can.)
CREATE OR REPLACE FUNCTION pgtrail.emitted_tag(inner_pad bytea, xid bigint, fingerprint text)
RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT encode(sha256(inner_pad || convert_to('pgtrail.emitted', 'UTF8') || '\x00'::bytea
                  || convert_to(xid::text, 'UTF8') || '\x00'::bytea || convert_to(fingerprint, 'UTF8')), 'hex');
END;

-- TRUNCATE's message: the table and, once per client statement, the query text.
CREATE OR REPLACE FUNCTION pgtrail.truncate_body(schema_name name, table_name name, with_query boolean)
RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT json_build_object(
        'schema',          schema_name,
        'table',           table_name,
        'statement_start', statement_timestamp()::text,
        'query',           CASE WHEN with_query THEN current_query() END
    )::text;
END;

-- The key's pads, for the context trigger. Declared IMMUTABLE, which they
-- are for as long as a key lasts: the planner then folds them into the
-- trigger's cached plans, so a session reads the key once instead of on
-- every statement (half of what the trigger's check cost). Setup makes a new
-- key only together with installing this file again, which replaces the
-- functions below and with them every session's plans. They run with their
-- caller's rights: only the trigger, as the key's owner, gets the pads.
CREATE OR REPLACE FUNCTION pgtrail.key_inner_pad() RETURNS bytea LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT inner_pad FROM pgtrail.message_key;
END;
CREATE OR REPLACE FUNCTION pgtrail.key_outer_pad() RETURNS bytea LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT outer_pad FROM pgtrail.message_key;
END;
REVOKE EXECUTE ON FUNCTION pgtrail.key_inner_pad(), pgtrail.key_outer_pad() FROM PUBLIC;

-- Emits this session's context once per transaction, and again when it
-- changes. Run by the trigger (as the key's owner); not for PUBLIC. A
-- function of its own, not part of the trigger, because PL/pgSQL compiles a
-- trigger function once per table and prepares each copy's expressions in
-- every transaction: a transaction that writes four tables would prepare
-- all of this four times.
CREATE OR REPLACE FUNCTION pgtrail.emit_context_once() RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    xid pg_catalog.int8 := pgtrail.xid32();
    seen pg_catalog.text := pgtrail.emitted_tag(pgtrail.key_inner_pad(), xid, pgtrail.context_fingerprint());
    body pg_catalog.text;
    emitted pg_catalog.pg_lsn;
BEGIN
    -- The common case ends here: this context is already emitted in this
    -- transaction. pgtrail.emitted is set transaction-locally, so it is
    -- forgotten at commit or rollback, and reverted with a rolled-back
    -- savepoint, like the message.
    IF pg_catalog.texteq(pg_catalog.current_setting('pgtrail.emitted', true), seen) IS NOT TRUE THEN
        body := pgtrail.context_json();
        -- Without a key (its row deleted) the message goes out unsigned, so
        -- that the daemon records every such transaction instead of storing
        -- changes that silently lack their context.
        emitted := pg_catalog.pg_logical_emit_message(true, 'pgtrail', pg_catalog.textcat(
            COALESCE(pgtrail.hmac(pgtrail.key_inner_pad(), pgtrail.key_outer_pad(), 'pgtrail', xid, body),
                     pg_catalog.repeat('0', 64)), body));
        body := pg_catalog.set_config('pgtrail.emitted', seen, true);
    END IF;
    RETURN true;
END
$fn$;
REVOKE EXECUTE ON FUNCTION pgtrail.emit_context_once() FROM PUBLIC;

-- The trigger: SECURITY DEFINER, so that it may read the key; a trigger
-- function cannot be called directly, so it signs only what it builds
-- itself. Neither it nor what it calls has a SET search_path (that clause
-- alone cost more than all their own work on every statement): every name
-- in them is schema-qualified and they call functions, not operators, so no
-- search_path a caller sets can reach into them.
CREATE OR REPLACE FUNCTION pgtrail.emit_context() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
    done pg_catalog.bool := pgtrail.emit_context_once();
    xid pg_catalog.int8;
    seen pg_catalog.text;
    body pg_catalog.text;
    emitted pg_catalog.pg_lsn;
BEGIN
    -- TRUNCATE's options (CASCADE, RESTART IDENTITY) are not in the WAL
    -- record wal2json decodes, so the daemon reads them from the client's
    -- query text: sent with the first table of each client statement, then
    -- only the table. The trigger fires for every table the statement
    -- empties, including partitions and tables reached by CASCADE.
    IF pg_catalog.texteq(TG_OP, 'TRUNCATE') THEN
        xid := pgtrail.xid32();
        -- A MAC again, so that the caller cannot withhold the query text.
        seen := pgtrail.hmac(pgtrail.key_inner_pad(), pgtrail.key_outer_pad(), 'pgtrail.truncate_statement', xid,
                             pg_catalog.statement_timestamp()::pg_catalog.text);
        body := pgtrail.truncate_body(TG_TABLE_SCHEMA, TG_TABLE_NAME,
            pg_catalog.texteq(pg_catalog.current_setting('pgtrail.truncate_statement', true), seen) IS NOT TRUE);
        emitted := pg_catalog.pg_logical_emit_message(true, 'pgtrail_truncate', pg_catalog.textcat(
            COALESCE(pgtrail.hmac(pgtrail.key_inner_pad(), pgtrail.key_outer_pad(), 'pgtrail_truncate', xid, body),
                     pg_catalog.repeat('0', 64)), body));
        body := pg_catalog.set_config('pgtrail.truncate_statement', seen, true);
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
