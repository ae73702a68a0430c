-- Installed by `pgtrail setup` when it runs as a superuser (only a superuser
-- may create event triggers). Every DDL command, and every dropped object,
-- outside the system schemas and pgtrail's own becomes one transactional
-- logical message (prefix 'pgtrail_ddl') with the command, the object, the SQL
-- text and the same context as row changes; the daemon keeps those on
-- captured schemas as entries with action DDL.

CREATE OR REPLACE FUNCTION pgtrail.emit_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    cmd record;
    rel record;
BEGIN
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN cmd.schema_name IS NULL
            OR cmd.schema_name IN ('pgtrail', 'pg_catalog', 'information_schema')
            OR cmd.schema_name LIKE 'pg\_temp%' OR cmd.schema_name LIKE 'pg\_toast%';
        -- A new table that the capture set matches is enrolled at once, in the
        -- same transaction, so its first change already carries context.
        IF cmd.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') AND cmd.object_type = 'table' THEN
            SELECT c.relname, c.relkind INTO rel FROM pg_class c WHERE c.oid = cmd.objid;
            IF pgtrail.is_captured(cmd.schema_name, rel.relname) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER pgtrail_context BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                               'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.emit_context()', cmd.object_identity);
                IF rel.relkind = 'r' AND coalesce((SELECT bool_or(before_images) FROM pgtrail.capture_options), false) THEN
                    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', cmd.object_identity);
                END IF;
            END IF;
        END IF;
        PERFORM pg_logical_emit_message(true, 'pgtrail_ddl', json_build_object(
            'command_tag',     cmd.command_tag,
            'object_type',     cmd.object_type,
            'schema',          cmd.schema_name,
            'object_name',     CASE WHEN cmd.classid = 'pg_class'::regclass
                                    THEN (SELECT relname FROM pg_class WHERE oid = cmd.objid) END,
            'object_identity', cmd.object_identity,
            'sql',             current_query(),
            'context',         pgtrail.context_json()::json
        )::text);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION pgtrail.emit_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    obj record;
BEGIN
    -- DROP commands only: what ALTER TABLE … DROP COLUMN drops is reported by
    -- emit_ddl as the ALTER TABLE itself.
    IF tg_tag NOT LIKE 'DROP %' THEN
        RETURN;
    END IF;
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
        CONTINUE WHEN obj.schema_name IS NULL
            OR obj.schema_name IN ('pgtrail', 'pg_catalog', 'information_schema')
            OR obj.schema_name LIKE 'pg\_temp%' OR obj.schema_name LIKE 'pg\_toast%';
        PERFORM pg_logical_emit_message(true, 'pgtrail_ddl', json_build_object(
            'command_tag',     tg_tag,
            'object_type',     obj.object_type,
            'schema',          obj.schema_name,
            'object_name',     obj.object_name,
            'object_identity', obj.object_identity,
            'sql',             current_query(),
            'context',         pgtrail.context_json()::json
        )::text);
    END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS pgtrail_ddl;
CREATE EVENT TRIGGER pgtrail_ddl ON ddl_command_end EXECUTE FUNCTION pgtrail.emit_ddl();
DROP EVENT TRIGGER IF EXISTS pgtrail_drop;
CREATE EVENT TRIGGER pgtrail_drop ON sql_drop EXECUTE FUNCTION pgtrail.emit_drop();
