-- The audit store: one row per captured row change, plus the checkpoint that
-- makes delivery exactly once. Applied by `pgtrail setup`, recorded in
-- pgtrail.schema_migrations, never re-applied.

CREATE TABLE pgtrail.entries (
    -- Assigned in commit order, so ORDER BY id is the order changes were committed.
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    committed_at    timestamptz NOT NULL,
    xid             bigint      NOT NULL,
    -- Commit LSN of the source transaction: every entry of a transaction shares it.
    lsn             pg_lsn      NOT NULL,
    schema_name     text        NOT NULL,
    table_name      text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL')),
    -- json, not jsonb: it keeps the text exactly as captured (key order, numeric
    -- scale) and costs far less to write; queries cast where they need to.
    primary_key     json,
    before          json,
    after           json,
    changed_columns json,
    context         json        NOT NULL,
    -- xxh3-64 of schema, table and primary_key text (see entry::row_key), so
    -- that a row's history is one lookup on a small integer index; null where
    -- there is no key. Computed by pgtrail: an md5(primary_key::text)
    -- expression index cost about 2.7 times as much to maintain at ingest
    -- (bench/store_indexes.sh).
    row_key         bigint
);

-- Time-range scans: entries arrive in time order, so a BRIN index is tiny and cheap to maintain.
CREATE INDEX entries_committed_at ON pgtrail.entries USING brin (committed_at);
-- Row history: every entry of one row of one table (recheck schema, table and key: it is a hash).
CREATE INDEX entries_row_key ON pgtrail.entries (row_key);
-- Everything committed together.
CREATE INDEX entries_xid ON pgtrail.entries (xid);
-- The web view's table filter, newest first: without it a rarely written
-- table is found only by walking every entry (seconds on a 1M-entry store).
CREATE INDEX entries_table ON pgtrail.entries (schema_name, table_name, id);

-- What has been stored, per replication slot: the end LSN of the last source
-- transaction whose entries are all in pgtrail.entries. Written in the same
-- store transaction as those entries, so it is never ahead of them nor behind.
CREATE TABLE pgtrail.checkpoints (
    slot       text        PRIMARY KEY,
    lsn        pg_lsn      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Records wal2json sent that could not be decoded (wal2json 2.5 emits invalid
-- JSON for some type names). Kept whole so nothing is silently lost.
CREATE TABLE pgtrail.decode_errors (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lsn      pg_lsn      NOT NULL,
    xid      bigint,
    record   text        NOT NULL,
    error    text        NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
