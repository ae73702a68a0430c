-- Restore (src/store/restore/, `pgtrail restore FILE`): an archive of a
-- dropped partition loaded back into the store, into that partition, for an
-- investigation, and held there for a while before retention may drop it
-- again.
--
-- The archive is never trusted: its entries go in only if they are the
-- entries the store dropped. pgtrail.restore_partition checks them against
-- what the drop left behind (the ledger row's range and the partition's
-- anchors in pgtrail.chain_anchors: for each run, its last id, its hash and
-- how many entries it held) and against the chain around them, in SQL, in
-- the caller's transaction: a mismatch raises and nothing stays.

-- When a partition was last restored, and the event that recorded it. A
-- restored partition is live again (dropped_at NULL; drop_event still names
-- the drop's event until it is dropped again) and held_until keeps it from
-- retention until then.
ALTER TABLE pgtrail.partitions
    ADD COLUMN restored_at timestamptz,
    ADD COLUMN restore_event bigint;

-- SHA-256 of an entry's canonical form (src/store/chain.rs): what the chain
-- links, `hash = sha256(prev || digest)`. The LSN is its 64-bit position
-- taken as a signed 64-bit number, as the Rust side does.
CREATE FUNCTION pgtrail.entry_digest(
    p_committed_at timestamptz, p_xid bigint, p_lsn pg_lsn, p_schema text, p_table text,
    p_action text, p_primary_key json, p_before json, p_after json, p_changed_columns json,
    p_context json, p_details json)
RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(
        pgtrail.canonical_number((extract(epoch FROM p_committed_at) * 1000000)::bigint)
        || pgtrail.canonical_number(p_xid)
        || pgtrail.canonical_number(CASE WHEN p_lsn IS NOT NULL THEN
               ((p_lsn - '0/0'::pg_lsn) - CASE WHEN p_lsn - '0/0'::pg_lsn >= 9223372036854775808
                                               THEN 18446744073709551616 ELSE 0 END)::bigint END)
        || pgtrail.canonical_text(p_schema) || pgtrail.canonical_text(p_table)
        || pgtrail.canonical_text(p_action)
        || pgtrail.canonical_text(p_primary_key::text) || pgtrail.canonical_text(p_before::text)
        || pgtrail.canonical_text(p_after::text) || pgtrail.canonical_text(p_changed_columns::text)
        || pgtrail.canonical_text(p_context::text) || pgtrail.canonical_text(p_details::text))
$$;

-- A restored partition is read-only: it holds exactly what its anchors
-- describe, so that retention may drop it again with the same anchors. An
-- entry whose commit time falls in its range is refused as a check
-- violation (SQLSTATE class 23), which capture quarantines rather than
-- retrying forever.
CREATE FUNCTION pgtrail.restored_read_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'pgtrail: % holds entries restored from an archive and takes no new entry', TG_TABLE_NAME
        USING ERRCODE = 'check_violation',
              HINT = 'An entry committed in a restored range is refused; retention drops the range again after its hold.';
END $$;

-- A restored partition dropped again writes the same anchors as its first
-- drop (its entries are the ones those anchors describe, and it took no new
-- entry since): drop_partition (0018) inserts them again, and this keeps
-- the rows already there instead of failing on their key. An anchor of a
-- restored partition that is not already there is refused: the partition
-- no longer ends where its first drop said, and is kept.
CREATE FUNCTION pgtrail.chain_anchors_again() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT restored_at FROM pgtrail.partitions WHERE name = NEW.partition) IS NULL THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT FROM pgtrail.chain_anchors a
               WHERE a.source = NEW.source AND a.dropped_id = NEW.dropped_id
                 AND a.dropped_hash = NEW.dropped_hash AND a.dropped_entries = NEW.dropped_entries
                 AND a.partition = NEW.partition) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'pgtrail: the restored partition % no longer ends where its first drop said (source %, entry %)',
        NEW.partition, NEW.source, NEW.dropped_id
        USING HINT = 'Run `pgtrail verify`; the partition is kept.';
END $$;
CREATE TRIGGER chain_anchors_again BEFORE INSERT ON pgtrail.chain_anchors
    FOR EACH ROW EXECUTE FUNCTION pgtrail.chain_anchors_again();

-- The hash the chain of p_source had just before entry p_id: that of the
-- entry or anchor with the greatest id below it (an entry in the store, in
-- the partition being restored p_table, or a dropped entry's anchor), or 32
-- zero bytes where the chain starts.
CREATE FUNCTION pgtrail.hash_before(p_source smallint, p_id bigint, p_table regclass) RETURNS bytea
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found bytea;
BEGIN
    EXECUTE format($q$
        SELECT hash FROM (
            (SELECT id, hash FROM pgtrail.entries
             WHERE source = $1 AND id < $2 AND hash IS NOT NULL ORDER BY id DESC LIMIT 1)
            UNION ALL
            (SELECT dropped_id, dropped_hash FROM pgtrail.chain_anchors
             WHERE source = $1 AND dropped_id < $2 ORDER BY dropped_id DESC LIMIT 1)
            UNION ALL
            (SELECT id, hash FROM %s WHERE source = $1 AND id < $2 ORDER BY id DESC LIMIT 1)
        ) b ORDER BY id DESC LIMIT 1 $q$, p_table)
        INTO found USING p_source, p_id;
    RETURN coalesce(found, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
END $$;

-- Loads one source's entries of a dropped partition back into it, from the
-- caller's temporary table pg_temp.pgtrail_restore (the columns of
-- pgtrail.entries with id, JSON columns and the LSN as text), and records
-- the restore as a `retention` event. The partition is found by the
-- anchor of the archive's last entry and must have the archive's range
-- [p_from, p_to); it is made again with the ledger's bounds and attached
-- (or, restored before for another source, taken as it is). Every loaded
-- entry is checked: its hash recomputed from its content and linked to the
-- one before it in its chain, each run of the anchors ending in the
-- anchor's id and hash with the anchor's count, the first of a run following
-- the chain's entry (or anchor) before it, ids unique in the store. The
-- partition is then held for p_hold. p_archive is what the caller says of
-- the file ({"file": name, "sha256": hex, …}), recorded as given; whether
-- its SHA-256 is one the drop's event recorded is recorded beside it.
-- Returns the event's entry id. Runs as the store's owner; no pgtrail role
-- may call it (restore is the owner's, like setup).
CREATE FUNCTION pgtrail.restore_partition(
    p_source smallint, p_source_name text, p_from timestamptz, p_to timestamptz,
    p_archive json, p_hold interval, p_actor text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
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
    anchor record;
    after_id bigint;
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

    -- Ids are unique in the store (no index across partitions says so).
    SELECT min(id) INTO bad FROM (SELECT id FROM pg_temp.pgtrail_restore GROUP BY id HAVING count(*) > 1) d;
    IF bad IS NULL THEN
        EXECUTE format('SELECT min(e.id) FROM pgtrail.entries e JOIN pgtrail.%I r ON r.id = e.id AND r.source = $1 '
            'WHERE e.id BETWEEN $2 AND $3 AND NOT (e.tableoid = %L::regclass AND e.source = $1)',
            v_name, format('pgtrail.%I', v_name))
            INTO bad USING p_source, (SELECT min(id) FROM pg_temp.pgtrail_restore), last_id;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the archive''s entry % has the id of an entry in the store: the archive was changed or forged', bad
            USING HINT = hint_fix;
    END IF;
    -- Each run the drop anchored: its count, its end, every link.
    n := 0;
    FOR anchor IN SELECT dropped_id, dropped_hash, dropped_entries FROM pgtrail.chain_anchors
                  WHERE partition = v_name AND source = p_source ORDER BY dropped_id LOOP
        EXECUTE format('SELECT count(*) FROM pgtrail.%I WHERE source = $1 AND id > $2 AND id <= $3', v_name)
            INTO bad USING p_source, coalesce(after_id, -1), anchor.dropped_id;
        IF bad <> anchor.dropped_entries THEN
            RAISE EXCEPTION 'the archive holds % entries of source % up to entry %, where the store dropped %: entries were removed from or added to the archive',
                bad, p_source_name, anchor.dropped_id, anchor.dropped_entries USING HINT = hint_fix;
        END IF;
        EXECUTE format($q$
            SELECT id FROM (
                SELECT id, hash, lag(hash) OVER (ORDER BY id) AS prev,
                       pgtrail.entry_digest(committed_at, xid, lsn, schema_name, table_name, action,
                           primary_key, before, after, changed_columns, context, details) AS digest
                FROM pgtrail.%I WHERE source = $1 AND id > $2 AND id <= $3) r
            WHERE hash IS DISTINCT FROM sha256(coalesce(prev,
                pgtrail.hash_before($1, (SELECT min(id) FROM pgtrail.%I WHERE source = $1 AND id > $2), %L::regclass))
                || digest)
            ORDER BY id LIMIT 1 $q$, v_name, v_name, format('pgtrail.%I', v_name))
            INTO bad USING p_source, coalesce(after_id, -1), anchor.dropped_id;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'the archive''s entry % does not follow the entry before it in the store''s chain of source %: its content or the entries before it were changed',
                bad, p_source_name USING HINT = hint_fix;
        END IF;
        n := n + anchor.dropped_entries;
        after_id := anchor.dropped_id;
    END LOOP;
    IF n <> loaded THEN
        RAISE EXCEPTION 'the archive holds % entries of source %, the store dropped % from partition %: entries were added to the archive',
            loaded, p_source_name, n, v_name USING HINT = hint_fix;
    END IF;

    IF NOT adding THEN
        EXECUTE format('ALTER TABLE pgtrail.entries ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
            v_name, part.from_at, part.to_at);
        EXECUTE format('CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', v_name);
    END IF;
    EXECUTE format('CREATE TRIGGER entries_restored_read_only BEFORE INSERT ON pgtrail.%I '
        'FOR EACH ROW EXECUTE FUNCTION pgtrail.restored_read_only()', v_name);

    SELECT coalesce(bool_or(a->>'sha256' = p_archive->>'sha256'), false) INTO recorded
        FROM pgtrail.entries e, json_array_elements(e.details->'archives') a
        WHERE e.id = part.drop_event AND json_typeof(e.details->'archives') = 'array';
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
        held_until = greatest(held_until, now() + p_hold)
        WHERE name = v_name;
    RETURN event_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.restore_partition(smallint, text, timestamptz, timestamptz, json, interval, text) FROM PUBLIC;
