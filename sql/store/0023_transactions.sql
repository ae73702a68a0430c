-- Per transaction and per row (issue 12): who acted, from where, with which
-- application (the context), and the transaction's xid and commit LSN are
-- properties of a source transaction, stored once in pgtrail.transactions;
-- each entry row references its transaction and keeps only what is its own.
-- The store's COPY is the largest cost of capture, and this takes the
-- context (about 185 of an entry's 450 bytes in pgbench) and three btrees
-- (actor, client address, xid) off every row change
-- (docs/benchmarks.md, "What each store index costs").
--
-- One row of pgtrail.transactions per run: consecutive entries of one source
-- transaction under one context. A transaction whose context changes midway
-- (SET LOCAL ROLE, a new pgtrail.actor: the context trigger emits again) has
-- a row per run. Events (source 0) have one each.
--
-- Readers are not changed: pgtrail.entries becomes a view with every column
-- it had (and txn, and tableoid: the partition of entry_rows a row is in),
-- joining an entry row to its transaction. The tables behind it:
--   pgtrail.entry_rows    the old table, renamed, with its partitions,
--                         indexes and triggers; xid, lsn, context, actor and
--                         client_addr move out, txn comes in;
--   pgtrail.transactions  partitioned by commit time like entry_rows, a
--                         partition for each of its partitions with the same
--                         bounds, named after it (transactions_p… for
--                         entries_p…), made, dropped and restored with it.
-- An entry and its transaction have the same commit time and source, so the
-- join is within one partition of each (and one shard: docs/scaling.md).
-- The writer gives a transaction its id from pgtrail.transactions_id_seq
-- (reserved in blocks: src/store/runs.rs) and writes both in one store
-- transaction.
--
-- The hash chain does not change: an entry's hash covers its whole content,
-- context, xid and LSN included, read through the join (pgtrail verify,
-- archives and restore see the same entries as before). No foreign key:
-- one per entry row is a probe per row at ingest, and Citus could not
-- enforce one across shards; an entry row whose transaction is missing
-- (or of another source) is left out of the view, so its chain breaks
-- there and `pgtrail verify` reports it.
--
-- Existing entries are split here, in this migration's transaction: each
-- run of old rows (same commit time, source, xid, LSN and context; an event
-- alone) gets a transactions row, ids in the order of its first entry, and
-- its rows the id. That rewrites every entry once (10 minutes and tens of
-- GB of WAL for 5,000,000 entries on two cores: docs/operations.md), in
-- memory bounded by work_mem (sorts spill to disk), and all or nothing.

-- The entry rows: the table as it was, renamed.
ALTER TABLE pgtrail.entries RENAME TO entry_rows;
ALTER TABLE pgtrail.entry_rows ADD COLUMN txn bigint;

CREATE SEQUENCE pgtrail.transactions_id_seq AS bigint;
CREATE TABLE pgtrail.transactions (
    id           bigint      NOT NULL,
    committed_at timestamptz NOT NULL,
    -- As the entries': 0 for pgtrail's own events.
    source       smallint    NOT NULL,
    xid          bigint,
    lsn          pg_lsn,
    context      json        NOT NULL,
    actor        text,
    client_addr  inet,
    CONSTRAINT transactions_whole CHECK ((xid IS NULL) = (lsn IS NULL)),
    CONSTRAINT transactions_source_chain CHECK ((source = 0) = (lsn IS NULL)),
    -- With the source: the column a distributed store would shard both
    -- tables by (docs/scaling.md) must be in every unique key.
    CONSTRAINT transactions_pkey PRIMARY KEY (id, committed_at, source)
) PARTITION BY RANGE (committed_at);
ALTER SEQUENCE pgtrail.transactions_id_seq OWNED BY pgtrail.transactions.id;
-- The web view's filters and orders by actor and client address (the
-- expressions of the entries' indexes of 0003, now once per transaction),
-- and the transaction page's lookup by xid.
CREATE INDEX transactions_actor ON pgtrail.transactions ((coalesce(actor, '')), id) INCLUDE (actor);
CREATE INDEX transactions_client_addr ON pgtrail.transactions ((coalesce(host(client_addr), '')), id);
CREATE INDEX transactions_xid ON pgtrail.transactions (xid);
-- Append-only, as the entries are (0006, 0016).
CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE ON pgtrail.transactions
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON pgtrail.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();

-- The name of the transactions partition that goes with entry_rows'
-- partition p_name: entries_p20261201 has transactions_p20261201.
CREATE FUNCTION pgtrail.transactions_partition(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_name LIKE 'entries\_%' THEN 'transactions' || substr(p_name, 8)
                ELSE 'transactions_of_' || p_name END
$$;

-- A transactions partition for every partition of entry_rows, with its
-- exact bounds (one made past pgtrail too) and its no-truncate trigger
-- (a restored one's read-only trigger comes after the split, below).
DO $parts$
DECLARE
    p record;
    t text;
BEGIN
    FOR p IN SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pgtrail.entry_rows'::regclass LOOP
        t := pgtrail.transactions_partition(p.name);
        EXECUTE format('CREATE TABLE pgtrail.%I PARTITION OF pgtrail.transactions %s', t, p.bound);
        EXECUTE format('CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', t);
    END LOOP;
END
$parts$;

-- The split of the entries stored so far. A run's rows share commit time,
-- source, xid, LSN and context (its text: json has no equality); an event
-- (no LSN) is a run of its own. Its transaction id numbers the runs in the
-- order of their first entries.
CREATE TEMPORARY TABLE pgtrail_runs ON COMMIT DROP AS
SELECT id, committed_at, first_value(id) OVER run AS first_id
FROM pgtrail.entry_rows
WINDOW run AS (PARTITION BY committed_at, source, xid, lsn, context::text, actor, client_addr,
                            CASE WHEN lsn IS NULL THEN id END
               ORDER BY id);
CREATE TEMPORARY TABLE pgtrail_run_ids ON COMMIT DROP AS
SELECT first_id, row_number() OVER (ORDER BY first_id) AS txn
FROM (SELECT DISTINCT first_id FROM pgtrail_runs) f;
INSERT INTO pgtrail.transactions (id, committed_at, source, xid, lsn, context, actor, client_addr)
SELECT r.txn, e.committed_at, e.source, e.xid, e.lsn, e.context, e.actor, e.client_addr
FROM pgtrail_run_ids r JOIN pgtrail.entry_rows e ON e.id = r.first_id
ORDER BY r.txn;
SELECT setval('pgtrail.transactions_id_seq', greatest(n, 1), n > 0)
FROM (SELECT count(*) AS n FROM pgtrail_run_ids) c;
-- The indexes on what moves out go first: the UPDATE below would otherwise
-- write a new entry into each of them for every row, just before they go.
DROP INDEX IF EXISTS pgtrail.entries_xid, pgtrail.entries_actor, pgtrail.entries_client_addr;
-- The one rewrite of the entries pgtrail ever makes, here and as the
-- store's owner: the append-only trigger is off for this UPDATE only, inside
-- this migration's transaction (nobody else sees it off).
ALTER TABLE pgtrail.entry_rows DISABLE TRIGGER entries_append_only;
UPDATE pgtrail.entry_rows e SET txn = i.txn
FROM pgtrail_runs r JOIN pgtrail_run_ids i ON i.first_id = r.first_id
WHERE e.id = r.id AND e.committed_at = r.committed_at;
ALTER TABLE pgtrail.entry_rows ENABLE TRIGGER entries_append_only;

-- A restored partition takes no new entry (0019), nor its transactions
-- partition a new transaction.
DO $restored$
DECLARE
    p text;
BEGIN
    FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pgtrail.entry_rows'::regclass
               AND EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = c.oid
                           AND g.tgname = 'entries_restored_read_only') LOOP
        EXECUTE format('CREATE TRIGGER transactions_restored_read_only BEFORE INSERT ON pgtrail.%I '
            'FOR EACH ROW EXECUTE FUNCTION pgtrail.restored_read_only()', pgtrail.transactions_partition(p));
    END LOOP;
END
$restored$;

-- What moved leaves the entry rows, with the checks on it: two now hold on
-- pgtrail.transactions (a source's transactions have an xid and an LSN,
-- pgtrail's own none), and the third, that only pgtrail's events lack a
-- source transaction, becomes, under its name: only events are in source 0. (DROP COLUMN
-- frees no space: the old rows keep those bytes until their partition is
-- dropped.)
ALTER TABLE pgtrail.entry_rows
    DROP COLUMN xid, DROP COLUMN lsn, DROP COLUMN context, DROP COLUMN actor, DROP COLUMN client_addr,
    ADD CONSTRAINT entries_only_events_lack_txn CHECK (action = 'EVENT' OR source <> 0);
ALTER TABLE pgtrail.entry_rows ALTER COLUMN txn SET NOT NULL;
-- An entry's transaction: the view's join, and "every entry of this
-- transaction" (the transaction page, the web view's actor and address
-- filters, which find transactions first).
CREATE INDEX entries_txn ON pgtrail.entry_rows (txn);

-- What every reader reads: an entry with its transaction's columns, in the
-- order the table had them. The commit times are joined as a range of one
-- instant, not an equality: PostgreSQL 15 takes the three equalities for
-- independent and estimates the join of millions of rows at a handful, so
-- for any LIMIT it would hash both tables whole (seconds for a page at
-- 2,000,000 entries, docs/benchmarks.md); the range is estimated at a
-- third of the rows each way and still prunes a nested loop's probe to
-- one partition.
CREATE VIEW pgtrail.entries AS
SELECT e.id, e.committed_at, t.xid, t.lsn, e.schema_name, e.table_name, e.action, e.primary_key,
       e.before, e.after, e.changed_columns, t.context, e.row_key, e.details, t.actor,
       t.client_addr, e.hash, e.source, e.txn, e.tableoid
FROM pgtrail.entry_rows e
JOIN pgtrail.transactions t ON t.id = e.txn AND t.source = e.source
 AND t.committed_at >= e.committed_at AND t.committed_at <= e.committed_at;
ALTER VIEW pgtrail.entries ALTER COLUMN id SET DEFAULT nextval('pgtrail.entries_id_seq');

-- An INSERT into the view (a tool, a test, `examples/web_fill`) gives each
-- row a transaction of its own. The daemon writes the two tables itself.
-- Only the store's owner may (no role is granted INSERT on the view); the
-- rows still pass the tables' checks, triggers and partitions.
CREATE FUNCTION pgtrail.entries_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.txn := nextval('pgtrail.transactions_id_seq');
    NEW.id := coalesce(NEW.id, nextval('pgtrail.entries_id_seq'));
    INSERT INTO pgtrail.transactions (id, committed_at, source, xid, lsn, context, actor, client_addr)
        VALUES (NEW.txn, NEW.committed_at, NEW.source, NEW.xid, NEW.lsn, NEW.context, NEW.actor,
                NEW.client_addr);
    INSERT INTO pgtrail.entry_rows (id, committed_at, schema_name, table_name, action, primary_key,
            before, after, changed_columns, row_key, details, hash, source, txn)
        VALUES (NEW.id, NEW.committed_at, NEW.schema_name, NEW.table_name, NEW.action,
                NEW.primary_key, NEW.before, NEW.after, NEW.changed_columns, NEW.row_key,
                NEW.details, NEW.hash, NEW.source, NEW.txn);
    RETURN NEW;
END $$;
CREATE TRIGGER entries_insert INSTEAD OF INSERT ON pgtrail.entries
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_insert();

-- ensure_partition, restated whole (0016's): the same period, names, locks
-- and ledger, for entry_rows, and with each partition its transactions
-- partition, made and attached the same way in the same transaction.
-- A partition is live when both are attached. Both gone (detached or
-- dropped past pgtrail) frees the range, as 0016 did; one gone and the
-- other attached is refused with what to run: the range cannot take a new
-- pair (the one still attached overlaps it), and pgtrail neither detaches
-- nor attaches audit data on its own (docs/security.md, "Append-only").
CREATE OR REPLACE FUNCTION pgtrail.ensure_partition(p_at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
SET default_tablespace = ''
SET default_table_access_method = 'heap'
SET lock_timeout = '5s' AS $$
DECLARE
    found text;
    part_from timestamptz;
    part_to timestamptz;
    rows_on boolean;
    txns_on boolean;
    gone text[];
    kept text[];
    how text;
    period text;
    v_from timestamptz;
    v_to timestamptz;
    base text;
    v_name text;
    t_name text;
    n integer := 1;
BEGIN
    IF p_at IS NULL OR NOT isfinite(p_at) THEN
        RAISE EXCEPTION 'pgtrail.ensure_partition: % is not a time a partition can hold', p_at;
    END IF;
    -- Nearly always there is one already: no lock for that.
    SELECT p.name INTO found FROM pgtrail.partitions p
        JOIN pg_inherits i ON i.inhrelid = to_regclass(format('pgtrail.%I', p.name))
                          AND i.inhparent = 'pgtrail.entry_rows'::regclass
        JOIN pg_inherits t ON t.inhrelid = to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(p.name)))
                          AND t.inhparent = 'pgtrail.transactions'::regclass
        WHERE p.dropped_at IS NULL AND p.from_at <= p_at AND p_at < p.to_at;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    PERFORM pg_advisory_xact_lock(7420502);
    -- A partition the ledger holds but neither table has any more was
    -- detached or dropped past pgtrail (no drop_event says why): the ledger
    -- says so, and its range is free to be made again.
    UPDATE pgtrail.partitions p SET dropped_at = now()
        WHERE p.dropped_at IS NULL
          AND NOT EXISTS (SELECT FROM pg_inherits i
              WHERE i.inhrelid = to_regclass(format('pgtrail.%I', p.name))
                AND i.inhparent = 'pgtrail.entry_rows'::regclass)
          AND NOT EXISTS (SELECT FROM pg_inherits i
              WHERE i.inhrelid = to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(p.name)))
                AND i.inhparent = 'pgtrail.transactions'::regclass);
    SELECT p.name, p.from_at, p.to_at,
           EXISTS (SELECT FROM pg_inherits i
               WHERE i.inhrelid = to_regclass(format('pgtrail.%I', p.name))
                 AND i.inhparent = 'pgtrail.entry_rows'::regclass),
           EXISTS (SELECT FROM pg_inherits i
               WHERE i.inhrelid = to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(p.name)))
                 AND i.inhparent = 'pgtrail.transactions'::regclass)
        INTO found, part_from, part_to, rows_on, txns_on FROM pgtrail.partitions p
        WHERE p.dropped_at IS NULL AND p.from_at <= p_at AND p_at < p.to_at;
    IF found IS NOT NULL AND rows_on AND txns_on THEN
        RETURN found;
    ELSIF found IS NOT NULL THEN
        -- One of the pair is gone, the other attached: {table, parent} of each.
        gone := CASE WHEN rows_on THEN ARRAY[pgtrail.transactions_partition(found), 'transactions']
                     ELSE ARRAY[found, 'entry_rows'] END;
        kept := CASE WHEN rows_on THEN ARRAY[found, 'entry_rows']
                     ELSE ARRAY[pgtrail.transactions_partition(found), 'transactions'] END;
        IF to_regclass(format('pgtrail.%I', gone[1])) IS NOT NULL THEN
            how := format('Nothing is lost: pgtrail.%I still holds its rows. To keep the range in the store, '
                'attach it again: ALTER TABLE pgtrail.%I ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L); ',
                gone[1], gone[2], gone[1], part_from, part_to);
        ELSE
            how := format('Its rows are in no table of the store any more. If a backup holds pgtrail.%I, '
                'restore it and attach it again: ALTER TABLE pgtrail.%I ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L); ',
                gone[1], gone[2], gone[1], part_from, part_to);
        END IF;
        RAISE EXCEPTION 'pgtrail.ensure_partition: partition pgtrail.% was % pgtrail.% past pgtrail, but pgtrail.%, its pair of the same range [%, %), is still attached to pgtrail.%: no entry committed in that range can be stored until both are attached or both detached',
            gone[1],
            CASE WHEN to_regclass(format('pgtrail.%I', gone[1])) IS NULL THEN 'dropped from' ELSE 'detached from' END,
            gone[2], kept[1], part_from, part_to, kept[2]
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = how || format('to take the range out of the store instead, detach the other too '
                      '(its rows stay in its table): ALTER TABLE pgtrail.%I DETACH PARTITION pgtrail.%I; '
                      'pgtrail then makes a new pair for the range. Capture goes on by itself after either.',
                      kept[2], kept[1]);
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
          OR to_regclass(format('pgtrail.%I', v_name)) IS NOT NULL
          OR to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(v_name))) IS NOT NULL LOOP
        n := n + 1;
        v_name := base || '_' || n;
    END LOOP;
    t_name := pgtrail.transactions_partition(v_name);
    EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.entry_rows INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
    EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.transactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', t_name);
    -- The partition's bound as a constraint: ATTACH then needs no scan.
    EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
        v_name, v_name || '_range', v_from, v_to);
    EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
        t_name, t_name || '_range', v_from, v_to);
    EXECUTE format('ALTER TABLE pgtrail.entry_rows ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
        v_name, v_from, v_to);
    EXECUTE format('ALTER TABLE pgtrail.transactions ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
        t_name, v_from, v_to);
    EXECUTE format('CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', v_name);
    EXECUTE format('CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', t_name);
    INSERT INTO pgtrail.partitions (name, from_at, to_at) VALUES (v_name, v_from, v_to);
    RETURN v_name;
END $$;
REVOKE ALL ON FUNCTION pgtrail.ensure_partition(timestamptz) FROM PUBLIC;

-- record_event, restated whole (0020's): the same checks, bound and link;
-- the event's context, address and actor go to a transactions row of its own.
CREATE OR REPLACE FUNCTION pgtrail.record_event(
    p_committed_at timestamptz, p_table text, p_primary_key json, p_before json,
    p_after json, p_changed_columns json, p_context json, p_details json,
    p_actor text, p_client_addr inet, p_digest bytea)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    link bytea;
    new_id bigint;
    new_txn bigint;
BEGIN
    IF NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entry_rows'::regclass), 'USAGE')
        AND (p_committed_at IS NULL
             OR p_committed_at NOT BETWEEN clock_timestamp() - interval '5 minutes'
                                       AND clock_timestamp() + interval '5 minutes') THEN
        RAISE EXCEPTION 'pgtrail.record_event: the event''s time % is not within 5 minutes of the store''s clock (%)',
            coalesce(p_committed_at::text, 'NULL'), clock_timestamp()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'An event is recorded when it happens: keep the clocks of the hosts running pgtrail and of the store''s server synchronised (NTP).';
    END IF;
    IF p_table NOT IN ('gap', 'quarantine', 'retention', 'session', 'user', 'token', 'export', 'config') THEN
        RAISE EXCEPTION 'pgtrail.record_event: % is not a category of pgtrail''s events', p_table;
    END IF;
    IF p_table IN ('gap', 'quarantine', 'retention')
        AND NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entry_rows'::regclass), 'USAGE')
        AND NOT EXISTS (SELECT FROM pg_roles
            WHERE rolname = 'pgtrail_writer' AND pg_has_role(session_user, oid, 'USAGE')) THEN
        RAISE EXCEPTION 'pgtrail.record_event: only capture records % events', p_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Gaps, quarantine and retention are recorded by `pgtrail run`, `pgtrail setup` and `pgtrail retention`, whose login role is a member of pgtrail_writer.';
    END IF;
    IF length(p_digest) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'pgtrail.record_event: the digest must be 32 bytes (SHA-256)';
    END IF;
    -- The entries' lock before the head's row, as drop_partition takes them (0018).
    LOCK TABLE pgtrail.entry_rows IN ROW EXCLUSIVE MODE;
    PERFORM pgtrail.ensure_partition(p_committed_at);
    UPDATE pgtrail.chain_heads SET hash = sha256(hash || p_digest), entries = entries + 1, updated_at = now()
        WHERE source = 0 RETURNING hash INTO link;
    IF link IS NULL THEN
        RAISE EXCEPTION 'the events chain has no head in pgtrail.chain_heads; run `pgtrail setup`';
    END IF;
    new_txn := nextval('pgtrail.transactions_id_seq');
    INSERT INTO pgtrail.transactions (id, committed_at, source, xid, lsn, context, actor, client_addr)
        VALUES (new_txn, p_committed_at, 0, NULL, NULL, p_context, p_actor, p_client_addr);
    INSERT INTO pgtrail.entry_rows (committed_at, schema_name, table_name, action, primary_key,
            before, after, changed_columns, details, hash, source, txn)
        VALUES (p_committed_at, 'pgtrail', p_table, 'EVENT', p_primary_key,
            p_before, p_after, p_changed_columns, p_details, link, 0, new_txn)
        RETURNING id INTO new_id;
    RETURN new_id;
END $$;

-- hash_before, restated (0019's) to read the entry rows: the hash and the
-- id are theirs, and no transaction is needed to find them.
CREATE OR REPLACE FUNCTION pgtrail.hash_before(p_source smallint, p_id bigint, p_table regclass) RETURNS bytea
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found bytea;
BEGIN
    EXECUTE format($q$
        SELECT hash FROM (
            (SELECT id, hash FROM pgtrail.entry_rows
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

-- drop_partition, restated whole (0021's): the same checks, anchors, locks
-- and event, for entry_rows; the partition's transactions partition goes
-- with it. The neighbours that split the partition's runs are read within
-- the ids the partition spans (a range scan of each partition's primary
-- key, where 0021 joined every entry of the store to the bounds).
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
        RAISE EXCEPTION 'pgtrail.drop_partition: % is not a partition of the store''s entries', p_name;
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
    EXECUTE format('LOCK TABLE pgtrail.%I, pgtrail.%I IN SHARE MODE', p_name,
        pgtrail.transactions_partition(p_name));

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
                  SELECT e.id, e.source, e.hash, false FROM pgtrail.entry_rows e
                  JOIN b ON e.source = b.source AND e.id BETWEEN b.lo AND b.hi
                  WHERE e.hash IS NOT NULL AND e.tableoid <> 'pgtrail.%1$I'::regclass
                    AND e.id BETWEEN (SELECT min(lo) FROM b) AND (SELECT max(hi) FROM b)
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
                    (SELECT e.id, e.hash FROM pgtrail.entry_rows e
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
    LOCK TABLE pgtrail.entry_rows, pgtrail.transactions IN ACCESS EXCLUSIVE MODE;
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

    EXECUTE format('ALTER TABLE pgtrail.entry_rows DETACH PARTITION pgtrail.%I', p_name);
    EXECUTE format('DROP TABLE pgtrail.%I', p_name);
    IF to_regclass(format('pgtrail.%I', pgtrail.transactions_partition(p_name))) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE pgtrail.transactions DETACH PARTITION pgtrail.%I',
            pgtrail.transactions_partition(p_name));
        EXECUTE format('DROP TABLE pgtrail.%I', pgtrail.transactions_partition(p_name));
    END IF;
    -- Every drop's event kept, the one before (when a drop older than this
    -- migration's function set drop_event alone) too.
    UPDATE pgtrail.partitions SET dropped_at = now(), drop_event = event_id, restored_sources = '{}',
        drop_events = CASE WHEN drop_event IS NULL OR drop_event = ANY (drop_events) THEN drop_events
                           ELSE drop_events || drop_event END || event_id
        WHERE name = p_name;
    RETURN event_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.drop_partition(text, json) FROM PUBLIC;


-- restore_partition, restated whole (0021's): the same arguments, rights,
-- checks, locks and event, for the two tables. The archive's entries (each
-- with its context, xid and LSN, as archives hold them) are split as
-- migration 23 split the store's: a transactions row per run of entries
-- with one commit time, xid, LSN and context, with a new id; the entry rows
-- reference it. Their hashes are checked through that join, so what the
-- chain covers is exactly what the view shows.
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
    t_name text;
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
        IF other IS NOT NULL AND EXISTS (SELECT FROM pgtrail.entry_rows WHERE id = last_id AND source = p_source) THEN
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
    t_name := pgtrail.transactions_partition(v_name);
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
        EXECUTE format('DROP TRIGGER IF EXISTS transactions_restored_read_only ON pgtrail.%I', t_name);
    ELSE
        SELECT p.name INTO other FROM pgtrail.partitions p
            WHERE p.dropped_at IS NULL AND p.from_at < part.to_at AND p.to_at > part.from_at LIMIT 1;
        IF other IS NOT NULL THEN
            RAISE EXCEPTION 'partition % cannot be made again: its range is held by partition %, made after the drop for entries committed in it',
                v_name, other
                USING HINT = 'Read the archive with `pgtrail verify --archive`, or restore it into another store.';
        END IF;
        IF to_regclass(format('pgtrail.%I', v_name)) IS NOT NULL
           OR to_regclass(format('pgtrail.%I', t_name)) IS NOT NULL THEN
            RAISE EXCEPTION 'a table pgtrail.% exists, though the ledger says it was dropped: it was made past pgtrail', v_name
                USING HINT = 'Find out who made it and why; restore refuses to touch it.';
        END IF;
        EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.entry_rows INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
            v_name, v_name || '_range', part.from_at, part.to_at);
        EXECUTE format('CREATE TABLE pgtrail.%I (LIKE pgtrail.transactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', t_name);
        EXECUTE format('ALTER TABLE pgtrail.%I ADD CONSTRAINT %I CHECK (committed_at >= %L AND committed_at < %L)',
            t_name, t_name || '_range', part.from_at, part.to_at);
    END IF;
    -- The runs (as migration 23 made them of the store's entries) and their
    -- transactions rows, then the entry rows that reference them.
    DROP TABLE IF EXISTS pg_temp.pgtrail_restore_runs;
    CREATE TEMPORARY TABLE pgtrail_restore_runs ON COMMIT DROP AS
    SELECT id, first_value(id) OVER (PARTITION BY committed_at, source, xid, lsn, context, actor, client_addr,
                                                  CASE WHEN lsn IS NULL THEN id END ORDER BY id) AS first_id
    FROM pg_temp.pgtrail_restore;
    DROP TABLE IF EXISTS pg_temp.pgtrail_restore_txns;
    CREATE TEMPORARY TABLE pgtrail_restore_txns ON COMMIT DROP AS
    SELECT first_id, nextval('pgtrail.transactions_id_seq') AS txn
    FROM (SELECT DISTINCT first_id FROM pg_temp.pgtrail_restore_runs ORDER BY first_id) f;
    EXECUTE format('INSERT INTO pgtrail.%I (id, committed_at, source, xid, lsn, context, actor, client_addr) '
        'SELECT x.txn, e.committed_at, e.source, e.xid, e.lsn::pg_lsn, e.context::json, e.actor, e.client_addr '
        'FROM pg_temp.pgtrail_restore_txns x JOIN pg_temp.pgtrail_restore e ON e.id = x.first_id ORDER BY x.txn',
        t_name);
    EXECUTE format('INSERT INTO pgtrail.%I (id, committed_at, schema_name, table_name, action, '
        'primary_key, before, after, changed_columns, row_key, details, hash, source, txn) '
        'SELECT e.id, e.committed_at, e.schema_name, e.table_name, e.action, e.primary_key::json, '
        'e.before::json, e.after::json, e.changed_columns::json, e.row_key, e.details::json, e.hash, e.source, x.txn '
        'FROM pg_temp.pgtrail_restore e JOIN pg_temp.pgtrail_restore_runs r ON r.id = e.id '
        'JOIN pg_temp.pgtrail_restore_txns x ON x.first_id = r.first_id ORDER BY e.id', v_name);

    -- Ids are unique in the store (no index across partitions says so), and
    -- none is that of an entry another drop cut.
    SELECT min(id) INTO bad FROM (SELECT id FROM pg_temp.pgtrail_restore GROUP BY id HAVING count(*) > 1) d;
    IF bad IS NULL THEN
        EXECUTE format('SELECT min(e.id) FROM pgtrail.entry_rows e JOIN pgtrail.%I r ON r.id = e.id AND r.source = $1 '
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
                     pgtrail.entry_digest(e.committed_at, t.xid, t.lsn, e.schema_name, e.table_name, e.action,
                         e.primary_key, e.before, e.after, e.changed_columns, t.context, e.details) AS digest
              FROM pgtrail.%1$I e JOIN m ON m.id = e.id AND m.k = 0
              JOIN pgtrail.%3$I t ON t.id = e.txn AND t.committed_at = e.committed_at AND t.source = e.source
              WHERE e.source = $1)
        SELECT r.id FROM r LEFT JOIN a ON a.dropped_id = r.run
        WHERE r.hash IS DISTINCT FROM sha256(
            coalesce(r.prev, a.prev_hash, pgtrail.hash_before($1, r.id, %2$L::regclass)) || r.digest)
        ORDER BY r.id LIMIT 1 $q$, v_name, format('pgtrail.%I', v_name), t_name)
        INTO bad USING p_source, v_name;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'the archive''s entry % does not follow the entry before it in the store''s chain of source %: its content or the entries before it were changed',
            bad, p_source_name USING HINT = hint_fix;
    END IF;

    IF NOT adding THEN
        EXECUTE format('ALTER TABLE pgtrail.entry_rows ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
            v_name, part.from_at, part.to_at);
        EXECUTE format('ALTER TABLE pgtrail.transactions ATTACH PARTITION pgtrail.%I FOR VALUES FROM (%L) TO (%L)',
            t_name, part.from_at, part.to_at);
        EXECUTE format('CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', v_name);
        EXECUTE format('CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON pgtrail.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only()', t_name);
    END IF;
    EXECUTE format('CREATE TRIGGER entries_restored_read_only BEFORE INSERT ON pgtrail.%I '
        'FOR EACH ROW EXECUTE FUNCTION pgtrail.restored_read_only()', v_name);
    EXECUTE format('CREATE TRIGGER transactions_restored_read_only BEFORE INSERT ON pgtrail.%I '
        'FOR EACH ROW EXECUTE FUNCTION pgtrail.restored_read_only()', t_name);

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

-- The new objects belong to whoever owns the entries (the store's owner,
-- the role setup runs as), also when a superuser applies this migration:
-- the owner's setup, retention and restore must read and attach to them,
-- and only the owner of the parent may attach a partition. (Changing the
-- table's owner changes its sequence's; partitions each have their own.)
DO $owner$
DECLARE
    owner regrole := (SELECT relowner::regrole FROM pg_class WHERE oid = 'pgtrail.entry_rows'::regclass);
    p regclass;
BEGIN
    IF owner::oid = (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE pgtrail.transactions OWNER TO %s', owner);
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'pgtrail.transactions'::regclass LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %s', p, owner);
    END LOOP;
    EXECUTE format('ALTER VIEW pgtrail.entries OWNER TO %s', owner);
    EXECUTE format('ALTER FUNCTION pgtrail.transactions_partition(text) OWNER TO %s', owner);
    EXECUTE format('ALTER FUNCTION pgtrail.entries_insert() OWNER TO %s', owner);
END
$owner$;

-- The planner's statistics, for the two tables as they now are.
ANALYZE pgtrail.entry_rows, pgtrail.transactions;
