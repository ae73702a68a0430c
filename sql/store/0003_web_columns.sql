-- The web view's actor and client address as plain columns, with indexes that
-- serve both the filter and the sort by them (bench/web.sh: on 5,000,000
-- entries, sorting by actor or IP read and sorted every entry's context JSON,
-- seconds per page).
--
-- actor: the application actor, else the database role (what the log shows
--   as Actor); client_addr: the client's address, null over a Unix socket.
-- Both are computed by pgtrail from the context it writes (the writer once
-- per transaction, store::events for its own events), which is cheaper at
-- ingest than an index on a JSON expression: that would parse every entry's
-- context inside the store.
--
-- Existing entries are filled here: each column is added as a generated
-- column (one rewrite of the table computes it from context) and then made a
-- plain column, which keeps the values and stops PostgreSQL computing them.
-- On a large store this rewrites the table once and holds its lock meanwhile.

-- An address that PostgreSQL would not read as one becomes null instead of
-- failing the migration; only used here.
CREATE FUNCTION pgtrail.migration_0003_inet(text) RETURNS inet
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN $1::inet;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

ALTER TABLE pgtrail.entries
    ADD COLUMN actor text
        GENERATED ALWAYS AS (coalesce(context->>'actor', context->>'db_user')) STORED,
    ADD COLUMN client_addr inet
        GENERATED ALWAYS AS (pgtrail.migration_0003_inet(context->>'client_addr')) STORED;
ALTER TABLE pgtrail.entries ALTER COLUMN actor DROP EXPRESSION;
ALTER TABLE pgtrail.entries ALTER COLUMN client_addr DROP EXPRESSION;
DROP FUNCTION pgtrail.migration_0003_inet(text);

-- Filter by actor (equality, newest first) and sort by actor, keyset-paged:
-- the log's sort key is exactly this expression, never null. The column
-- itself is INCLUDEd so that counting matches is an index-only scan (the
-- planner does not take an expression's value from the index alone).
CREATE INDEX entries_actor ON pgtrail.entries ((coalesce(actor, '')), id) INCLUDE (actor);
-- Sort by IP, keyset-paged (the address as text, as the log has always
-- ordered it), and the filter by one address. Without INCLUDE: counting by
-- address is rarer than by actor, and the column would make every insert dearer.
CREATE INDEX entries_client_addr ON pgtrail.entries ((coalesce(host(client_addr), '')), id);

-- The rewrite left the planner without statistics for the new columns.
ANALYZE pgtrail.entries;
