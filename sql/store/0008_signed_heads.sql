-- Signed chain heads (src/store/signing.rs): with [store] signing_key_file the
-- daemon signs both chains' heads with an Ed25519 key kept outside the store,
-- so that `pgtrail verify --public-key` can prove the chain was not rewritten
-- and recomputed. Append-only, like the entries.
CREATE TABLE pgtrail.signed_heads (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signed_at       timestamptz NOT NULL,
    capture_entries bigint      NOT NULL,
    capture_hash    bytea       NOT NULL,
    events_entries  bigint      NOT NULL,
    events_hash     bytea       NOT NULL,
    public_key      bytea       NOT NULL,
    signature       bytea       NOT NULL
);
CREATE TRIGGER signed_heads_append_only BEFORE UPDATE OR DELETE ON pgtrail.signed_heads
    FOR EACH ROW EXECUTE FUNCTION pgtrail.entries_append_only();
CREATE TRIGGER signed_heads_no_truncate BEFORE TRUNCATE ON pgtrail.signed_heads
    FOR EACH STATEMENT EXECUTE FUNCTION pgtrail.entries_append_only();
