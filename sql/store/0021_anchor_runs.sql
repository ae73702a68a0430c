-- Retention's anchors (0018) made the same whatever was dropped or restored
-- before or after (src/store/retention/, src/archive/restore.rs,
-- src/cli/verify/anchors.rs, src/archive/seams.rs).
--
-- A chain is every hashed entry of its source ever stored, in id order,
-- whether in the store or dropped. A partition's runs, per source, are the
-- stretches of its entries that are consecutive in that chain: two of its
-- entries are in one run when the chain holds no other entry between them.
-- The drop tells that from the store: between them is an entry of another
-- partition, or an anchor (the end of a run another drop cut: that run
-- ended before this partition's next entry, which was in the store then or
-- came after every id of that drop's partition, since ids are handed out in
-- order). Migration 18 looked at the entries still in the store only: a
-- partition whose ids interleave with one dropped before it got runs that
-- spanned the other's dropped entries, which no restore could link (its
-- archive was refused), and a restored partition dropped again after its
-- neighbour went got other runs than its first drop (and was kept for ever).
--
-- Each anchor now also records its run's predecessor: the id and hash of
-- the chain's entry just before the run's first (no id and 32 zero bytes
-- where the chain starts). That entry is in the store or is itself an
-- anchor (the run it ends stops there, as this run's first entry follows),
-- so the drop finds it; recorded, it binds the run to its place in the
-- chain: a restore links the run's first entry to it whatever was dropped or
-- restored since, and `pgtrail verify` and the archive writer, crossing the
-- cut, check that the chain stands there. Anchors written before this
-- migration have none (both NULL) and are checked as before.
ALTER TABLE pgtrail.chain_anchors
    ADD COLUMN prev_id bigint,
    ADD COLUMN prev_hash bytea,
    ADD CONSTRAINT chain_anchors_prev CHECK (CASE WHEN prev_hash IS NULL THEN prev_id IS NULL
        ELSE length(prev_hash) = 32 AND (prev_id IS NULL OR prev_id < dropped_id) END);

-- Every drop event of a partition, oldest first (a partition restored and
-- dropped again has several; drop_event is the newest): a restore says
-- whether its archive is one any of them recorded. Only the owner writes
-- the ledger, so these are the drops' own events, never ones the writer
-- role recorded with made-up details. For drops before this migration: the
-- newest, and the one the last restore followed (its event names it).
ALTER TABLE pgtrail.partitions ADD COLUMN drop_events bigint[] NOT NULL DEFAULT '{}';
UPDATE pgtrail.partitions p SET drop_events = ARRAY(
    SELECT DISTINCT d FROM unnest(ARRAY[
        (SELECT CASE WHEN e.details->>'drop_event' ~ '^[0-9]{1,18}$' THEN (e.details->>'drop_event')::bigint END
         FROM pgtrail.entries e
         WHERE e.id = p.restore_event AND e.source = 0 AND e.table_name = 'retention'
           AND e.details->>'event' = 'partition_restored'),
        p.drop_event]) d
    WHERE d IS NOT NULL ORDER BY d)
WHERE p.drop_event IS NOT NULL;

-- The sources a restored partition holds again (restore is per source, one
-- archive each), while it is in the store: their anchors are met by their
-- entries, and `pgtrail verify` takes crossing one (a restored entry
-- missing) for a deletion, not a drop. Only the owner writes the ledger.
-- For partitions restored before this migration: the sources they hold.
ALTER TABLE pgtrail.partitions ADD COLUMN restored_sources smallint[] NOT NULL DEFAULT '{}';
DO $$
DECLARE
    p text;
BEGIN
    FOR p IN SELECT name FROM pgtrail.partitions
             WHERE dropped_at IS NULL AND restored_at IS NOT NULL
               AND to_regclass(format('pgtrail.%I', name)) IS NOT NULL LOOP
        EXECUTE format('UPDATE pgtrail.partitions SET restored_sources = '
            'ARRAY(SELECT DISTINCT source FROM pgtrail.%I ORDER BY 1) WHERE name = %L', p, p);
    END LOOP;
END $$;

-- The anchors' canonical text (0018's line per anchor), with
-- ` prev_id prev_hash-hex` (`-` for no id) after the count of an anchor that
-- records its predecessor. An anchor written before this migration keeps
-- its line, so the digest its drop's event recorded still matches.
-- `pgtrail verify` recomputes it (src/cli/verify/anchors.rs).
CREATE OR REPLACE FUNCTION pgtrail.anchor_digest() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(coalesce(string_agg(
        format('%s %s %s %s %s', partition, source, dropped_id, encode(dropped_hash, 'hex'),
               dropped_entries)
        || CASE WHEN prev_hash IS NULL THEN ''
                ELSE format(' %s %s', coalesce(prev_id::text, '-'), encode(prev_hash, 'hex')) END
        || E'\n',
        '' ORDER BY source, dropped_id), ''), 'UTF8')), 'hex')
    FROM pgtrail.chain_anchors
$$;

-- The first anchored run of partition p_partition, source p_source, that
-- the entries of table p_table (that partition, made again) do not match:
-- a run is the entries after the partition's previous anchor up to this
-- one, and must number the anchor's count and end in its id and hash.
-- Entries after the last anchor come as a run with no anchor (NULL
-- dropped_id). No row when every run matches. Reads p_table once, whatever
-- the number of runs (the table has no index before it is attached).
CREATE FUNCTION pgtrail.run_mismatch(p_table regclass, p_partition text, p_source smallint)
RETURNS TABLE (dropped_id bigint, dropped_entries bigint, dropped_hash bytea,
               counted bigint, last_id bigint, last_hash bytea)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH a AS (SELECT dropped_id, dropped_hash, dropped_entries FROM pgtrail.chain_anchors
                   WHERE partition = $1 AND source = $2),
        u AS (SELECT id, hash, 0 AS k FROM %1$s WHERE source = $2
              UNION ALL SELECT dropped_id, dropped_hash, 1 FROM a),
        -- Each entry's run: the first anchor at or after it.
        m AS (SELECT id, hash, k, min(CASE WHEN k = 1 THEN id END)
                  OVER (ORDER BY id DESC, k DESC ROWS UNBOUNDED PRECEDING) AS run
              FROM u),
        g AS (SELECT run, count(*) FILTER (WHERE k = 0) AS n, max(id) FILTER (WHERE k = 0) AS last
              FROM m GROUP BY run)
        SELECT a.dropped_id, a.dropped_entries, a.dropped_hash, g.n, g.last, e.hash
        FROM g LEFT JOIN a ON a.dropped_id = g.run
        LEFT JOIN m e ON e.id = g.last AND e.k = 0
        WHERE a.dropped_id IS NULL OR g.n <> a.dropped_entries OR g.last IS DISTINCT FROM a.dropped_id
           OR e.hash IS DISTINCT FROM a.dropped_hash
        ORDER BY g.run NULLS LAST LIMIT 1 $q$, p_table)
        USING p_partition, p_source;
END $$;
REVOKE ALL ON FUNCTION pgtrail.run_mismatch(regclass, text, smallint) FROM PUBLIC;

-- drop_partition, restated whole (0018's): the same checks, locks and
-- event, with the anchors of the rule above, each with its predecessor; and
-- a restored partition dropped again keeps its first drop's anchors.
CREATE OR REPLACE FUNCTION pgtrail.drop_partition(p_name text, p_archives json) RETURNS bigint
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
    src smallint;
    gap record;
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

    IF part.restored_at IS NOT NULL THEN
        -- Restored (0019) and dropped again: it holds the entries its first
        -- drop's anchors describe (restore checked them; it took no entry
        -- since), and those anchors stay as they are, whatever was dropped
        -- or restored meanwhile (so chain_anchors_again, 0019, meets none of
        -- them; it stays, refusing any anchor of a restored partition that
        -- differs). Checked once more: a partition that no longer matches
        -- them is kept.
        FOR src IN EXECUTE format('SELECT DISTINCT source FROM pgtrail.%I', p_name) LOOP
            SELECT * INTO gap FROM pgtrail.run_mismatch(format('pgtrail.%I', p_name)::regclass, p_name, src);
            IF FOUND THEN
                RAISE EXCEPTION 'pgtrail: the restored partition % no longer ends where its first drop said (source %, entry %: % entries, the drop anchored %)',
                    p_name, src, coalesce(gap.dropped_id, gap.last_id), gap.counted, coalesce(gap.dropped_entries, 0)
                    USING HINT = 'Run `pgtrail verify`; the partition is kept.';
            END IF;
        END LOOP;
    ELSE
        -- The anchors: per source, the partition's hashed entries and, within
        -- their ids, the chain's other entries in the store and the anchors
        -- of earlier drops, in id order; a run of the partition's entries
        -- ends where one of the others comes. Each run's predecessor is the
        -- entry or anchor of its chain just before its first entry. Entries
        -- stored before the chain began (no hash) are in no chain: they
        -- neither end nor split a run, nor count in one.
        EXECUTE format($q$
            INSERT INTO pgtrail.chain_anchors
                (source, dropped_id, dropped_hash, dropped_entries, partition, prev_id, prev_hash)
            WITH b AS (SELECT source, min(id) AS lo, max(id) AS hi FROM pgtrail.%1$I
                       WHERE hash IS NOT NULL GROUP BY source),
            w AS (SELECT id, source, hash, true AS inside FROM pgtrail.%1$I WHERE hash IS NOT NULL
                  UNION ALL
                  SELECT e.id, e.source, e.hash, false FROM pgtrail.entries e
                  JOIN b ON e.source = b.source AND e.id BETWEEN b.lo AND b.hi
                  WHERE e.hash IS NOT NULL AND e.tableoid <> 'pgtrail.%1$I'::regclass
                  UNION ALL
                  SELECT a.dropped_id, a.source, a.dropped_hash, false FROM pgtrail.chain_anchors a
                  JOIN b ON a.source = b.source AND a.dropped_id BETWEEN b.lo AND b.hi),
            r AS (SELECT *, sum(CASE WHEN inside THEN 0 ELSE 1 END)
                                OVER (PARTITION BY source ORDER BY id, inside) AS run
                  FROM w),
            runs AS (SELECT source, run, min(id) AS first, max(id) AS last, count(*) AS n
                     FROM r WHERE inside GROUP BY source, run)
            SELECT a.source, a.last, r.hash, a.n, %2$L, p.id,
                   coalesce(p.hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
            FROM runs a JOIN r ON r.source = a.source AND r.id = a.last AND r.inside
            LEFT JOIN LATERAL (
                SELECT x.id, x.hash FROM (
                    (SELECT e.id, e.hash FROM pgtrail.entries e
                     WHERE e.source = a.source AND e.id < a.first AND e.hash IS NOT NULL
                     ORDER BY e.id DESC LIMIT 1)
                    UNION ALL
                    (SELECT c.dropped_id, c.dropped_hash FROM pgtrail.chain_anchors c
                     WHERE c.source = a.source AND c.dropped_id < a.first
                     ORDER BY c.dropped_id DESC LIMIT 1)) x
                ORDER BY x.id DESC LIMIT 1) p ON true
        $q$, p_name, p_name);
    END IF;
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
    -- Every drop's event kept, the one before (when a drop older than this
    -- migration's function set drop_event alone) too.
    UPDATE pgtrail.partitions SET dropped_at = now(), drop_event = event_id, restored_sources = '{}',
        drop_events = CASE WHEN drop_event IS NULL OR drop_event = ANY (drop_events) THEN drop_events
                           ELSE drop_events || drop_event END || event_id
        WHERE name = p_name;
    RETURN event_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.drop_partition(text, json) FROM PUBLIC;

-- restore_partition, restated whole (0019's): the same arguments, rights,
-- locks and event. What changed: each anchored run is checked as the
-- chain really ran. A run's first entry follows the predecessor its anchor
-- records (for an anchor from before migration 21, where the store's chain
-- stands before it: an entry, another drop's anchor, or the start), every
-- other entry the one before it in the run, and each run ends in its
-- anchor's id and hash (0019 checked the last run's end only, so a changed
-- entry ending an earlier run, its hash recomputed, went in). No entry of
-- the archive may have the id of an entry another drop cut. And whether the
-- archive was recorded is asked of every drop of the partition (the
-- ledger's drop_events), by its SHA-256 and source; the source
-- restored joins the ledger's restored_sources.
CREATE OR REPLACE FUNCTION pgtrail.restore_partition(
    p_source smallint, p_source_name text, p_from timestamptz, p_to timestamptz,
    p_archive json, p_hold interval, p_actor text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET default_tablespace = ''
SET default_table_access_method = 'heap'
SET lock_timeout = '5s' AS $$
DECLARE
    part pgtrail.partitions;
    v_name text;
    loaded bigint;
    last_id bigint;
    anchored bytea;
    other text;
    adding boolean;
    gap record;
    n bigint;
    bad bigint;
    recorded boolean;
    at timestamptz := date_trunc('microseconds', clock_timestamp());
    ctx text;
    det text;
    event_id bigint;
    hint_fix constant text := 'Restore the archive retention wrote when it dropped the range (its SHA-256 is in the drop''s retention event), as it was written.';
BEGIN
    IF p_hold IS NULL OR p_hold <= interval '0' THEN
        RAISE EXCEPTION 'pgtrail.restore_partition: the hold must be a positive interval, not %', p_hold;
    END IF;
    IF to_regclass('pg_temp.pgtrail_restore') IS NULL THEN
        RAISE EXCEPTION 'pgtrail.restore_partition: load the archive''s entries into pg_temp.pgtrail_restore first';
    END IF;
    IF NOT EXISTS (SELECT FROM pgtrail.sources WHERE id = p_source AND name = p_source_name) THEN
        RAISE EXCEPTION 'the archive is of source % (id %), which this store does not have under that id: it is an archive of another store',
            p_source_name, p_source
            USING HINT = 'Restore it into the store it was written from.';
    END IF;
    SELECT count(*), max(id) INTO loaded, last_id FROM pg_temp.pgtrail_restore;
    IF loaded = 0 THEN
        RAISE EXCEPTION 'the archive holds no entries: there is nothing to restore';
    END IF;
    SELECT id INTO bad FROM pg_temp.pgtrail_restore
        WHERE source IS DISTINCT FROM p_source OR hash IS NULL ORDER BY id LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'entry % of the archive is of another source, or has no hash: only whole chained entries of source % can be bound to the store''s anchors',
            bad, p_source_name;
    END IF;

    -- Which drop: the anchor of the archive's last entry.
    SELECT a.partition, a.dropped_hash INTO v_name, anchored FROM pgtrail.chain_anchors a
        WHERE a.source = p_source AND a.dropped_id = last_id;
    IF v_name IS NULL THEN
        SELECT p.name INTO other FROM pgtrail.partitions p
            WHERE p.dropped_at IS NULL AND p.from_at < p_to AND p.to_at > p_from LIMIT 1;
        IF other IS NOT NULL AND EXISTS (SELECT FROM pgtrail.entries WHERE id = last_id AND source = p_source) THEN
            RAISE EXCEPTION 'the range of the archive [%, %) was not dropped: its entries are in the store (partition %)',
                p_from, p_to, other
                USING HINT = 'Nothing to restore: read them in the store.';
        END IF;
        RAISE EXCEPTION 'the store recorded no drop that ends in entry %, the archive''s last of source %: the archive is not of this store, or was cut short or changed',
            last_id, p_source_name USING HINT = hint_fix;
    END IF;
    IF (SELECT hash FROM pg_temp.pgtrail_restore WHERE id = last_id) IS DISTINCT FROM anchored THEN
        RAISE EXCEPTION 'the archive''s last entry % has hash %, but the store recorded % when it dropped it: the archive was changed or forged',
            last_id, encode((SELECT hash FROM pg_temp.pgtrail_restore WHERE id = last_id), 'hex'), encode(anchored, 'hex')
            USING HINT = hint_fix;
    END IF;
    -- Serialized with ensure_partition, which makes partitions.
    PERFORM pg_advisory_xact_lock(7420502);
    SELECT * INTO part FROM pgtrail.partitions WHERE name = v_name FOR UPDATE;
    IF part.from_at <> p_from OR part.to_at <> p_to THEN
        RAISE EXCEPTION 'the archive''s range [%, %) is not that of the partition % it was dropped from, [%, %)',
            p_from, p_to, v_name, part.from_at, part.to_at USING HINT = hint_fix;
    END IF;
    adding := part.dropped_at IS NULL;
    IF adding THEN
        -- Restored before, for another source: this one's entries join it.
        IF part.restored_at IS NULL OR to_regclass(format('pgtrail.%I', v_name)) IS NULL THEN
            RAISE EXCEPTION 'partition % is in the store, not dropped: there is nothing to restore', v_name;
        END IF;
        EXECUTE format('SELECT count(*) FROM pgtrail.%I WHERE source = $1', v_name) INTO n USING p_source;
        IF n > 0 THEN
            RAISE EXCEPTION 'partition % was already restored (at %) with the entries of source %; it is held until %',
                v_name, part.restored_at, p_source_name, part.held_until
                USING HINT = 'Nothing to restore: read them in the store.';
        END IF;
        EXECUTE format('DROP TRIGGER entries_restored_read_only ON pgtrail.%I', v_name);
    ELSE
        SELECT p.name INTO other FROM pgtrail.partitions p
            WHERE p.dropped_at IS NULL AND p.from_at < part.to_at AND p.to_at > part.from_at LIMIT 1;
        IF other IS NOT NULL THEN
            RAISE EXCEPTION 'partition % cannot be made again: its range is held by partition %, made after the drop for entries committed in it',
                v_name, other
                USING HINT = 'Read the archive with `pgtrail verify --archive`, or restore it into another store.';
        END IF;
        IF to_regclass(format('pgtrail.%I', v_name)) IS NOT NULL THEN
            RAISE EXCEPTION 'a table pgtrail.% exists, though the ledger says it was dropped: it was made past pgtrail', v_name
                USING HINT = 'Find out who made it and why; restore refuses to touch it.';
        END IF;
        EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
            v_name, v_name || '_range', part.from_at, part.to_at);
    END IF;
    EXECUTE format('INSERT INTO pgtrail.%I (id, committed_at, xid, lsn, schema_name, table_name, action, '
        'primary_key, before, after, changed_columns, context, row_key, details, actor, client_addr, hash, source) '
        'SELECT id, committed_at, xid, lsn::pg_lsn, schema_name, table_name, action, primary_key::json, '
        'before::json, after::json, changed_columns::json, context::json, row_key, details::json, actor, '
        'client_addr, hash, source FROM pg_temp.pgtrail_restore ORDER BY id', v_name);

    -- Ids are unique in the store (no index across partitions says so), and
    -- none is that of an entry another drop cut.
    SELECT min(id) INTO bad FROM (SELECT id FROM pg_temp.pgtrail_restore GROUP BY id HAVING count(*) > 1) d;
    IF bad IS NULL THEN
        EXECUTE format('SELECT min(e.id) FROM pgtrail.entries e JOIN pgtrail.%I r ON r.id = e.id AND r.source = $1 '
            'WHERE e.id BETWEEN $2 AND $3 AND NOT (e.tableoid = %L::regclass AND e.source = $1)',
            v_name, format('pgtrail.%I', v_name))
            INTO bad USING p_source, (SELECT min(id) FROM pg_temp.pgtrail_restore), last_id;
    END IF;
    IF bad IS NULL THEN
        SELECT min(r.id) INTO bad FROM pg_temp.pgtrail_restore r
            JOIN pgtrail.chain_anchors a ON a.dropped_id = r.id
            WHERE NOT (a.partition = v_name AND a.source = p_source);
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the archive''s entry % has the id of an entry in the store, or of one another drop cut: the archive was changed or forged', bad
            USING HINT = hint_fix;
    END IF;
    -- Each run the drop anchored: its count and its end.
    SELECT * INTO gap FROM pgtrail.run_mismatch(format('pgtrail.%I', v_name)::regclass, v_name, p_source);
    IF FOUND AND (gap.dropped_id IS NULL OR gap.counted <> gap.dropped_entries) THEN
        RAISE EXCEPTION 'the archive holds % entries of source % %, where the store dropped %: entries were removed from or added to the archive',
            gap.counted, p_source_name,
            CASE WHEN gap.dropped_id IS NULL THEN 'after the last entry the drop anchored'
                 ELSE format('in the run up to entry %s', gap.dropped_id) END,
            coalesce(gap.dropped_entries, 0) USING HINT = hint_fix;
    ELSIF FOUND THEN
        RAISE EXCEPTION 'the archive''s run up to entry % of source % ends in entry % with hash %, where the store dropped entry % with hash %: the archive was changed or forged',
            gap.dropped_id, p_source_name, gap.last_id, encode(gap.last_hash, 'hex'), gap.dropped_id,
            encode(gap.dropped_hash, 'hex') USING HINT = hint_fix;
    END IF;
    -- Every link: each entry's hash recomputed from its content, after the
    -- entry before it in its run, or the run's predecessor.
    EXECUTE format($q$
        WITH a AS (SELECT dropped_id, prev_hash FROM pgtrail.chain_anchors
                   WHERE partition = $2 AND source = $1),
        u AS (SELECT id, 0 AS k FROM pgtrail.%1$I WHERE source = $1
              UNION ALL SELECT dropped_id, 1 FROM a),
        m AS (SELECT id, k, min(CASE WHEN k = 1 THEN id END)
                  OVER (ORDER BY id DESC, k DESC ROWS UNBOUNDED PRECEDING) AS run
              FROM u),
        r AS (SELECT e.id, e.hash, m.run, lag(e.hash) OVER (PARTITION BY m.run ORDER BY e.id) AS prev,
                     pgtrail.entry_digest(e.committed_at, e.xid, e.lsn, e.schema_name, e.table_name, e.action,
                         e.primary_key, e.before, e.after, e.changed_columns, e.context, e.details) AS digest
              FROM pgtrail.%1$I e JOIN m ON m.id = e.id AND m.k = 0 WHERE e.source = $1)
        SELECT r.id FROM r LEFT JOIN a ON a.dropped_id = r.run
        WHERE r.hash IS DISTINCT FROM sha256(
            coalesce(r.prev, a.prev_hash, pgtrail.hash_before($1, r.id, %2$L::regclass)) || r.digest)
        ORDER BY r.id LIMIT 1 $q$, v_name, format('pgtrail.%I', v_name))
        INTO bad USING p_source, v_name;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the archive''s entry % does not follow the entry before it in the store''s chain of source %: its content or the entries before it were changed',
            bad, p_source_name USING HINT = hint_fix;
    END IF;

    IF NOT adding THEN
        EXECUTE format('ALTER TABLE pgtrail.entries ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
            v_name, part.from_at, part.to_at);
        EXECUTE format('CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', v_name);
    END IF;
    EXECUTE format('CREATE TRIGGER entries_restored_read_only BEFORE INSERT ON pgtrail.%I '
        'FOR EACH ROW EXECUTE FUNCTION pgtrail.restored_read_only()', v_name);

    -- This archive (its SHA-256 and source: a copy fetched back under
    -- another name is the same bytes) is one a drop of the partition
    -- recorded: any of its drops, not the newest only.
    SELECT EXISTS (
        SELECT FROM pgtrail.entries e,
             json_array_elements(CASE WHEN json_typeof(e.details->'archives') = 'array'
                                      THEN e.details->'archives' ELSE '[]' END) f
        WHERE e.id = ANY (part.drop_events || part.drop_event) AND e.source = 0
          AND e.table_name = 'retention' AND e.details->>'event' = 'partition_dropped'
          AND e.details->>'partition' = v_name
          AND f->>'sha256' = p_archive->>'sha256'
          AND f->>'source' = p_source::text)
        INTO recorded;
    ctx := json_build_object('db_user', session_user, 'client_addr', NULL, 'application_name', 'pgtrail restore',
        'actor', p_actor, 'source', 'pgtrail', 'remarks',
        format('partition %s restored from the archive %s (%s entries of %s), held until %s',
            v_name, p_archive->>'file', loaded, p_source_name, now() + p_hold),
        'current_user', NULL, 'client_port', NULL, 'backend_pid', NULL)::text;
    det := json_build_object('event', 'partition_restored', 'partition', v_name,
        'from', part.from_at, 'to', part.to_at, 'entries', json_build_object(p_source, loaded),
        'archive', p_archive, 'archive_recorded', recorded, 'drop_event', part.drop_event,
        'hold', p_hold::text, 'held_until', now() + p_hold)::text;
    event_id := pgtrail.record_event(at, 'retention', NULL, NULL, NULL, NULL, ctx::json, det::json,
        coalesce(p_actor, session_user::text), NULL,
        pgtrail.entry_digest(at, NULL, NULL, 'pgtrail', 'retention', 'EVENT', NULL, NULL, NULL, NULL,
            ctx::json, det::json));
    UPDATE pgtrail.partitions SET dropped_at = NULL, restored_at = now(), restore_event = event_id,
        held_until = greatest(held_until, now() + p_hold),
        restored_sources = CASE WHEN adding THEN restored_sources ELSE '{}' END || p_source
        WHERE name = v_name;
    RETURN event_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.restore_partition(smallint, text, timestamptz, timestamptz, json, interval, text) FROM PUBLIC;
