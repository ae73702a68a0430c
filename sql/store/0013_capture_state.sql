-- The daemon's last reading of its slot and lag, for the web view
-- (src/store/capture_state.rs). The monitor (src/health/monitor.rs) upserts
-- one row per slot at every poll: state, not history, so it is neither an
-- entry nor in any chain, and rows are overwritten in place. The web view
-- talks only to the store: this row is how it knows the WAL guard's
-- verdict, the lag, and whether capture still runs (a row not written for a
-- few poll intervals means the daemon stopped or cannot reach the store).
--
-- Times are the store's clock (now() at the write), so the web view compares
-- them with its own now() in the same server. LSNs and sizes are as the
-- source showed them; NULL where the poll could not tell (source_error says
-- why, or there is no slot: slot_found false).
CREATE TABLE pgtrail.capture_state (
    slot           text             PRIMARY KEY,
    -- The source database's name.
    source         text             NOT NULL,
    polled_at      timestamptz      NOT NULL DEFAULT now(),
    -- metrics.poll_interval: how often a row is written while the daemon runs.
    poll_interval  interval         NOT NULL,
    -- The store's checkpoint: everything up to it is stored.
    stored_lsn     pg_lsn,
    -- Why the source could not be read at this poll; NULL when it was.
    source_error   text,
    -- pg_current_wal_lsn() on the source.
    server_lsn     pg_lsn,
    slot_found     boolean,
    slot_active    boolean,
    confirmed_lsn  pg_lsn,
    retained_bytes bigint,
    -- reserved, extended, unreserved or lost.
    wal_status     text,
    -- NULL: max_slot_wal_keep_size is unlimited (or nothing was read).
    safe_wal_size  bigint,
    lag_bytes      bigint,
    lag_seconds    double precision,
    -- capture.wal_warn in bytes (NULL: off), and whether the slot held more.
    wal_warn       bigint,
    over_wal_warn  boolean          NOT NULL DEFAULT false,
    CHECK (source_error IS NULL OR server_lsn IS NULL)
);
