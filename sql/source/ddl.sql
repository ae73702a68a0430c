-- Installed by `pgtrail setup` when it runs as a superuser (only a superuser
-- may create event triggers). Every DDL command, and every dropped object,
-- outside the system schemas and pgtrail's own becomes one transactional
-- logical message (prefix 'pgtrail_ddl') with the command, the object, the SQL
-- text and the same context as row changes; the daemon keeps those on
-- captured schemas as entries with action DDL. Messages are signed with
-- pgtrail.emit_signed (context.sql): the functions are SECURITY DEFINER.

-- Enrols every table of a captured root's partition tree that lacks the
-- context trigger or (with before images) REPLICA IDENTITY FULL, then
-- announces the tree (prefix 'pgtrail_partitions') whether captured or not:
-- the daemon decides by the root.
CREATE OR REPLACE FUNCTION pgtrail.enrol_partitions(root regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
    member record;
BEGIN
    SELECT n.nspname, c.relname INTO r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = root;
    IF pgtrail.is_captured(r.nspname, r.relname) THEN
        FOR member IN SELECT t.relid, c.relkind, c.relreplident,
                             EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = t.relid AND g.tgname = 'pgtrail_context') AS has_trigger
                      FROM pg_partition_tree(root) t JOIN pg_class c ON c.oid = t.relid LOOP
            IF NOT member.has_trigger THEN
                EXECUTE format('CREATE TRIGGER pgtrail_context BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                               'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.emit_context()', member.relid::regclass);
            END IF;
            IF member.relkind = 'r' AND member.relreplident <> 'f'
               AND coalesce((SELECT bool_or(before_images) FROM pgtrail.capture_options), false) THEN
                EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', member.relid::regclass);
            END IF;
        END LOOP;
    END IF;
    PERFORM pgtrail.emit_signed('pgtrail_partitions', json_build_object(
        'root',    json_build_object('schema', r.nspname, 'name', r.relname),
        'members', coalesce((
            SELECT json_agg(json_build_object('schema', cn.nspname, 'name', c.relname,
                                              'parent_schema', pn.nspname, 'parent_name', p.relname))
            FROM pg_partition_tree(root) t
            JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace cn ON cn.oid = c.relnamespace
            JOIN pg_class p ON p.oid = t.parentrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
            WHERE t.level > 0), '[]'::json)
    )::text);
END
$fn$;
-- Called by the event trigger only: it signs, and enrols as setup's role.
REVOKE EXECUTE ON FUNCTION pgtrail.enrol_partitions(regclass) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgtrail.emit_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
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
            SELECT c.relname, c.relkind, c.relispartition INTO rel FROM pg_class c WHERE c.oid = cmd.objid;
            -- A partition is captured by its root's name (enrol_partitions, below).
            IF NOT rel.relispartition AND pgtrail.is_captured(cmd.schema_name, rel.relname) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER pgtrail_context BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                               'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.emit_context()', cmd.object_identity);
                IF rel.relkind = 'r' AND coalesce((SELECT bool_or(before_images) FROM pgtrail.capture_options), false) THEN
                    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', cmd.object_identity);
                END IF;
            END IF;
        END IF;
        -- A partition created, attached, detached, renamed or moved: enrol the
        -- whole tree of a captured root (statement triggers are not inherited
        -- by partitions, and replica identity is per table), and announce the
        -- tree so the daemon names the partitions' changes by their root from
        -- this transaction on (and stores the map with its checkpoint). A
        -- partitioned table's ALTER TABLE is where ATTACH and DETACH PARTITION
        -- show up; there every tree is announced, since detaching a
        -- partitioned table makes it a root whose tree no other names.
        IF cmd.object_type = 'table' AND cmd.classid = 'pg_class'::regclass THEN
            IF cmd.command_tag = 'CREATE TABLE' AND (SELECT relispartition FROM pg_class WHERE oid = cmd.objid) THEN
                PERFORM pgtrail.enrol_partitions(pg_partition_root(cmd.objid));
            ELSIF cmd.command_tag = 'ALTER TABLE'
                  AND (SELECT relkind = 'p' OR relispartition FROM pg_class WHERE oid = cmd.objid) THEN
                FOR rel IN SELECT c.oid FROM pg_class c WHERE c.relkind = 'p' AND NOT c.relispartition LOOP
                    PERFORM pgtrail.enrol_partitions(rel.oid);
                END LOOP;
            END IF;
        END IF;
        PERFORM pgtrail.emit_signed('pgtrail_ddl', json_build_object(
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
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
        PERFORM pgtrail.emit_signed('pgtrail_ddl', json_build_object(
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
