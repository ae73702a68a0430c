-- The log filtered to a rare action (TRUNCATE, DDL, EVENT) newest first.
-- No index leads with the action, so such a page read the primary key back
-- over every newer row change until it had a page (0.3 to 1.8 s on a store of
-- a million entries, longer under load), holding a web view connection that
-- cheap pages wait for. This index holds only the rare actions: a row change
-- (INSERT, UPDATE, DELETE; nearly every entry) costs capture one predicate
-- test and no index insertion. The web view adds the same predicate to its
-- filter when every action asked for is rare (src/web/query/statement.rs), so
-- that the planner uses this index whatever the parameters' values.
CREATE INDEX entries_rare_action ON pgtrail.entries (action, id)
    WHERE action NOT IN ('INSERT', 'UPDATE', 'DELETE');
