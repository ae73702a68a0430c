#!/usr/bin/env bash
# What each index of pgtrail.entries costs at ingest: the same COPY file of real
# captured entries is loaded into fresh tables of the store's shape that differ
# only in their indexes (and, for two variants, in the type of the JSON columns).
#
#   bash bench/store_indexes.sh [options]
#
#   --rows N        entries in the COPY file (default 1000000; rounded up to whole
#                   pgbench transactions of 4 row changes, as bench/capture.sh does)
#   --runs N        timed loads per variant (default 3); the median is reported
#   --dir DIR       work directory (default target/bench/store_indexes; wiped first)
#   --reuse         skip steps 1-2: reuse DIR/entries.copy and the cluster that an
#                   earlier `--keep` run left running in DIR/capture
#   --build         build target/release/pgtrail first (default: use it as it is,
#                   building only if it is missing)
#   --keep          leave the cluster running and DIR in place at the end
#   --synthetic     make the data with examples/web_fill (the web benchmark's
#                   entries: 200 tables, 300 actors, ~250 addresses) instead of
#                   steps 1-2's pgbench capture, whose contexts are all alike
#                   (one role, one address), which flatters the actor and IP indexes
#   --bulk          capture bulk transactions of 10,000 row changes instead of
#                   pgbench's 4 (bench/capture.sh --bulk): the per-transaction table
#                   of variants (15)-(20) nearly vanishes and the entries' indexes dominate
#
# Method:
#  1. bench/capture.sh --keep runs the real pipeline once: a private cluster
#     (scripts/pgcluster.sh; fsync=off, shared_buffers=1GB, max_wal_size=16GB,
#     checkpoint_timeout=1h), a pgbench tpcb-like backlog with REPLICA IDENTITY
#     DEFAULT, `pgtrail setup`, `pgtrail run` until all of it is stored, and the
#     entry count checked;
#  2. the entries go out to DIR/entries.copy with
#     \copy (SELECT committed_at, xid, lsn, ..., row_key FROM pgtrail.entries
#     ORDER BY id) TO file: the COPY text pgtrail itself sends, in commit order;
#     both replication slots are then dropped so they do not pin the WAL the
#     loads write, and database bench is dropped;
#  3. for each run, for each variant in turn (runs interleaved, so drift of the
#     machine spreads over all variants alike): in the store database, create the
#     table idxbench.t (LIKE pgtrail.entries: same columns, identity, NOT NULL and
#     CHECK constraints; indexes as the variant says), CHECKPOINT, then time
#     `\copy idxbench.t (...) FROM file` alone with psql's \timing (one COPY, one
#     transaction, client-side read of the file; no connection setup in the time),
#     record the WAL it wrote and the sizes, check the row count, drop the table;
#  4. print, per variant, the median time, rows/s, the extra seconds over
#     variant (2) (the table as stored, without any index), the WAL written, the
#     heap and index sizes, and the spread (min-max) of the runs.
#
# Variants: (1) no index, the five JSON columns as text; (2) no index (json, as
# stored); (3) + primary key on id; (4) + BRIN (committed_at); (5) + btree (xid);
# (6) + btree (row_key); (7) all of the store's indexes before migration 0003;
# (8) the rejected alternative to row_key: primary key + btree
# (schema_name, table_name, md5(primary_key::text)); (9) (7) with jsonb instead
# of json. (3)-(6) each add one index to (2). (1)-(9) are loaded without
# migration 0003's columns actor and client_addr (the table without them, the
# file without their two fields), as before it. Then (10) (2) with those two
# columns filled; (11) (10) + btree entries_actor; (12) (10) + btree
# entries_client_addr; (13) all of the store's indexes (LIKE ... INCLUDING
# ALL: the real table, as 0003 leaves it); (14) (13) + a pg_trgm GIN index on
# the row images' text, the index free-text search would need (not adopted).
#
# Variants (15)-(20) measure the layout issue 12 proposes, from the same data
# split in two files: one row per (source transaction, context) in a table
# idxbench.tx (id, committed_at, source, xid, lsn, context, actor, client_addr,
# entries; primary key (id, committed_at, source) and btrees on actor,
# client address and xid) and the entries without those columns in idxbench.t
# (id, committed_at, source, txn, schema_name, table_name, action, the JSON
# columns, row_key; primary key (id, committed_at, source) and btrees
# (committed_at, id), (row_key), (schema_name, table_name, committed_at, id),
# (txn)). The time is both COPYs, transactions first. (15) that layout,
# unpartitioned; (16) (15) with both tables partitioned by month on
# committed_at; (17) (16) + a foreign key from the entries to their transaction;
# (18) (16) with the JSON columns as text; (19) (16) without the btree on
# (schema_name, table_name, committed_at, id); (20) (16) without the btrees on
# actor, client address and xid of the transactions.
#
# Not measured here: pgtrail's own batching (the daemon sends COPY chunks of at
# most 4 MiB and commits about every 250 ms) and a table that already holds many
# rows (deeper btrees); both are the same for every variant.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

rows=1000000
runs=3
dir="$repo/target/bench/store_indexes"
reuse=0
build=0
keep=0
synthetic=0
bulk=0

die() { echo "store_indexes: $*" >&2; exit 1; }
say() { echo "store_indexes: $*" >&2; }
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) rows="${2:?--rows needs a number}"; shift 2 ;;
        --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --reuse) reuse=1; shift ;;
        --build) build=1; shift ;;
        --keep) keep=1; shift ;;
        --synthetic) synthetic=1; shift ;;
        --bulk) bulk=1; shift ;;
        -h|--help) usage ;;
        *) echo "store_indexes: unknown option $1" >&2; usage ;;
    esac
done
[[ "$rows" =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ $bulk -eq 0 || ($synthetic -eq 0 && $reuse -eq 0) ]] || die "--bulk makes its data by capture: not with --synthetic or --reuse"

transactions=$(( (rows + 3) / 4 ))
cluster="$dir/capture"
copy_file="$dir/entries.copy"
release_dir="${CARGO_TARGET_DIR:-$repo/target}/release"
pgtrail="$release_dir/pgtrail"

cleanup() {
    local rc=$?
    if [[ $keep -eq 1 ]]; then
        say "kept $dir (stop the cluster with: bash scripts/pgcluster.sh destroy $cluster)"
    else
        pgc_destroy "$cluster" || true
        rm -rf "$dir"
    fi
    exit "$rc"
}

pgc_find_bin
if [[ $reuse -eq 1 ]]; then
    [[ -s "$copy_file" ]] || die "--reuse: no $copy_file (run once with --keep first)"
    pgc_status "$cluster" >/dev/null || die "--reuse: no cluster running in $cluster (run once with --keep first)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
elif [[ $synthetic -eq 1 ]]; then
    # 1-2. Synthetic entries: a store made by `pgtrail setup`, and the file.
    if [[ $build -eq 1 || ! -x "$pgtrail" || ! -x "$release_dir/examples/web_fill" ]]; then
        say "cargo build --release (pgtrail and examples/web_fill)"
        (cd "$repo" && cargo build --release --quiet && cargo build --release --quiet --example web_fill)
    fi
    pgc_destroy "$cluster" || true
    rm -rf "$dir"
    mkdir -p "$dir"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    pgc_start "$cluster" "fsync=off" "max_wal_size=16GB" "checkpoint_timeout=1h" "shared_buffers=1GB"
    pgc_psql "$cluster" -c "CREATE DATABASE app"
    pgc_psql "$cluster" -d app -c "CREATE TABLE public.placeholder (id int PRIMARY KEY)"
    printf '[source]\nurl = "postgres://postgres@127.0.0.1:%s/app"\nslot = "store_indexes"\n[capture]\ntables = ["public.placeholder"]\n' \
        "$PGC_PORT" >"$dir/pgtrail.toml"
    "$pgtrail" --config "$dir/pgtrail.toml" setup >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }
    pgc_psql "$cluster" -d postgres -At \
        -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
    say "examples/web_fill --entries $rows"
    # Its fields in the order of $cols below (without details, always null here).
    "$release_dir/examples/web_fill" --entries "$rows" | cut -f1-12,14-15 >"$copy_file"
else
    # 1. The real pipeline, once.
    if [[ $build -eq 1 || ! -x "$pgtrail" ]]; then
        say "cargo build --release"
        (cd "$repo" && cargo build --release --quiet)
    fi
    pgc_destroy "$cluster" || true
    rm -rf "$dir"
    mkdir -p "$dir"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    say "bench/capture.sh --transactions $transactions --keep: the real pipeline, to make the data"
    capture_args=(--no-build --keep --transactions "$transactions" --dir "$cluster")
    [[ $bulk -eq 1 ]] && capture_args+=(--bulk)
    bash "$repo/bench/capture.sh" "${capture_args[@]}" \
        >"$dir/capture.out" 2>"$dir/capture.err" \
        || { cat "$dir/capture.err" "$dir/capture.out" >&2; die "bench/capture.sh failed (output above)"; }
    grep -q '^entries check:' "$dir/capture.out" || { cat "$dir/capture.out" >&2; die "bench/capture.sh did not check its entries"; }
fi

psql_store() { pgc_psql "$cluster" -d pgtrail "$@"; }
cols="committed_at, xid, lsn, schema_name, table_name, action, primary_key, before, after, changed_columns, context, row_key, actor, client_addr"
# The same without migration 0003's columns: the first 12 fields of each line.
cols_pre="committed_at, xid, lsn, schema_name, table_name, action, primary_key, before, after, changed_columns, context, row_key"
pre_file="$dir/entries_pre_0003.copy"

if [[ $reuse -eq 0 && $synthetic -eq 0 ]]; then
    # 2. The COPY file, then nothing left that pins WAL.
    say "exporting pgtrail.entries to $copy_file"
    psql_store -c "\\copy (SELECT $cols FROM pgtrail.entries ORDER BY id) TO '$copy_file'"
    pgc_psql "$cluster" -d postgres -At \
        -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
    pgc_psql "$cluster" -d postgres -c "DROP DATABASE bench"
fi
[[ $reuse -eq 1 && -s "$pre_file" ]] || cut -f1-12 "$copy_file" >"$pre_file"
n=$(wc -l <"$copy_file")
file_mib=$(( $(stat -c %s "$copy_file") / 1048576 ))
[[ "$n" -gt 0 ]] || die "$copy_file is empty"
psql_store -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS idxbench CASCADE" -c "CREATE SCHEMA idxbench" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_trgm"

# The split layout's two files, made from the same entries: a transactions row per
# (transaction, context), its id the first entry's, and each entry pointing at it.
txn_file="$dir/split_transactions.copy"
split_file="$dir/split_entries.copy"
txn_key="committed_at, xid, lsn, context::text, actor, client_addr"
txn_cols="id, committed_at, source, xid, lsn, context, actor, client_addr, entries"
split_cols="committed_at, source, txn, schema_name, table_name, action, primary_key, before, after, changed_columns, row_key"
if [[ $reuse -eq 0 || ! -s "$split_file" ]]; then
    say "splitting the entries into $txn_file and $split_file"
    psql_store -c "CREATE TABLE idxbench.src (LIKE pgtrail.entries INCLUDING DEFAULTS INCLUDING IDENTITY)" \
        -c "\\copy idxbench.src ($cols) FROM '$copy_file'" \
        -c "\\copy (SELECT min(id), committed_at, 1, xid, lsn, (array_agg(context))[1], actor, client_addr, count(*) FROM idxbench.src GROUP BY $txn_key ORDER BY min(id)) TO '$txn_file'" \
        -c "\\copy (SELECT committed_at, 1, min(id) OVER (PARTITION BY $txn_key), schema_name, table_name, action, primary_key, before, after, changed_columns, row_key FROM idxbench.src ORDER BY id) TO '$split_file'" \
        -c "DROP TABLE idxbench.src" >/dev/null
fi
n_txn=$(wc -l <"$txn_file")
# Month partitions covering the data, for both tables of the partitioned variants.
months=$(awk -F'\t' 'NR == 1 || $2 < lo { lo = $2 } NR == 1 || $2 > hi { hi = $2 } END { print substr(lo, 1, 7) "-01", substr(hi, 1, 7) "-01" }' "$txn_file")
parts() {
    psql_store -At -c "SELECT string_agg(format('CREATE TABLE idxbench.%s_%s PARTITION OF idxbench.%s FOR VALUES FROM (%L) TO (%L);',
        '$1', to_char(m, 'YYYYMM'), '$1', m, m + interval '1 month'), ' ')
        FROM generate_series('${months% *}'::timestamptz, '${months#* }'::timestamptz, interval '1 month') m"
}

# 3. The variants: the DDL that makes idxbench.t.
base="CREATE TABLE idxbench.t (LIKE pgtrail.entries INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS);"
real="CREATE TABLE idxbench.t (LIKE pgtrail.entries INCLUDING ALL);"
# Before migration 0003: without its columns (and so without their indexes).
pre="ALTER TABLE idxbench.t DROP COLUMN actor, DROP COLUMN client_addr;"
json_cols=(primary_key before after changed_columns context)
retype() { local t="$1" c sep="" out="ALTER TABLE idxbench.t"; for c in "${json_cols[@]}"; do out+="$sep ALTER COLUMN $c TYPE $t"; sep=","; done; echo "$out;"; }
names=(
    "(1) no index, JSON columns as text"
    "(2) no index, json (as stored)"
    "(3) (2) + primary key (id)"
    "(4) (2) + BRIN (committed_at)"
    "(5) (2) + btree (xid)"
    "(6) (2) + btree (row_key)"
    "(7) all store indexes before 0003"
    "(8) pk + btree (schema, table, md5(pk)) (rejected)"
    "(9) all store indexes before 0003, jsonb"
    "(10) (2) + columns actor, client_addr"
    "(11) (10) + entries_actor"
    "(12) (10) + entries_client_addr"
    "(13) all store indexes (the real table)"
    "(14) (13) + GIN pg_trgm on before and after text (rejected)"
    "(15) split: transactions (3 btrees) + entries (4 btrees)"
    "(16) (15) partitioned by month"
    "(17) (16) + foreign key entries -> transactions"
    "(18) (16) with JSON columns as text"
    "(19) (16) without entries (schema, table, time, id)"
    "(20) (16) without transactions' actor, address, xid"
)
tx_table() {
    echo "CREATE TABLE idxbench.tx (id bigint NOT NULL, committed_at timestamptz NOT NULL, source smallint NOT NULL,
        xid bigint, lsn pg_lsn, context json NOT NULL, actor text, client_addr inet, entries integer NOT NULL,
        PRIMARY KEY (id, committed_at, source)) $1;"
}
tx_indexes="CREATE INDEX ON idxbench.tx ((coalesce(actor, '')), committed_at, id) INCLUDE (entries);
    CREATE INDEX ON idxbench.tx ((coalesce(host(client_addr), '')), committed_at, id); CREATE INDEX ON idxbench.tx (xid);"
entries_table() {
    echo "CREATE TABLE idxbench.t (id bigint GENERATED BY DEFAULT AS IDENTITY, committed_at timestamptz NOT NULL,
        source smallint NOT NULL, txn bigint NOT NULL, schema_name text NOT NULL, table_name text NOT NULL,
        action text NOT NULL, primary_key $2, before $2, after $2, changed_columns $2, details json, row_key bigint,
        hash bytea, PRIMARY KEY (id, committed_at, source)) $1;"
}
entries_indexes="CREATE INDEX ON idxbench.t (committed_at, id); CREATE INDEX ON idxbench.t (row_key); CREATE INDEX ON idxbench.t (txn);"
entries_table_index="CREATE INDEX ON idxbench.t (schema_name, table_name, committed_at, id);"
by_month="PARTITION BY RANGE (committed_at)"
split_unpartitioned="$(tx_table "") $tx_indexes $(entries_table "" json) $entries_indexes $entries_table_index"
split_month="$(tx_table "$by_month") $(parts tx) $tx_indexes $(entries_table "$by_month" json) $(parts t) $entries_indexes"
ddl=(
    "$base $pre $(retype text)"
    "$base $pre"
    "$base $pre ALTER TABLE idxbench.t ADD PRIMARY KEY (id);"
    "$base $pre CREATE INDEX ON idxbench.t USING brin (committed_at);"
    "$base $pre CREATE INDEX ON idxbench.t (xid);"
    "$base $pre CREATE INDEX ON idxbench.t (row_key);"
    "$real $pre"
    "$base $pre ALTER TABLE idxbench.t ADD PRIMARY KEY (id); CREATE INDEX ON idxbench.t (schema_name, table_name, md5(primary_key::text));"
    "$real $pre $(retype jsonb)"
    "$base"
    "$base CREATE INDEX ON idxbench.t ((coalesce(actor, '')), id) INCLUDE (actor);"
    "$base CREATE INDEX ON idxbench.t ((coalesce(host(client_addr), '')), id);"
    "$real"
    "$real CREATE INDEX ON idxbench.t USING gin ((coalesce(before::text, '') || ' ' || coalesce(after::text, '')) gin_trgm_ops);"
    "$split_unpartitioned"
    "$split_month $entries_table_index"
    "$split_month $entries_table_index ALTER TABLE idxbench.t ADD FOREIGN KEY (txn, committed_at, source) REFERENCES idxbench.tx;"
    "$(tx_table "$by_month") $(parts tx) $tx_indexes $(entries_table "$by_month" text) $(parts t) $entries_indexes $entries_table_index"
    "$split_month"
    "$(tx_table "$by_month") $(parts tx) $(entries_table "$by_month" json) $(parts t) $entries_indexes $entries_table_index"
)
# Which file and columns each variant loads: 0 without 0003's columns, 1 with them
# (one table either way), 2 the split pair.
with_0003=(0 0 0 0 0 0 0 0 0 1 1 1 1 1 2 2 2 2 2 2)
nv=${#names[@]}

pg_version=$(psql_store -At -c "SHOW server_version")
settings=$(psql_store -At -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'shared_buffers', 'max_wal_size', 'wal_level', 'maintenance_work_mem')")
echo "== store index cost benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)) =="
echo "PostgreSQL $pg_version; $settings"
if [[ -s "$dir/capture.out" ]]; then
    echo "data: $n entries from a real pgtrail run (bench/capture.sh: pgbench tpcb-like, REPLICA IDENTITY DEFAULT), $file_mib MiB of COPY text"
else
    echo "data: $n synthetic entries (examples/web_fill: 200 tables, 300 actors, ~250 client addresses), $file_mib MiB of COPY text"
fi
[[ -s "$dir/capture.out" ]] && sed -n 's/^(b) pgtrail run: */capture run that made it: /p' "$dir/capture.out"
echo "method: per run, each variant in turn: CREATE TABLE idxbench.t (LIKE pgtrail.entries ...) + its indexes, CHECKPOINT,"
echo "        then \\copy idxbench.t FROM the file timed alone by psql's \\timing (one COPY, one transaction), count checked, DROP;"
echo "        (15)-(20): the transactions file, then the entries file, both COPYs timed, in one session;"
echo "        $runs runs, median reported; extra s = median minus variant (2)'s"
echo

declare -A secs wal heap idx
for r in $(seq 1 "$runs"); do
    for ((v = 0; v < nv; v++)); do
        psql_store -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS idxbench.t, idxbench.tx" -c "${ddl[$v]}" -c "CHECKPOINT"
        # The transactions first (the foreign key of (17) needs them), then the entries.
        first_copy=""
        case ${with_0003[$v]} in
            0) vcols=$cols_pre; vfile=$pre_file ;;
            1) vcols=$cols; vfile=$copy_file ;;
            2) vcols=$split_cols; vfile=$split_file
               first_copy="\\copy idxbench.tx ($txn_cols) FROM '$txn_file'" ;;
        esac
        out=$(psql_store -At <<EOF
SELECT pg_current_wal_lsn() AS w0 \\gset
\\timing on
$first_copy
\\copy idxbench.t ($vcols) FROM '$vfile'
\\timing off
SELECT 'result', (SELECT count(*) FROM idxbench.t), pg_wal_lsn_diff(pg_current_wal_lsn(), :'w0')::bigint,
       sum(pg_table_size(relid)), sum(pg_indexes_size(relid))
FROM (SELECT t AS relid FROM (VALUES ('idxbench.t'::regclass), (to_regclass('idxbench.tx'))) v(t) WHERE t IS NOT NULL
      UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent IN ('idxbench.t'::regclass, to_regclass('idxbench.tx'))) r;
EOF
        ) || die "variant ${names[$v]}: the load failed"
        # Both COPYs' times, where there are two; a missing one would time the other alone.
        times=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out")
        want=1; [[ ${with_0003[$v]} -eq 2 ]] && want=2
        [[ $(grep -c . <<<"$times") -eq $want ]] || die "variant ${names[$v]}: expected $want timings in: $out"
        ms=$(awk '{ t += $1 } END { print t }' <<<"$times")
        res=$(grep '^result|' <<<"$out") || die "variant ${names[$v]}: no result in: $out"
        IFS='|' read -r _ count w h i <<<"$res"
        [[ -n "$ms" ]] || die "variant ${names[$v]}: no timing in: $out"
        [[ "$count" == "$n" ]] || die "variant ${names[$v]}: loaded $count rows, expected $n"
        if [[ ${with_0003[$v]} -eq 2 ]]; then
            txns=$(psql_store -At -c "SELECT count(*), sum(entries) FROM idxbench.tx")
            [[ "$txns" == "$n_txn|$n" ]] || die "variant ${names[$v]}: transactions (rows|entries) $txns, expected $n_txn|$n"
        fi
        s=$(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')
        secs[$v]+="$s "
        wal[$v]=$w; heap[$v]=$h; idx[$v]=$i
        say "run $r/$runs ${names[$v]}: ${s}s"
    done
done
psql_store -c "SET client_min_messages = warning" -c "DROP SCHEMA idxbench CASCADE"
echo "split layout: $n_txn transactions rows for $n entries"

median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
spread() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }
ref=$(median "${secs[1]}")
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

# 4. The table.
echo "| variant | seconds (median of $runs) | rows/s | extra s vs (2) | WAL MiB | heap MiB | index MiB | runs min-max s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for ((v = 0; v < nv; v++)); do
    m=$(median "${secs[$v]}")
    rate=$(awk -v n="$n" -v s="$m" 'BEGIN { printf "%.0f", n / s }')
    extra=$(awk -v a="$m" -v b="$ref" 'BEGIN { printf "%+.2f", a - b }')
    printf '| %s | %.2f | %s | %s | %s | %s | %s | %s |\n' "${names[$v]}" "$m" "$rate" "$extra" \
        "$(mib "${wal[$v]}")" "$(mib "${heap[$v]}")" "$(mib "${idx[$v]}")" "$(spread "${secs[$v]}")"
done
echo
# The layout issue 12 proposes against the table as it is, as rows/s.
old_s=$(median "${secs[12]}")
for v in 14 15 19; do
    awk -v a="$old_s" -v b="$(median "${secs[$v]}")" -v name="${names[$v]}" \
        'BEGIN { printf "%s against (13): %.2f times the rows/s\n", name, a / b }'
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
