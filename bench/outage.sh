#!/usr/bin/env bash
# How fast capture catches up after store outages: a source and a store cluster, `pgtrail run`,
# pgbench tpcb-like at a fixed 200 TPS on the source, and two store outages (`pg_ctl stop -m fast`,
# then a start): 15 s, then 20 s starting 10 s after the first catch-up, so that the second meets
# whatever backoff the first left. For each, the time from the store accepting connections again
# until the store's checkpoint reaches the source's WAL position at that moment. At the end the
# entries of pgbench_history are counted against the table's rows: nothing lost, nothing doubled.
#
#   bash bench/outage.sh [--binary PATH] [--dir DIR]
#
# --binary PATH   the pgtrail binary (default: $CARGO_TARGET_DIR's or target/'s release build, as is)
# --dir DIR       work directory (default target/bench/outage; wiped first)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=outage
# shellcheck source-path=SCRIPTDIR source=bench/lib.sh
source "$repo/bench/lib.sh"

binary="${CARGO_TARGET_DIR:-$repo/target}/release/pgtrail" dir="$repo/target/bench/outage" keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ -x "$binary" ]] || die "$binary not found (cargo build --release, or give --binary)"
rm -rf "$dir"
mkdir -p "$dir"
daemon_pid="" pgbench_pid=""
stop_all() {
    stop_pid "$pgbench_pid"
    stop_pid "$daemon_pid"
    pgc_destroy "$dir/src" >/dev/null 2>&1 || true
    pgc_destroy "$dir/store" >/dev/null 2>&1 || true
}
bench_trap_exit

pgc_start "$dir/src" "fsync=off" >/dev/null
src_port="$PGC_PORT"
pgc_start "$dir/store" "fsync=off" >/dev/null
store_port="$PGC_PORT"
on_src() { psql -X -At -h 127.0.0.1 -p "$src_port" -U postgres "$@"; }
on_store() { psql -X -At -h 127.0.0.1 -p "$store_port" -U postgres "$@"; }
pgbench -i -q -s 1 -h 127.0.0.1 -p "$src_port" -U postgres postgres >"$dir/pgbench-init.log" 2>&1
on_store -c "CREATE DATABASE pgtrail" >/dev/null
cat >"$dir/pgtrail.toml" <<CONF
[source]
url = "postgres://postgres@127.0.0.1:$src_port/postgres"
slot = "pgtrail"
[store]
url = "postgres://postgres@127.0.0.1:$store_port/pgtrail"
[capture]
tables = ["public.pgbench_*"]
[web]
listen = "127.0.0.1:0"
[metrics]
listen = ""
CONF
"$binary" --config "$dir/pgtrail.toml" setup >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "setup failed"; }
"$binary" --config "$dir/pgtrail.toml" run >"$dir/run.log" 2>&1 &
daemon_pid=$!
sleep 2
pgbench -n -R 200 -T 85 -h 127.0.0.1 -p "$src_port" -U postgres postgres >"$dir/pgbench.log" 2>&1 &
pgbench_pid=$!
for len in 15 20; do
    sleep 10
    pgc_stop "$dir/store" >/dev/null 2>&1
    sleep "$len"
    pgc_start "$dir/store" >/dev/null 2>&1
    t0=$EPOCHREALTIME
    target=$(on_src -c "SELECT pg_current_wal_lsn()")
    until [[ $(on_store -d pgtrail -c "SELECT lsn >= '$target'::pg_lsn FROM pgtrail.checkpoints" 2>/dev/null) == t ]]; do
        sleep 0.1
    done
    echo "store outage of $len s: caught up $(secs "$t0" "$EPOCHREALTIME") s after the store accepted connections again"
done
wait "$pgbench_pid" || true
pgbench_pid=""
sleep 3
rows=$(on_src -c "SELECT count(*) FROM pgbench_history")
entries=$(on_store -d pgtrail -c "SELECT count(*) FROM pgtrail.entries WHERE table_name = 'pgbench_history'")
echo "pgbench_history: $rows rows in the source, $entries entries in the store"
[[ "$rows" == "$entries" ]] || die "the store does not match the source"
