-- pgtrail's own events go in through one function, so a role that may only
-- read the store (the web view's, see sql/store/roles.sql) records events
-- without any right to INSERT into pgtrail.entries: it can write EVENT
-- entries of pgtrail's own categories and nothing else. The function links
-- the entry into the events chain (src/store/chain.rs) under the head's row
-- lock, which orders concurrent events. The caller computes the entry's
-- digest; one that does not match the entry is reported by `pgtrail verify`.
CREATE FUNCTION pgtrail.record_event(
    p_committed_at timestamptz, p_table text, p_primary_key json, p_before json,
    p_after json, p_changed_columns json, p_context json, p_details json,
    p_actor text, p_client_addr inet, p_digest bytea)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    link bytea;
    new_id bigint;
BEGIN
    IF p_table NOT IN ('session', 'user', 'token', 'export', 'config') THEN
        RAISE EXCEPTION 'pgtrail.record_event: % is not a category of pgtrail''s events', p_table;
    END IF;
    IF length(p_digest) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'pgtrail.record_event: the digest must be 32 bytes (SHA-256)';
    END IF;
    UPDATE pgtrail.chain_heads SET hash = sha256(hash || p_digest), entries = entries + 1, updated_at = now()
        WHERE chain = 'events' RETURNING hash INTO link;
    IF link IS NULL THEN
        RAISE EXCEPTION 'the events chain has no head in pgtrail.chain_heads; run `pgtrail setup`';
    END IF;
    INSERT INTO pgtrail.entries (committed_at, xid, lsn, schema_name, table_name, action, primary_key,
            before, after, changed_columns, context, details, actor, client_addr, hash)
        VALUES (p_committed_at, NULL, NULL, 'pgtrail', p_table, 'EVENT', p_primary_key,
            p_before, p_after, p_changed_columns, p_context, p_details, p_actor, p_client_addr, link)
        RETURNING id INTO new_id;
    RETURN new_id;
END $$;
REVOKE ALL ON FUNCTION pgtrail.record_event(timestamptz, text, json, json, json, json, json, json, text, inet, bytea) FROM PUBLIC;
