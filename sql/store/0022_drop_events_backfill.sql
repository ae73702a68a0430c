-- Two corrections to migration 21 (sql/store/0021_anchor_runs.sql).
--
-- 1. Every drop event of a partition dropped before migration 21.
-- Migration 21 filled the ledger's drop_events, for drops made before it,
-- with the newest drop event and the one the last restore names: a
-- partition dropped, restored and dropped again more often than that lost
-- its older drops, and a restore of one of their archives said
-- archive_recorded false. Before migration 21 the ledger kept no list, so
-- the older drops are known only from their events in the events chain:
-- each `retention` event `partition_dropped` that names the partition and
-- was recorded before the newest drop of it that migration 21 found (the
-- newest in drop_events committed before migration 21 was applied: later
-- ones are drops by migration 21's drop_partition, which lists its own
-- events). An event recorded after that drop is never taken, so nothing
-- recorded since migration 21 (by the writer role, say) can vouch for an
-- archive. What this cannot tell: a `partition_dropped` event the writer
-- role recorded, with made-up details, before migration 21 (the writer
-- records `retention` events, as drop_partition does from its session);
-- docs/security.md says so.
WITH applied AS (
    SELECT applied_at FROM pgtrail.schema_migrations WHERE version = 21
),
newest AS (
    SELECT p.name, max(d) AS id
    FROM pgtrail.partitions p
    CROSS JOIN LATERAL unnest(p.drop_events) d
    JOIN pgtrail.entries e ON e.id = d AND e.source = 0
    WHERE e.committed_at < (SELECT applied_at FROM applied)
    GROUP BY p.name
)
UPDATE pgtrail.partitions p SET drop_events = ARRAY(
    SELECT DISTINCT x FROM (
        SELECT unnest(p.drop_events)
        UNION ALL
        SELECT e.id FROM pgtrail.entries e
        WHERE e.schema_name = 'pgtrail' AND e.table_name = 'retention' AND e.source = 0
          AND e.action = 'EVENT' AND e.id < n.id
          AND e.details->>'event' = 'partition_dropped' AND e.details->>'partition' = p.name
    ) o (x) ORDER BY x)
FROM newest n
WHERE n.name = p.name;

-- 2. run_mismatch (0021) is not SECURITY DEFINER and no role but its owner
-- may execute it: drop_partition and restore_partition, SECURITY DEFINER,
-- call it as their owners. CREATE OR REPLACE keeps a function's owner, so
-- when migration 21 was applied by another role than migrations 18 and 19
-- (setup run as a superuser on a store its owner set up), run_mismatch is
-- that role's and the owners of drop_partition and restore_partition could
-- not execute it: retention could not drop a restored partition again, and
-- no archive could be restored. Each is granted EXECUTE; it reads with the
-- caller's rights, so it gives them nothing more. A role that may not grant
-- it (neither run_mismatch's owner, a member of it, nor a superuser) is
-- told which role can.
DO $$
DECLARE
    caller regprocedure;
    holder name;
BEGIN
    FOREACH caller IN ARRAY ARRAY[
        'pgtrail.drop_partition(text, json)',
        'pgtrail.restore_partition(smallint, text, timestamptz, timestamptz, json, interval, text)'
    ]::regprocedure[] LOOP
        SELECT pg_get_userbyid(proowner) INTO holder FROM pg_proc WHERE oid = caller;
        IF NOT has_function_privilege(holder, 'pgtrail.run_mismatch(regclass, text, smallint)', 'EXECUTE') THEN
            BEGIN
                EXECUTE format('GRANT EXECUTE ON FUNCTION pgtrail.run_mismatch(regclass, text, smallint) TO %I', holder);
            EXCEPTION WHEN insufficient_privilege THEN
                NULL; -- said below, with who can
            END;
        END IF;
        IF NOT has_function_privilege(holder, 'pgtrail.run_mismatch(regclass, text, smallint)', 'EXECUTE') THEN
            RAISE EXCEPTION 'pgtrail.run_mismatch is owned by %, and % (which owns %) may not execute it; % may not grant it',
                (SELECT pg_get_userbyid(proowner) FROM pg_proc
                 WHERE oid = 'pgtrail.run_mismatch(regclass, text, smallint)'::regprocedure),
                holder, caller, current_user
                USING HINT = 'Run `pgtrail setup` as a superuser, or as the role that owns pgtrail.run_mismatch.';
        END IF;
    END LOOP;
END $$;
