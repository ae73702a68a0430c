#!/usr/bin/env bash
# What auditing costs inside the application's own transactions, counted in CPU
# instructions rather than timed: the backend's work per pgbench-like transaction under
# valgrind's callgrind, in a single-user backend (`postgres --single`), so the figures do
# not move with other work on the machine (2 shared cores move timed figures by a quarter).
#
#   (a) no audit: wal_level=logical, nothing else;
#   (d) pgtrail: `pgtrail setup` (REPLICA IDENTITY FULL, the context trigger, the slot);
#   (c) the row trigger of bench/sql/trigger_audit.sql (bench/app_cost.sh's and
#       bench/source_cost.sh's (c)).
#
#   bash bench/trigger_cost.sh [options]
#
#   --transactions N   transactions counted per configuration (default 200)
#   --statements K     K more single-row UPDATEs of pgbench_tellers in every transaction
#                      (default 0): the difference between runs with and without them,
#                      divided by K, is what one more statement on an already written
#                      table costs
#   --no-build         use the existing target/release/pgtrail (or $CARGO_TARGET_DIR's)
#   --binary PATH      use this pgtrail binary (implies --no-build)
#   --dir DIR          work directory (default target/bench/trigger_cost; wiped first)
#   --keep             leave DIR in place at the end
#
# Method: per configuration, a private cluster (scripts/pgcluster.sh: wal_level=logical,
# fsync off, autovacuum off), `pgbench -i -s 1`, the configuration set up, 50 warm-up
# transactions through psql (every plan and cache that lasts beyond a transaction is made),
# the cluster stopped. Its data directory then runs twice under callgrind in single-user
# mode, reading 0 and N transactions from stdin; (instructions with N − with 0) / N is the
# figure. The transactions are pgbench's tpcb-like with fixed ids, the same for every
# configuration, sent as simple queries (single-user mode has no prepared statements, so
# parsing and planning are in every figure alike; the overheads over (a) are what to read).
# What runs outside the backend (the walsender, the daemon) is not in these figures:
# bench/source_cost.sh measures those, timed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=trigger_cost
# shellcheck source-path=SCRIPTDIR source=bench/lib.sh
source "$repo/bench/lib.sh"

usage() { sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
txns=200 statements=0 build=1 binary="" dir="$repo/target/bench/trigger_cost" keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --transactions) txns="$2"; shift 2 ;;
        --statements) statements="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --binary) binary="$2"; build=0; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        *) echo "$bench: unknown option $1" >&2; usage ;;
    esac
done
command -v valgrind >/dev/null || die "valgrind is needed: apt-get install -y valgrind"

if [[ -z "$binary" ]]; then
    if [[ $build -eq 1 ]]; then
        say "cargo build --release"
        (cd "$repo" && cargo build --release --quiet)
    fi
    binary="${CARGO_TARGET_DIR:-$repo/target}/release/pgtrail"
fi
[[ -x "$binary" ]] || die "$binary not found (build it, or drop --no-build)"
rm -rf "$dir"
mkdir -p "$dir/logs"
pgtrail="$dir/pgtrail"
cp "$binary" "$pgtrail"
cfg="$dir/pgtrail.toml" slot=bench_trigger_cost
stop_all() {
    local c
    for c in a d c; do
        if [[ $keep -eq 1 ]]; then pgc_stop "$dir/$c" >/dev/null 2>&1 || true; else pgc_destroy "$dir/$c" >/dev/null 2>&1 || true; fi
    done
    [[ -z "${cgdir:-}" ]] || rm -rf "$cgdir"
}
bench_trap_exit

# As root the server programs run as the postgres OS user, as pgcluster.sh runs them.
as_server() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The transactions, each one query line followed by the blank line that ends it for -j.
transactions() {
    local i a t d extra="" k
    for (( k = 1; k <= statements; k++ )); do
        extra+=" UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = $(( k % 10 + 1 ));"
    done
    for (( i = 1; i <= $1; i++ )); do
        a=$(( (i * 7919) % 100000 + 1 )) t=$(( i % 10 + 1 )) d=$(( (i * 31) % 5000 - 2500 ))
        printf '%s\n\n' "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + $d WHERE aid = $a; SELECT abalance FROM pgbench_accounts WHERE aid = $a; UPDATE pgbench_tellers SET tbalance = tbalance + $d WHERE tid = $t; UPDATE pgbench_branches SET bbalance = bbalance + $d WHERE bid = 1; INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($t, 1, $a, $d, CURRENT_TIMESTAMP);$extra END;"
    done
}

# instructions CONFIG N: callgrind's instruction count of a single-user backend running N
# transactions on CONFIG's stopped cluster.
instructions() {
    local out="$cgdir/$1-$2.out"
    transactions "$2" | as_server valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PGC_BIN/postgres" --single -j -D "$dir/$1/data" postgres >"$dir/logs/$1-$2.log" 2>&1 \
        || { tail -n 20 "$dir/logs/$1-$2.log" >&2; die "single-user run of ($1) failed"; }
    if grep -q ERROR "$dir/logs/$1-$2.log"; then
        grep -m 3 ERROR "$dir/logs/$1-$2.log" >&2; die "($1): a transaction failed"
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

# callgrind's output, where the postgres OS user may write when we are root.
cgdir=$(mktemp -d /tmp/pgtrail-trigger-cost.XXXXXX)
[[ $(id -u) -ne 0 ]] || chown postgres "$cgdir"
declare -A per_txn
for c in a d c; do
    pgc_start "$dir/$c" "fsync=off" "autovacuum=off" >/dev/null
    port="$PGC_PORT"
    psql_c() { pgc_psql "$dir/$c" -X -q -v ON_ERROR_STOP=1 "$@"; }
    pgbench -i -q -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >"$dir/logs/$c-init.log" 2>&1 \
        || { cat "$dir/logs/$c-init.log" >&2; die "pgbench -i failed"; }
    case "$c" in
        d) psql_c -c "CREATE DATABASE pgtrail"
           bench_pgtrail_setup "$(pgc_url "$dir/$c" postgres)" "$(pgc_url "$dir/$c" pgtrail)" \
               pgc_psql "$dir/$c" -X -At -d postgres ;;
        c) psql_c -d postgres -f "$repo/bench/sql/trigger_audit.sql" >/dev/null ;;
    esac
    transactions 50 | grep -v '^$' | psql_c -d postgres >/dev/null
    pgc_stop "$dir/$c" >/dev/null
    base=$(instructions "$c" 0)
    total=$(instructions "$c" "$txns")
    per_txn[$c]=$(( (total - base) / txns ))
    say "($c): ${per_txn[$c]} instructions per transaction"
done

label() { case "$1" in a) echo "(a) no audit" ;; d) echo "(d) pgtrail set up" ;; c) echo "(c) row trigger" ;; esac; }
echo
echo "== instructions per transaction in the application's backend ($(date -u +%FT%TZ)) =="
echo "pgtrail: $("$pgtrail" --version 2>/dev/null || echo unknown); PostgreSQL $("$PGC_BIN/postgres" --version | awk '{print $3}');" \
     "$txns tpcb-like transactions, pgbench scale 1$( (( statements == 0 )) || echo ", $statements more UPDATE(s) each")"
echo
echo "| | instructions per txn | over (a) |"
echo "| --- | ---: | ---: |"
for c in a d c; do
    over=""; [[ $c == a ]] || over="+$(( per_txn[$c] - per_txn[a] ))"
    echo "| $(label "$c") | ${per_txn[$c]} | ${over:-—} |"
done
echo
awk -v d=$(( per_txn[d] - per_txn[a] )) -v c=$(( per_txn[c] - per_txn[a] )) \
    'BEGIN { printf "pgtrail'"'"'s overhead / the row trigger'"'"'s, inside the transaction: %.2f\n", d / c }'
