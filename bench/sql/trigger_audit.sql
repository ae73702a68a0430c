-- The classic row-trigger audit the benchmarks compare pgtrail with (bench/app_cost.sh's (c),
-- bench/source_cost.sh's (c)): AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW on the four pgbench
-- tables, writing table, operation, now(), current_user, to_jsonb(OLD) and to_jsonb(NEW) into an
-- audit table in the same transaction. Run with psql on a database made by `pgbench -i`.
CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    table_name  text        NOT NULL,
    operation   text        NOT NULL,
    changed_at  timestamptz NOT NULL,
    changed_by  text        NOT NULL,
    old_row     jsonb,
    new_row     jsonb
);
CREATE FUNCTION audit_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO audit_log (table_name, operation, changed_at, changed_by, old_row, new_row)
    VALUES (format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_OP, now(), current_user,
            CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$fn$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON pgbench_accounts FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON pgbench_tellers  FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON pgbench_branches FOR EACH ROW EXECUTE FUNCTION audit_row();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON pgbench_history  FOR EACH ROW EXECUTE FUNCTION audit_row();
