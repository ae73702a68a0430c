-- A fleet of sources (src/store/sources.rs): one store holds the entries of
-- many source databases, each captured by its own daemon. A source is
-- named by `[source] name` in its daemon's config; everything kept per
-- source (checkpoint, partition map, message key, chain head, quarantined
-- and undecodable records) is keyed by its id, so two daemons never share a
-- checkpoint or a chain even when their slots have the same name.
--
-- Source 0 is `pgtrail` itself: the chain of pgtrail's own events (sign-ins,
-- exports, gaps, …), written by every process of the fleet through
-- record_event. Each other source has its own capture chain.
--
-- An existing store's capture belonged to one source: it becomes source 1,
-- named by `setup` from the config it runs with (`pgtrail.first_source`,
-- set for this migration only). Its rows keep their meaning: entries stored
-- before this migration keep a NULL source, read as source 1 when they
-- have an LSN and as source 0 (events) when not (which is how the two
-- chains were told apart until now); filling the column in would rewrite
-- every entry past the append-only trigger. Every row written from now on
-- names its source.
DO $first$
BEGIN
    IF coalesce(current_setting('pgtrail.first_source', true), '') = '' THEN
        RAISE EXCEPTION 'migration 15 (sources) needs the name of the store''s first source'
            USING HINT = 'Run `pgtrail setup` with the config of the daemon that feeds this store: it names the source.';
    END IF;
END
$first$;

CREATE TABLE pgtrail.sources (
    id         smallint    PRIMARY KEY CHECK (id >= 0),
    -- [source] name; src/store/sources.rs checks the same rule.
    name       text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((id = 0) = (name = 'pgtrail'))
);
INSERT INTO pgtrail.sources (id, name) VALUES (0, 'pgtrail'), (1, current_setting('pgtrail.first_source'));

-- No foreign key: it would cost a lookup per stored entry. The writer
-- takes its id from pgtrail.sources, and record_event writes 0.
ALTER TABLE pgtrail.entries ADD COLUMN source smallint;
-- NOT VALID, and never validated: it holds for every row written from now
-- on, and every row already stored has a NULL source, which it allows, so a
-- validation would only scan the whole table under this migration's lock.
ALTER TABLE pgtrail.entries ADD CONSTRAINT entries_source_chain
    CHECK (source IS NULL OR (source = 0) = (lsn IS NULL)) NOT VALID;

-- One head per chain, keyed by its source: 'events' is source 0, 'capture'
-- the first source.
ALTER TABLE pgtrail.chain_heads ADD COLUMN source smallint;
UPDATE pgtrail.chain_heads SET source = CASE chain WHEN 'events' THEN 0 ELSE 1 END;
ALTER TABLE pgtrail.chain_heads DROP CONSTRAINT chain_heads_pkey;
ALTER TABLE pgtrail.chain_heads DROP COLUMN chain;
ALTER TABLE pgtrail.chain_heads ALTER COLUMN source SET NOT NULL;
ALTER TABLE pgtrail.chain_heads ADD PRIMARY KEY (source);
ALTER TABLE pgtrail.chain_heads ADD FOREIGN KEY (source) REFERENCES pgtrail.sources (id);

-- Checkpoints per source and slot (a source whose slot was renamed keeps
-- the old slot's row, as before). The column added with a default fills
-- the existing rows without rewriting them; new rows must name their source.
-- last_committed_at: the source commit time of the newest change stored up
-- to the checkpoint, written with it (NULL: none stored yet).
ALTER TABLE pgtrail.partition_maps DROP CONSTRAINT partition_maps_slot_fkey;
ALTER TABLE pgtrail.checkpoints
    ADD COLUMN source smallint NOT NULL DEFAULT 1 REFERENCES pgtrail.sources (id),
    ADD COLUMN last_committed_at timestamptz;
ALTER TABLE pgtrail.checkpoints ALTER COLUMN source DROP DEFAULT;
ALTER TABLE pgtrail.checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE pgtrail.checkpoints ADD PRIMARY KEY (source, slot);
-- The newest captured change, for the checkpoints that are past it (one
-- probe from the end of the primary key; older slots' rows stay NULL).
UPDATE pgtrail.checkpoints c SET last_committed_at = n.committed_at
    FROM (SELECT committed_at, lsn FROM pgtrail.entries WHERE lsn IS NOT NULL ORDER BY id DESC LIMIT 1) n
    WHERE c.lsn >= n.lsn;

ALTER TABLE pgtrail.partition_maps ADD COLUMN source smallint NOT NULL DEFAULT 1;
ALTER TABLE pgtrail.partition_maps ALTER COLUMN source DROP DEFAULT;
ALTER TABLE pgtrail.partition_maps DROP CONSTRAINT partition_maps_pkey;
ALTER TABLE pgtrail.partition_maps ADD PRIMARY KEY (source, slot);
ALTER TABLE pgtrail.partition_maps ADD FOREIGN KEY (source, slot)
    REFERENCES pgtrail.checkpoints (source, slot) ON DELETE CASCADE;

-- The key that checks a source's messages is the source database's (made
-- once there by context.sql): one per source. `setup` copies it again at
-- every run, so of several slots' copies the newest is kept.
ALTER TABLE pgtrail.message_keys ADD COLUMN source smallint NOT NULL DEFAULT 1 REFERENCES pgtrail.sources (id);
ALTER TABLE pgtrail.message_keys ALTER COLUMN source DROP DEFAULT;
DELETE FROM pgtrail.message_keys k WHERE EXISTS (
    SELECT FROM pgtrail.message_keys n WHERE (n.copied_at, n.slot) > (k.copied_at, k.slot));
ALTER TABLE pgtrail.message_keys DROP CONSTRAINT message_keys_pkey;
ALTER TABLE pgtrail.message_keys DROP COLUMN slot;
ALTER TABLE pgtrail.message_keys ADD PRIMARY KEY (source);

-- Quarantined and undecodable records name their source (existing rows:
-- the first), so that two sources' transactions at the same LSN stay apart.
ALTER TABLE pgtrail.quarantine ADD COLUMN source smallint NOT NULL DEFAULT 1;
ALTER TABLE pgtrail.quarantine ALTER COLUMN source DROP DEFAULT;
ALTER TABLE pgtrail.quarantine DROP CONSTRAINT quarantine_first_lsn_seq_key;
ALTER TABLE pgtrail.quarantine ADD UNIQUE (source, first_lsn, seq);
ALTER TABLE pgtrail.decode_errors ADD COLUMN source smallint NOT NULL DEFAULT 1;
ALTER TABLE pgtrail.decode_errors ALTER COLUMN source DROP DEFAULT;

-- The monitor's reading, one row per source (its `source` column now holds
-- the source's name). State, not history: rows written by an older daemon
-- are dropped and the next poll writes them again.
DELETE FROM pgtrail.capture_state;
ALTER TABLE pgtrail.capture_state DROP CONSTRAINT capture_state_pkey;
ALTER TABLE pgtrail.capture_state ADD PRIMARY KEY (source);

-- Signed heads v2 (src/store/signing.rs): each daemon signs its own
-- source's head (the capture_* columns) and the events chain's, naming the
-- source. Rows signed before are v1: the first source's head, source NULL.
ALTER TABLE pgtrail.signed_heads
    ADD COLUMN version smallint NOT NULL DEFAULT 1,
    ADD COLUMN source text;
ALTER TABLE pgtrail.signed_heads ALTER COLUMN version DROP DEFAULT;
ALTER TABLE pgtrail.signed_heads ADD CONSTRAINT signed_heads_version
    CHECK ((version = 1 AND source IS NULL) OR (version = 2 AND source IS NOT NULL));

-- record_event, restated whole (0007, with the categories of 0009 and 0011
-- and the rights check of 0012): events are source 0 and link into its head.
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
