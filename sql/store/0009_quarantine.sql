-- Quarantine (src/store/quarantine.rs): the raw wal2json records of a source
-- transaction the store refused (or whose BEGIN or COMMIT could not be
-- decoded), kept so that capture can go on past it without losing it.
--
-- One row per record, keyed by where its transaction's first record starts
-- and its place in it: writing a quarantine again after a crash adds
-- nothing. The record is bytea, as sent, so that nothing in it can be
-- refused a second time; read it with convert_from(record, 'UTF8').
-- Each quarantined transaction is also an EVENT entry (pgtrail.quarantine,
-- details.event = 'transaction_quarantined') in the events chain, written
-- in the same store transaction as its records and the checkpoint past it;
-- its details hold the records' count and SHA-256, so the chain vouches for
-- them. Append-only, like the entries.
CREATE TABLE pgtrail.quarantine (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_lsn      pg_lsn      NOT NULL,
    seq            integer     NOT NULL,
    lsn            pg_lsn      NOT NULL,
    record         bytea       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (first_lsn, seq)
);
CREATE TRIGGER quarantine_append_only BEFORE UPDATE OR DELETE ON pgtrail.quarantine
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER quarantine_no_truncate BEFORE TRUNCATE ON pgtrail.quarantine
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();

-- The quarantine's EVENT goes in through record_event like every other:
-- its list of categories gains 'quarantine'. The function is rewritten
-- from its own definition rather than restated, so this changes that list
-- and nothing else (grants and owner stay, as with any CREATE OR REPLACE).
DO $widen$
DECLARE
    def text := pg_get_functiondef('pgtrail.record_event(timestamptz, text, json, json, json, json, json, json, text, inet, bytea)'::regprocedure);
    widened text := replace(def, $$NOT IN ('session', $$, $$NOT IN ('quarantine', 'session', $$);
BEGIN
    IF widened = def THEN
        RAISE EXCEPTION 'pgtrail.record_event does not have the category list this migration extends';
    END IF;
    EXECUTE widened;
END
$widen$;
