-- An event's time is the store's to vouch for: pgtrail.record_event takes
-- the time from its caller (the events chain's digest covers it, so the
-- caller must choose it), and the web view's role (pgtrail_reader) records
-- sign-ins, user changes and exports through it. Unbounded, that role could
-- date an event years back or ahead, making a partition for each such time
-- (pgtrail.ensure_partition runs as the owner) or putting an event where
-- retention drops it at once. So a caller that is not the store's owner
-- must give a time within 5 minutes of the store server's clock
-- (clock_timestamp(), when the call runs). 5 minutes, as Kerberos allows
-- between clocks: hosts kept by NTP differ by milliseconds, and a call waits
-- on nothing before the check, so only a clock that is really wrong fails
-- it; and 5 minutes is far inside any partition or retention period.
-- The store's owner (setup, restore) is not bound. Retention's drop runs
-- as the writer's session, and takes its event's time from the server's
-- clock just before recording it.
--
-- The refusal is SQLSTATE 55000 (object not in prerequisite state): the
-- daemon takes it for a setup problem to fix, never for data to quarantine.
--
-- record_event, restated whole (0018's) with that bound first.
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
    IF NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entries'::regclass), 'USAGE')
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
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entries'::regclass), 'USAGE')
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
    LOCK TABLE pgtrail.entries IN ROW EXCLUSIVE MODE;
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
