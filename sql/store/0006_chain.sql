-- Tamper evidence (see src/store/chain.rs for the canonical form).
--
-- hash: SHA-256(previous entry's hash in the same chain || SHA-256(canonical
--   form of this entry)). Two chains: pgtrail's own events (action EVENT) and
--   captured changes (everything else). Null for entries stored before this
--   migration: `pgtrail verify` reports them as not covered by the chain.
-- chain_heads: each chain's last hash and how many entries it holds, written
--   in the same store transaction as the entries, so the head can never be
--   ahead of the entries or behind them.
ALTER TABLE pgtrail.entries ADD COLUMN hash bytea;

CREATE TABLE pgtrail.chain_heads (
    chain      text        PRIMARY KEY CHECK (chain IN ('capture', 'events')),
    hash       bytea       NOT NULL CHECK (length(hash) = 32),
    entries    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgtrail.chain_heads (chain, hash) VALUES
    ('capture', decode(repeat('00', 32), 'hex')),
    ('events', decode(repeat('00', 32), 'hex'));

-- Audit entries are never changed or removed in place. The trigger refuses
-- it for every role, the owner included; only a superuser (or the owner, on
-- purpose, with ALTER TABLE … DISABLE TRIGGER) can get past it, and
-- `pgtrail verify` still finds what was done then.
CREATE FUNCTION pgtrail.entries_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgtrail.% is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The audit trail is kept as it was written; `pgtrail verify` reports any change made past this trigger.';
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON pgtrail.entries
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON pgtrail.entries
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();
