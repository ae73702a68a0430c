#!/usr/bin/env bash
# The verify benchmark: how many entries per second `pgtrail verify` checks.
#
#   bash bench/verify.sh [--entries N] [--no-build] [--dir DIR] [--keep]
#
#   --entries N   entries in the store (default 1000000)
#   --no-build    use the existing target/release/pgtrail and examples/web_fill
#   --dir DIR     work directory (default target/bench/verify; wiped first)
#   --keep        leave the cluster running and DIR in place at the end
#
# What it does: a private cluster (fsync off), `pgtrail setup`, the store filled
# with N synthetic entries by examples/web_fill (row images of 250 to 700 bytes,
# hashed into the capture chain by pgtrail's own code, as the daemon would),
# the capture chain's head set to the last of them, then `pgtrail verify --json`
# timed; it must report the store intact with N entries. Prints entries/s.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=verify
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

entries=1000000
build=1
keep=0
dir="$repo/target/bench/verify"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --entries) entries="${2:?--entries needs a number}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$entries" =~ ^[1-9][0-9]*$ ]] || die "--entries must be a positive integer"

pgtrail="$release_dir/pgtrail"
fill="$release_dir/examples/web_fill"
build_pgtrail "$build" web_fill
pgc_find_bin
pgc_destroy "$dir" || true
mkdir -p "$dir"
bench_trap_exit
pgc_start "$dir" "fsync=off" "max_wal_size=16GB" "checkpoint_timeout=1h" "shared_buffers=1GB"
port="$PGC_PORT"
cfg="$dir/pgtrail.toml"
cat >"$cfg" <<CONFIG
[source]
url  = "postgres://postgres@127.0.0.1:$port/app"
slot = "bench_verify"
[store]
url  = "postgres://postgres@127.0.0.1:$port/pgtrail"
[capture]
tables = ["public.*"]
CONFIG
psql_db postgres -c "CREATE DATABASE app" >/dev/null
psql_db app -c "CREATE TABLE public.placeholder (id int PRIMARY KEY)" >/dev/null
"$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }

say "filling the store with $entries entries (examples/web_fill, COPY)"
end=$(date +%s)
# The partitions of the fill's year of commit times (examples/web_fill's default --days).
psql_db pgtrail -c "$(fill_partitions 365 "$end")" >/dev/null
fill_copy "$fill" "$entries" 365 "$end"
# The fill wrote the chain from an empty store; its head is the last entry's hash.
psql_db pgtrail -c "UPDATE pgtrail.chain_heads SET entries = $entries,
    hash = (SELECT hash FROM pgtrail.entry_rows WHERE source = 1 ORDER BY id DESC LIMIT 1) WHERE source = 1" >/dev/null
psql_db pgtrail -c "VACUUM (ANALYZE) pgtrail.entry_rows, pgtrail.transactions" >/dev/null

say "pgtrail verify"
t0=$(now)
report=$("$pgtrail" --config "$cfg" verify --json) || die "verify did not find the store intact: $report"
t1=$(now)
# The report opens with {"intact":true,"entries":N, (serde keeps the field order).
read_n=$(grep -o '^{"intact":true,"entries":[0-9]*' <<<"$report" | grep -o '[0-9]*$' || true)
[[ "$read_n" == "$entries" ]] || die "verify read ${read_n:-no} entries, not $entries: $report"
s=$(secs "$t0" "$t1")
rate=$(awk -v n="$entries" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
echo "verify: $entries entries intact in $s s: $rate entries/s"
