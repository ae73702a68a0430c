-- Retention (src/store/retention/): old entries go a whole partition at a
-- time through pgtrail.drop_partition, never row by row, and every chain
-- stays verifiable across the cut.
--
-- The store's retention, as `pgtrail setup` sets it from [store] retention
-- (NULL: keep everything). The store's value is the one enforced: a daemon
-- whose config disagrees warns and uses this one.
ALTER TABLE pgtrail.settings ADD COLUMN retention interval
    CONSTRAINT settings_retention_positive CHECK (retention > interval '0');
-- Whether a partition with entries may go only with its archives
-- ([store] archive_dir was set when setup last ran): a daemon or command
-- whose config lacks archive_dir cannot drop unarchived.
ALTER TABLE pgtrail.settings ADD COLUMN archive_required boolean NOT NULL DEFAULT false;

-- Where a drop cut a chain: for every dropped entry whose successor in its
-- chain was not dropped (normally the last dropped entry of each source),
-- its id, hash and how many dropped (hashed) entries its run held. `pgtrail
-- verify` continues the chain from the last anchor before the next present
-- entry, and checks ALL anchor rows against the digest the newest drop's
-- event records (found through the ledger's drop_event): the newest event
-- is in a live partition, since only a later drop could remove it, and a
-- later drop's event covers every anchor again.
CREATE TABLE pgtrail.chain_anchors (
    source          smallint NOT NULL,
    dropped_id      bigint   NOT NULL,
    dropped_hash    bytea    NOT NULL CHECK (length(dropped_hash) = 32),
    dropped_entries bigint   NOT NULL CHECK (dropped_entries > 0),
    partition       text     NOT NULL REFERENCES pgtrail.partitions (name),
    PRIMARY KEY (source, dropped_id)
);
CREATE TRIGGER chain_anchors_append_only BEFORE UPDATE OR DELETE ON pgtrail.chain_anchors
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER chain_anchors_no_truncate BEFORE TRUNCATE ON pgtrail.chain_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();

-- The canonical form of src/store/chain.rs, in SQL, for the one event the
-- store itself writes (the drop's): 0x00 for null, 0x01 + 8 bytes
-- big-endian for a number, 0x02 + 4 bytes big-endian length + UTF-8 for text.
CREATE FUNCTION pgtrail.canonical_number(n bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN n IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int8send(n) END
$$;
CREATE FUNCTION pgtrail.canonical_text(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN t IS NULL THEN '\x00'::bytea
        ELSE '\x02'::bytea || int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') END
$$;

-- The anchor rows' canonical text, whose SHA-256 each drop's event records:
-- one line per anchor of the store, `partition source dropped_id hash-hex
-- dropped_entries`, in (source, dropped_id) order. `pgtrail verify`
-- recomputes it (src/cli/verify/anchors.rs).
CREATE FUNCTION pgtrail.anchor_digest() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(coalesce(string_agg(
        format('%s %s %s %s %s', partition, source, dropped_id, encode(dropped_hash, 'hex'),
               dropped_entries) || E'\n',
        '' ORDER BY source, dropped_id), ''), 'UTF8')), 'hex')
    FROM pgtrail.chain_anchors
$$;

-- Drops one partition of entries, past the stored retention, in ONE
-- transaction with the anchors and the event that records it. p_archives:
-- a JSON array of {"source": id, "entries": n, "file": name, "sha256": hex},
-- one per source present with its exact count; an empty array only without
-- archiving, which the event then says. Returns the event's entry id.
-- Runs as the store's owner (who owns the partitions); EXECUTE is the
-- writer's alone. The time is the server's now(), never a caller's.
-- Time and interval text, and the cut-off's arithmetic, are the same
-- whatever the caller's settings.
CREATE FUNCTION pgtrail.drop_partition(p_name text, p_archives json) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET lock_timeout = '5s' AS $$
DECLARE
    part pgtrail.partitions;
    keep interval;
    archived_only boolean;
    counts json;
    problem text;
    digest text;
    at timestamptz;
    ctx text;
    det text;
    event_id bigint;
BEGIN
    SELECT retention, archive_required INTO keep, archived_only FROM pgtrail.settings;
    IF keep IS NULL THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: the store keeps everything (no retention set)'
            USING HINT = 'Set [store] retention in the config and run `pgtrail setup`.';
    END IF;
    SELECT * INTO part FROM pgtrail.partitions WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: % is not a partition of pgtrail.entries', p_name;
    ELSIF part.dropped_at IS NOT NULL THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: % was dropped at %', p_name, part.dropped_at;
    ELSIF part.held_until IS NOT NULL AND part.held_until >= now() THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: % is held until %', p_name, part.held_until;
    ELSIF part.to_at > now() - keep THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: % ends at %, within the retention of % (until %)',
            p_name, part.to_at, keep, part.to_at + keep
            USING ERRCODE = 'check_violation';
    END IF;
    -- Nothing is written to it from here on, so the anchors and counts hold;
    -- reading it goes on until the detach below.
    EXECUTE format('LOCK TABLE pgtrail.%I IN SHARE MODE', p_name);

    EXECUTE format('SELECT coalesce(json_object_agg(source, n ORDER BY source), ''{}'') '
        'FROM (SELECT source, count(*) AS n FROM pgtrail.%I GROUP BY source) c', p_name) INTO counts;
    IF p_archives IS NULL OR json_typeof(p_archives) <> 'array' THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: p_archives must be a JSON array (empty without archiving)';
    END IF;
    IF archived_only AND json_array_length(p_archives) = 0 AND counts::text <> '{}' THEN
        RAISE EXCEPTION 'pgtrail.drop_partition: % holds entries and this store requires archives', p_name
            USING ERRCODE = 'check_violation',
                  HINT = 'Run the pass with [store] archive_dir set (setup stored that archives are required).';
    END IF;
    IF json_array_length(p_archives) > 0 THEN
        IF EXISTS (SELECT FROM json_array_elements(p_archives) x
                   WHERE json_typeof(x) <> 'object' OR coalesce(x->>'entries', '') !~ '^[0-9]{1,18}$'
                      OR coalesce(x->>'source', '') !~ '^[0-9]{1,5}$') THEN
            RAISE EXCEPTION 'pgtrail.drop_partition: each archive must be {"source": id, "entries": n, "file": name, "sha256": hex}';
        END IF;
        SELECT string_agg(format('source %s: %s entries, archives say %s', coalesce(c.key, a.source),
                    coalesce(c.value, '0'), coalesce(a.entries::text, 'nothing')), '; ')
        INTO problem
        FROM json_each_text(counts) c
        FULL JOIN (SELECT (x->>'source') AS source, sum((x->>'entries')::bigint) AS entries,
                          count(*) AS files, bool_and(x->>'file' IS NOT NULL AND x->>'sha256' ~ '^[0-9a-f]{64}$') AS named
                   FROM json_array_elements(p_archives) x GROUP BY 1) a ON a.source = c.key
        WHERE c.key IS NULL OR a.source IS NULL OR a.entries <> c.value::bigint
           OR a.files <> 1 OR NOT a.named;
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'pgtrail.drop_partition: the archives do not match %: %', p_name, problem;
        END IF;
    END IF;

    -- The anchors (see chain_anchors): the partition's entries and those of
    -- other partitions whose ids fall within its id range, by (source, id);
    -- a run of dropped entries ends where the next is not dropped. Entries
    -- stored before the chain began (no hash) are in no chain: they neither
    -- end nor split a run, nor count in one.
    EXECUTE format($q$
        INSERT INTO pgtrail.chain_anchors (source, dropped_id, dropped_hash, dropped_entries, partition)
        WITH b AS (SELECT min(id) AS lo, max(id) AS hi FROM pgtrail.%1$I),
        w AS (SELECT e.id, e.source, e.hash, e.tableoid = 'pgtrail.%1$I'::regclass AS inside
              FROM pgtrail.entries e, b WHERE e.id BETWEEN b.lo AND b.hi AND e.hash IS NOT NULL),
        r AS (SELECT *, sum(CASE WHEN inside THEN 0 ELSE 1 END) OVER (PARTITION BY source ORDER BY id) AS run
              FROM w),
        a AS (SELECT source, run, max(id) AS last, count(*) AS n FROM r WHERE inside GROUP BY source, run)
        SELECT a.source, a.last, r.hash, a.n, %2$L FROM a JOIN r ON r.source = a.source AND r.id = a.last
    $q$, p_name, p_name);
    digest := pgtrail.anchor_digest();
    -- The parent's lock before the events head's row (record_event), the
    -- order record_event takes them in too: no deadlock with an event being
    -- recorded. Waits at most lock_timeout; the detach needs it anyway.
    LOCK TABLE pgtrail.entries IN ACCESS EXCLUSIVE MODE;
    -- The drop's time: now, after the counting and the locks (record_event
    -- wants a time near the server's clock from the writer's sessions).
    at := date_trunc('microseconds', clock_timestamp());

    ctx := json_build_object('db_user', NULL, 'client_addr', NULL, 'application_name', 'pgtrail retention',
        'actor', NULL, 'source', 'pgtrail', 'remarks',
        format('partition %s dropped: past the retention of %s', p_name, keep),
        'current_user', NULL, 'client_port', NULL, 'backend_pid', NULL)::text;
    det := json_build_object('event', 'partition_dropped', 'partition', p_name,
        'from', part.from_at, 'to', part.to_at, 'retention', keep::text, 'entries', counts,
        'archived', json_array_length(p_archives) > 0, 'archives', p_archives,
        'anchors_sha256', digest)::text;
    event_id := pgtrail.record_event(at, 'retention', NULL, NULL, NULL, NULL, ctx::json, det::json,
        NULL, NULL,
        sha256(pgtrail.canonical_number((extract(epoch FROM at) * 1000000)::bigint)
            || pgtrail.canonical_number(NULL) || pgtrail.canonical_number(NULL)
            || pgtrail.canonical_text('pgtrail') || pgtrail.canonical_text('retention')
            || pgtrail.canonical_text('EVENT') || pgtrail.canonical_text(NULL)
            || pgtrail.canonical_text(NULL) || pgtrail.canonical_text(NULL)
            || pgtrail.canonical_text(NULL) || pgtrail.canonical_text(ctx)
            || pgtrail.canonical_text(det)));

    EXECUTE format('ALTER TABLE pgtrail.entries DETACH PARTITION pgtrail.%I', p_name);
    EXECUTE format('DROP TABLE pgtrail.%I', p_name);
    UPDATE pgtrail.partitions SET dropped_at = now(), drop_event = event_id WHERE name = p_name;
    RETURN event_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.drop_partition(text, json) FROM PUBLIC;

-- record_event, restated whole (0016's): the same checks and link, with the
-- category `retention` (drops, failed archives, restores), which only
-- capture (the writer, or the store's owner) may record, as gaps and
-- quarantine: the web view's reader role cannot fake a drop's record.
CREATE OR REPLACE FUNCTION pgtrail.record_event(
    p_committed_at timestamptz, p_table text, p_primary_key json, p_before json,
    p_after json, p_changed_columns json, p_context json, p_details json,
    p_actor text, p_client_addr inet, p_digest bytea)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    link bytea;
    new_id bigint;
BEGIN
    IF p_table NOT IN ('gap', 'quarantine', 'retention', 'session', 'user', 'token', 'export', 'config') THEN
        RAISE EXCEPTION 'pgtrail.record_event: % is not a category of pgtrail''s events', p_table;
    END IF;
    IF p_table IN ('gap', 'quarantine', 'retention')
        AND NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entries'::regclass), 'USAGE')
        AND NOT EXISTS (SELECT FROM pg_roles
            WHERE rolname = 'pgtrail_writer' AND pg_has_role(session_user, oid, 'USAGE')) THEN
        RAISE EXCEPTION 'pgtrail.record_event: only capture records % events', p_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Gaps, quarantine and retention are recorded by `pgtrail run`, `pgtrail setup` and `pgtrail retention`, whose login role is a member of pgtrail_writer.';
    END IF;
    IF length(p_digest) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'pgtrail.record_event: the digest must be 32 bytes (SHA-256)';
    END IF;
    -- The entries' lock before the head's row, as drop_partition takes them.
    LOCK TABLE pgtrail.entries IN ROW EXCLUSIVE MODE;
    PERFORM pgtrail.ensure_partition(p_committed_at);
    UPDATE pgtrail.chain_heads SET hash = sha256(hash || p_digest), entries = entries + 1, updated_at = now()
        WHERE source = 0 RETURNING hash INTO link;
    IF link IS NULL THEN
        RAISE EXCEPTION 'the events chain has no head in pgtrail.chain_heads; run `pgtrail setup`';
    END IF;
    INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key,
            before, after, changed_columns, context, details, actor, client_addr, hash, source)
        VALUES (p_committed_at, NULL, NULL, 'pgtrail', p_table, 'EVENT', p_primary_key,
            p_before, p_after, p_changed_columns, p_context, p_details, p_actor, p_client_addr, link, 0)
        RETURNING id INTO new_id;
    RETURN new_id;
END $$;
