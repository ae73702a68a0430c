#!/usr/bin/env bash
# CPU time per application transaction of each process pgtrail adds: the daemon, its
# walsender and its store backend, read from /proc from when the daemon has caught up, over
# pgbench at full speed on (b), until the daemon has stored all that pgbench wrote.
# Runs on a cluster kept by `bash bench/app_cost.sh --keep`; CPU time per transaction is far
# less disturbed by other work on the machine than TPS.
#
#   bash bench/cpu_per_txn.sh [--dir DIR] [--bin PGTRAIL] [--seconds S]
#
#   --dir DIR     the kept app_cost directory (default target/bench/app_cost)
#   --bin FILE    the pgtrail binary to measure (default: the copy in DIR), so two builds can
#                 be compared on the same cluster, alternating
#   --seconds S   pgbench duration (default 10)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=cpu_per_txn
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

dir="$repo/target/bench/app_cost"
bin=""
seconds=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --bin) bin="${2:?--bin needs a file}"; shift 2 ;;
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        *) die "unknown option $1 (see the comment at the top of this script)" ;;
    esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"
cfg="$dir/pgtrail.toml"
[[ -f "$cfg" ]] || die "$cfg not found: run bash bench/app_cost.sh --keep first"
bin="${bin:-$dir/pgtrail}"
[[ -x "$bin" ]] || die "$bin is not an executable"
port=$(sed -n 's|^url *= *"postgres://postgres@127.0.0.1:\([0-9]*\)/app_b".*|\1|p' "$cfg")
[[ -n "$port" ]] || die "no source port in $cfg"
q() { psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d "$1" -c "$2"; }

daemon_pid=""
stop_all() { stop_pid "$daemon_pid"; }
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

PGTRAIL_LOG=warn "$bin" --config "$cfg" run >"$dir/cpu_per_txn-daemon.log" 2>&1 &
daemon_pid=$!
# Waits until the daemon has stored everything written so far.
caught_up() {
    local mark i
    mark=$(q app_b "SELECT pg_current_wal_lsn()")
    q app_b "INSERT INTO bench_marker DEFAULT VALUES" >/dev/null
    for (( i = 0; ; i++ )); do
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$dir/cpu_per_txn-daemon.log" >&2; die "pgtrail run exited"; }
        [[ $(q pgtrail "SELECT coalesce(bool_or(lsn >= '$mark'::pg_lsn), false) FROM pgtrail.checkpoints") == t ]] && return 0
        (( i < 1200 )) || die "pgtrail run did not catch up within 120 s"
        sleep 0.1
    done
}
# A backlog left by earlier runs must not be counted against this one.
caught_up
walsender=$(q postgres "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'app_cost' AND active_pid IS NOT NULL")
[[ -n "$walsender" ]] || die "no walsender streams for slot app_cost"

store=$(q postgres "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = 'pgtrail' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
commits() { q pgtrail "SELECT xact_commit FROM pg_stat_database WHERE datname = 'pgtrail'"; }

c0=$(commits); d0=$(cpu_ticks "$daemon_pid"); w0=$(cpu_ticks "$walsender"); s0=$(cpu_ticks $store)
pgbench -n -M prepared -T "$seconds" -c 4 -j 2 -h 127.0.0.1 -p "$port" -U postgres app_b >"$dir/cpu_per_txn-pgbench.log" 2>&1 \
    || { cat "$dir/cpu_per_txn-pgbench.log" >&2; die "pgbench failed"; }
# Storing what pgbench wrote is part of its cost, also after pgbench ended.
caught_up
d1=$(cpu_ticks "$daemon_pid"); w1=$(cpu_ticks "$walsender"); s1=$(cpu_ticks $store); c1=$(commits)
txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/cpu_per_txn-pgbench.log")
hz=$(getconf CLK_TCK)
per_txn() { awk -v t="$1" -v n="$txns" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }'; }
echo "binary: $bin"
echo "pgbench: $txns transactions in ${seconds}s; store commits meanwhile: $((c1 - c0))"
echo "CPU per transaction: daemon $(per_txn $((d1 - d0))) µs, walsender $(per_txn $((w1 - w0))) µs, store backend $(per_txn $((s1 - s0))) µs"
