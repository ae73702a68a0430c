-- Entries partitioned by commit time (src/store/partitions.rs): a year of
-- audit is twelve tables, not one, so that old entries can later go a whole
-- partition at a time (never row by row) and each partition's indexes stay
-- the size of one period.
--
-- pgtrail.entries keeps its columns and their meaning; it becomes a parent
-- PARTITION BY RANGE (committed_at) whose partitions are made ahead of time
-- and on demand by pgtrail.ensure_partition (below), never by hand. The
-- existing table is renamed pgtrail.entries_unpartitioned: on an empty
-- store (a new one) it is dropped here; otherwise `pgtrail setup` copies its
-- rows into the partitions in batches it can resume (src/store/migrate/),
-- recorded in pgtrail.store_migration, and drops it once every row is
-- copied and checked. Until then the store refuses to run (StoreError::NeedsMigration).
--
-- What changes for a row: `source` is NOT NULL (rows stored before 0015
-- get the source they were read as, 1 with an LSN, 0 without; the chain's
-- canonical form does not cover it) and the key is (id, committed_at), as
-- every unique key of a partitioned table must hold the partition key. Ids
-- still come from one sequence, continued past the old table's.

ALTER TABLE pgtrail.entries RENAME TO entries_unpartitioned;
ALTER SEQUENCE pgtrail.entries_id_seq RENAME TO entries_unpartitioned_id_seq;
ALTER INDEX pgtrail.entries_pkey RENAME TO entries_unpartitioned_pkey;
ALTER INDEX pgtrail.entries_committed_at RENAME TO entries_unpartitioned_committed_at;
ALTER INDEX pgtrail.entries_row_key RENAME TO entries_unpartitioned_row_key;
ALTER INDEX pgtrail.entries_xid RENAME TO entries_unpartitioned_xid;
ALTER INDEX pgtrail.entries_table RENAME TO entries_unpartitioned_table;
ALTER INDEX pgtrail.entries_actor RENAME TO entries_unpartitioned_actor;
ALTER INDEX pgtrail.entries_client_addr RENAME TO entries_unpartitioned_client_addr;
ALTER INDEX pgtrail.entries_rare_action RENAME TO entries_unpartitioned_rare_action;

-- No identity column on a partitioned table (PostgreSQL 15): a plain
-- sequence, set past every id the old table used or reserved.
CREATE SEQUENCE pgtrail.entries_id_seq AS bigint;

CREATE TABLE pgtrail.entries (
    -- Assigned in commit order of the store, so ORDER BY id is the order entries were stored.
    id              bigint      NOT NULL DEFAULT nextval('pgtrail.entries_id_seq'),
    committed_at    timestamptz NOT NULL,
    xid             bigint,
    lsn             pg_lsn,
    schema_name     text        NOT NULL,
    table_name      text        NOT NULL,
    action          text        NOT NULL CONSTRAINT entries_action_check
        CHECK (action IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'EVENT')),
    primary_key     json,
    before          json,
    after           json,
    changed_columns json,
    context         json        NOT NULL,
    row_key         bigint,
    details         json,
    actor           text,
    client_addr     inet,
    hash            bytea,
    source          smallint    NOT NULL,
    CONSTRAINT entries_txn_whole CHECK ((xid IS NULL) = (lsn IS NULL)),
    CONSTRAINT entries_only_events_lack_txn CHECK (action = 'EVENT' OR lsn IS NOT NULL),
    CONSTRAINT entries_source_chain CHECK ((source = 0) = (lsn IS NULL)),
    CONSTRAINT entries_pkey PRIMARY KEY (id, committed_at)
) PARTITION BY RANGE (committed_at);
ALTER SEQUENCE pgtrail.entries_id_seq OWNED BY pgtrail.entries.id;
SELECT setval('pgtrail.entries_id_seq', greatest(v, 1), v > 0)
FROM (SELECT greatest(
        coalesce((SELECT max(id) FROM pgtrail.entries_unpartitioned), 0),
        (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
         FROM pgtrail.entries_unpartitioned_id_seq)) AS v) s;

-- The same indexes as before (see 0001, 0003 and 0014 for why each), made
-- on the parent: every partition gets its own, attached to these.
CREATE INDEX entries_committed_at ON pgtrail.entries USING brin (committed_at);
CREATE INDEX entries_row_key ON pgtrail.entries (row_key);
CREATE INDEX entries_xid ON pgtrail.entries (xid);
CREATE INDEX entries_table ON pgtrail.entries (schema_name, table_name, id);
CREATE INDEX entries_actor ON pgtrail.entries ((coalesce(actor, '')), id) INCLUDE (actor);
CREATE INDEX entries_client_addr ON pgtrail.entries ((coalesce(host(client_addr), '')), id);
CREATE INDEX entries_rare_action ON pgtrail.entries (action, id)
    WHERE action NOT IN ('INSERT', 'UPDATE', 'DELETE');

-- Append-only, as before (0006). The row trigger is cloned onto every
-- partition; a statement trigger is not, so ensure_partition gives each
-- partition its own TRUNCATE trigger (a TRUNCATE of one partition would
-- otherwise pass).
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON pgtrail.entries
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.entries
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();

-- What `setup` decided for this store ([store] partition): the store's
-- value wins over a daemon's config. A change applies to partitions not yet made.
CREATE TABLE pgtrail.settings (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    partition text    NOT NULL DEFAULT 'month' CHECK (partition IN ('day', 'week', 'month'))
);
INSERT INTO pgtrail.settings DEFAULT VALUES;

-- The ledger: every partition ever made, by ensure_partition. name is the
-- table's (pgtrail.<name>); [from_at, to_at) its range. Rows are never
-- deleted: a partition dropped later keeps its row with dropped_at and the
-- event that recorded the drop (drop_event, an entry id); held_until keeps
-- a partition from being dropped before then.
CREATE TABLE pgtrail.partitions (
    name       text        PRIMARY KEY,
    from_at    timestamptz NOT NULL,
    to_at      timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    dropped_at timestamptz,
    drop_event bigint,
    held_until timestamptz,
    CHECK (from_at < to_at)
);

-- The copy of an unpartitioned store's entries by `pgtrail setup`: one row,
-- advanced in the same transaction as each batch copied (so an interrupted
-- setup resumes after the last batch it committed). first_id and last_id
-- bound the old table's ids; copied_upto is the last old id copied.
CREATE TABLE pgtrail.store_migration (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    state       text        NOT NULL CHECK (state IN ('copying', 'done')),
    first_id    bigint      NOT NULL,
    last_id     bigint      NOT NULL,
    copied_upto bigint      NOT NULL,
    copied      bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
INSERT INTO pgtrail.store_migration (state, first_id, last_id, copied_upto, finished_at)
SELECT CASE WHEN n.first_id IS NULL THEN 'done' ELSE 'copying' END,
       coalesce(n.first_id, 0), coalesce(n.last_id, 0), coalesce(n.first_id - 1, 0),
       CASE WHEN n.first_id IS NULL THEN now() END
FROM (SELECT min(id) AS first_id, max(id) AS last_id FROM pgtrail.entries_unpartitioned) n;

-- The partition holding p_at, made if there is none: returns its table's
-- name. Runs as the store's owner (the setup role), for the daemon and the
-- web view, which may not run DDL: a partition is owned by the setup role
-- and only it can drop one. The period is the store's setting, in UTC (a
-- month; an ISO week from Monday 00:00; a day), cut short where it would
-- overlap a partition already made (after a change of period). The
-- partition is made standalone and then ATTACHed: ATTACH takes SHARE UPDATE
-- EXCLUSIVE on pgtrail.entries, which lets COPY and SELECT go on, where
-- CREATE TABLE … PARTITION OF takes ACCESS EXCLUSIVE and would queue behind a
-- long export, stalling capture and the web view behind it. lock_timeout
-- bounds any wait (the caller retries).
-- The bounds are written into DDL as text: UTC and ISO whatever the
-- caller's settings (an 'IST' printed under DMY would read back as another
-- zone); the caller's tablespace and table access method do not apply.
CREATE FUNCTION pgtrail.ensure_partition(p_at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET default_tablespace = ''
SET default_table_access_method = 'heap'
SET lock_timeout = '5s' AS $$
DECLARE
    found text;
    period text;
    v_from timestamptz;
    v_to timestamptz;
    base text;
    v_name text;
    n integer := 1;
BEGIN
    IF p_at IS NULL OR NOT isfinite(p_at) THEN
        RAISE EXCEPTION 'pgtrail.ensure_partition: % is not a time a partition can hold', p_at;
    END IF;
    -- Nearly always there is one already: no lock for that.
    SELECT p.name INTO found FROM pgtrail.partitions p
        JOIN pg_inherits i ON i.inhrelid = to_regclass(format('pgtrail.%I', p.name))
                          AND i.inhparent = 'pgtrail.entries'::regclass
        WHERE p.dropped_at IS NULL AND p.from_at <= p_at AND p_at < p.to_at;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    PERFORM pg_advisory_xact_lock(7420502);
    -- A partition the ledger holds but pgtrail.entries no longer has was
    -- detached or dropped past pgtrail (no drop_event says why): the ledger
    -- says so, and its range is free to be made again.
    UPDATE pgtrail.partitions p SET dropped_at = now()
        WHERE p.dropped_at IS NULL AND NOT EXISTS (SELECT FROM pg_inherits i
            WHERE i.inhrelid = to_regclass(format('pgtrail.%I', p.name))
              AND i.inhparent = 'pgtrail.entries'::regclass);
    SELECT name INTO found FROM pgtrail.partitions
        WHERE dropped_at IS NULL AND from_at <= p_at AND p_at < to_at;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    SELECT s.partition INTO period FROM pgtrail.settings s;
    period := coalesce(period, 'month');
    v_from := date_trunc(period, p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_to := (date_trunc(period, p_at AT TIME ZONE 'UTC')
             + CASE period WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days'
                           ELSE interval '1 month' END) AT TIME ZONE 'UTC';
    SELECT greatest(v_from, max(to_at)) INTO v_from FROM pgtrail.partitions
        WHERE dropped_at IS NULL AND to_at <= p_at;
    SELECT least(v_to, min(from_at)) INTO v_to FROM pgtrail.partitions
        WHERE dropped_at IS NULL AND from_at > p_at;
    base := 'entries_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
    v_name := base;
    -- A range made again after its partition was dropped gets a new name.
    WHILE EXISTS (SELECT FROM pgtrail.partitions WHERE name = v_name)
          OR to_regclass(format('pgtrail.%I', v_name)) IS NOT NULL LOOP
        n := n + 1;
        v_name := base || '_' || n;
    END LOOP;
    EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
    -- The partition's bound as a constraint: ATTACH then needs no scan.
    EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
        v_name, v_name || '_range', v_from, v_to);
    EXECUTE format('ALTER TABLE pgtrail.entries ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
        v_name, v_from, v_to);
    EXECUTE format('CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', v_name);
    INSERT INTO pgtrail.partitions (name, from_at, to_at) VALUES (v_name, v_from, v_to);
    RETURN v_name;
END $$;
REVOKE ALL ON FUNCTION pgtrail.ensure_partition(timestamptz) FROM PUBLIC;

-- record_event, restated whole (0015's): the same checks and link, and it
-- makes the partition its entry goes to if there is none yet (a store
-- where only the web view runs for a while would otherwise refuse sign-ins).
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
    IF p_table NOT IN ('gap', 'quarantine', 'session', 'user', 'token', 'export', 'config') THEN
        RAISE EXCEPTION 'pgtrail.record_event: % is not a category of pgtrail''s events', p_table;
    END IF;
    IF p_table IN ('gap', 'quarantine')
        AND NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entries'::regclass), 'USAGE')
        AND NOT EXISTS (SELECT FROM pg_roles
            WHERE rolname = 'pgtrail_writer' AND pg_has_role(session_user, oid, 'USAGE')) THEN
        RAISE EXCEPTION 'pgtrail.record_event: only capture records % events', p_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Gaps and quarantine are recorded by `pgtrail run` and `pgtrail setup`, whose login role is a member of pgtrail_writer.';
    END IF;
    IF length(p_digest) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'pgtrail.record_event: the digest must be 32 bytes (SHA-256)';
    END IF;
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

-- A new store has nothing to copy. Its partitions are made by setup once
-- it has set the period, and on demand.
DO $fresh$
BEGIN
    IF (SELECT state FROM pgtrail.store_migration) = 'done' THEN
        DROP TABLE pgtrail.entries_unpartitioned;
    END IF;
END
$fresh$;
