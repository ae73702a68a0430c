-- An audit gap (a replication slot lost or replaced, so changes went
-- uncaptured) is recorded as an EVENT of pgtrail's own category 'gap':
-- record_event's list of categories gains it, in front of whatever the list
-- holds. The function is rewritten from its own definition, as in 0009, so
-- this changes that list and nothing else.
DO $gap$
DECLARE
    old text := pg_get_functiondef('pgtrail.record_event(timestamptz, text, json, json, json, json, json, json, text, inet, bytea)'::regprocedure);
BEGIN
    IF strpos(old, 'p_table NOT IN (') = 0 THEN
        RAISE EXCEPTION 'pgtrail.record_event has no list of categories for this migration to extend';
    END IF;
    EXECUTE regexp_replace(old, 'p_table NOT IN \(', 'p_table NOT IN (''gap'', ');
END
$gap$;
