-- Gaps and quarantine are capture's to record: an EVENT under 'gap' or
-- 'quarantine' says what the daemon saw in the source, and the web view
-- shows gaps as holes in the trail. A role that may only read the store
-- (pgtrail_reader, the web view's) could otherwise claim a gap that never
-- was. record_event now refuses those two categories unless the caller's
-- login role is a member of pgtrail_writer or of the store's owner (the role
-- that ran setup; a superuser is a member of every role). The function is
-- rewritten from its own definition, as in 0009 and 0011, so this adds the
-- check and changes nothing else.
DO $rights$
DECLARE
    old text := pg_get_functiondef('pgtrail.record_event(timestamptz, text, json, json, json, json, json, json, text, inet, bytea)'::regprocedure);
    anchor constant text := 'IF length(p_digest) IS DISTINCT FROM 32 THEN';
BEGIN
    IF strpos(old, anchor) = 0 THEN
        RAISE EXCEPTION 'pgtrail.record_event has no digest check for this migration to put its check before';
    END IF;
    EXECUTE replace(old, anchor, $check$IF p_table IN ('gap', 'quarantine')
        AND NOT pg_has_role(session_user,
            (SELECT relowner FROM pg_class WHERE oid = 'pgtrail.entries'::regclass), 'USAGE')
        AND NOT EXISTS (SELECT FROM pg_roles
            WHERE rolname = 'pgtrail_writer' AND pg_has_role(session_user, oid, 'USAGE')) THEN
        RAISE EXCEPTION 'pgtrail.record_event: only capture records % events', p_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Gaps and quarantine are recorded by `pgtrail run` and `pgtrail setup`, whose login role is a member of pgtrail_writer.';
    END IF;
    $check$ || anchor);
END
$rights$;
