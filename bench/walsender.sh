#!/usr/bin/env bash
# What the source's walsender spends per row change for each set of wal2json options,
# and what REPLICA IDENTITY FULL costs in WAL and in the walsender, with pg_recvlogical
# as the client (so that nothing of pgtrail's own work is measured).
#
#   bash bench/walsender.sh [options]
#
#   --transactions N  backlog size, tpcb-like transactions (default 50000: 200,000 row changes)
#   --rounds N        drains of each option set per identity, alternating (default 3)
#   --rate TPS        steady part: pgbench's fixed rate (default 400; 0 skips the steady part)
#   --seconds S       steady part: seconds per run (default 20)
#   --sets LIST       option sets, comma-separated (default names,oids,oids-nopk; also v1):
#                       names      what pgtrail asked for before: include-xids, include-timestamp,
#                                  include-lsn, include-pk, add-tables, add-msg-prefixes
#                                  (and wal2json's default include-types=1: type names)
#                       oids       the same with include-types=0, include-type-oids=1
#                       oids-nopk  oids without include-pk
#                       v1         oids in format-version 1: one message per transaction
#   --no-pin          do not pin the cluster to CPU 0 and the clients to CPU 1
#   --dir DIR         work directory (default target/bench/walsender; wiped first)
#   --keep            leave the cluster running at the end
#
# Method. One private cluster (fsync off, autovacuum off, no checkpoint during the runs),
# `pgbench -i -s 10`, pinned to CPU 0 (every backend and walsender inherits the affinity of
# the postmaster); pgbench and pg_recvlogical run on CPU 1. The workload is pgbench's
# tpcb-like transaction plus one transactional pg_logical_emit_message(true, 'pgtrail', …)
# of about 250 bytes, like pgtrail's context message: 4 row changes and a message each.
#  1. Backlog, for identity DEFAULT and then FULL on the four pgbench tables, after a
#     warm-up of N transactions and a checkpoint each: a slot is created, N transactions run with nothing reading it, then a marker row. Each drain
#     copies that slot (pg_copy_logical_replication_slot) and runs
#     `pg_recvlogical --start --endpos` to the backlog's end, output counted by wc -c. WAL per
#     transaction is the backlog's, and `pg_waldump --stats`'s records and full-page images.
#     The walsender's CPU time is the postmaster's reaped children's time (cutime + cstime
#     in /proc/<postmaster>/stat) across the drain: the walsender is the only child that
#     exits meanwhile (autovacuum is off, nothing else connects). Sets run in a rotated
#     order each round; min and median over the rounds are printed.
#  2. Steady rate, identity FULL: pg_recvlogical connected to a slot moved to the end of
#     the WAL, `pgbench -R RATE -T S`; the walsender's utime + stime from /proc/<pid>/stat
#     over the run (plus one second to drain), per transaction; for each set, with
#     pg_recvlogical's status interval 1 s and 10 s.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=walsender
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

transactions=50000
rounds=3
rate=400
seconds=20
sets="names,oids,oids-nopk"
pin=1
dir="$repo/target/bench/walsender"
keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --transactions) transactions="${2:?--transactions needs a number}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --rate) rate="${2:?--rate needs a number}"; shift 2 ;;
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --sets) sets="${2:?--sets needs a list}"; shift 2 ;;
        --no-pin) pin=0; shift ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        *) die "unknown option $1 (see the comment at the top of this script)" ;;
    esac
done
for n in "$transactions" "$rounds" "$seconds"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--transactions, --rounds and --seconds take positive integers"
done
[[ "$rate" =~ ^[0-9]+$ ]] || die "--rate takes a whole number of transactions per second"
IFS=, read -r -a set_list <<<"$sets"

tables="public.pgbench_accounts,public.pgbench_tellers,public.pgbench_branches,public.pgbench_history"
prefixes="pgtrail,pgtrail_ddl,pgtrail_partitions,pgtrail_truncate"
# set_options NAME: pg_recvlogical -o arguments of an option set.
set_options() {
    local base=(-o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1
        -o "add-tables=$tables" -o "add-msg-prefixes=$prefixes")
    case "$1" in
        names) echo "${base[@]}" -o include-pk=1 ;;
        oids) echo "${base[@]}" -o include-pk=1 -o include-types=0 -o include-type-oids=1 ;;
        oids-nopk) echo "${base[@]}" -o include-types=0 -o include-type-oids=1 ;;
        v1) echo "${base[@]/format-version=2/format-version=1}" -o include-pk=1 -o include-types=0 -o include-type-oids=1 ;;
        *) die "unknown option set $1 (names, oids, oids-nopk, v1)" ;;
    esac
}
for s in "${set_list[@]}"; do set_options "$s" >/dev/null; done

client_prefix=""
[[ $pin -eq 1 ]] && client_prefix="taskset -c 1"
on_clients() { $client_prefix "$@"; }
q() { psql_db bench -X -At -c "$1"; }
recv_pid=""
stop_all() { stop_pid "$recv_pid" INT; }
bench_trap_exit

pgc_destroy "$dir"
pgc_start "$dir" "fsync=off" "autovacuum=off" "max_wal_size=16GB" "checkpoint_timeout=1h" \
    "shared_buffers=512MB" "max_replication_slots=32" "max_wal_senders=32"
port="$PGC_PORT"
postmaster=$(head -n1 "$(pgc_datadir "$dir")/postmaster.pid")
[[ $pin -eq 1 ]] && taskset -a -p -c 0 "$postmaster" >/dev/null
psql_db postgres -c "CREATE DATABASE bench" >/dev/null
say "pgbench -i -s 10"
on_clients pgbench -i -q -s 10 -h 127.0.0.1 -p "$port" -U postgres bench >"$dir/pgbench-init.log" 2>&1 \
    || { cat "$dir/pgbench-init.log" >&2; die "pgbench -i failed"; }
q "CREATE TABLE bench_marker (id serial PRIMARY KEY)" >/dev/null
q "CHECKPOINT" >/dev/null

# tpcb-like plus a context message of about 250 bytes, in the transaction.
context='{"application":"pgbench","user":"app","role":"app","client":"10.1.2.3","session":"6571a2b3.1f2e","request":"0b7c1e2a-4d5f-4a6b-9c8d-7e6f5a4b3c2d","tenant":"acme","route":"POST /accounts/transfer","version":"2026.12.1","note":"x"}'
cat >"$dir/tpcb-context.sql" <<SQL
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
SELECT pg_logical_emit_message(true, 'pgtrail', '$context');
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
SQL
pgbench_run() {
    on_clients pgbench -n -M prepared -f "$dir/tpcb-context.sql" -s 10 -c 4 -j 2 -h 127.0.0.1 -p "$port" -U postgres "$@" bench
}
reaped_ticks() { awk '{ print $16 + $17 }' "/proc/$postmaster/stat"; }
# Waits until no walsender runs and the postmaster has reaped every child that exited (a
# zombie no longer shows its command line, and its time is not in cutime before it is reaped).
no_walsender() {
    local i
    for (( i = 0; i < 600; i++ )); do
        if ! pgrep -P "$postmaster" -f 'walsender' >/dev/null \
            && ! pgrep -P "$postmaster" -r Z >/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "a walsender is still running"
}
per() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }'; }
# stats VALUES...: "min / median".
stats() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s / %s", v[1], m }'; }

results="$dir/results.tsv"
printf 'part\tidentity\tset\tround\tus_per_change\tbytes_per_change\textra\n' >"$results"

# Part 1: backlogs. A warm-up of the same size first, so that both backlogs find the pages
# as an earlier run left them (free space for HOT updates), not as pgbench -i did.
say "warm-up: $transactions transactions"
pgbench_run -t $(( transactions / 4 )) >"$dir/pgbench-warmup.log" 2>&1 \
    || { cat "$dir/pgbench-warmup.log" >&2; die "pgbench failed"; }
for identity in DEFAULT FULL; do
    for t in accounts tellers branches history; do q "ALTER TABLE pgbench_$t REPLICA IDENTITY $identity" >/dev/null; done
    # Both backlogs start from a checkpoint, so they pay alike for full-page images.
    q "CHECKPOINT" >/dev/null
    q "SELECT pg_create_logical_replication_slot('backlog', 'wal2json')" >/dev/null
    start_lsn=$(q "SELECT pg_current_wal_lsn()")
    say "identity $identity: backlog of $transactions transactions"
    pgbench_run -t $(( transactions / 4 )) >"$dir/pgbench-$identity.log" 2>&1 \
        || { cat "$dir/pgbench-$identity.log" >&2; die "pgbench failed"; }
    end_lsn=$(q "SELECT pg_current_wal_lsn()")
    q "INSERT INTO bench_marker DEFAULT VALUES" >/dev/null
    txns=$(( transactions / 4 * 4 ))
    changes=$(( txns * 4 ))
    wal=$(( $(lsn_num "$end_lsn") - $(lsn_num "$start_lsn") ))
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$dir/pgbench-$identity.log")
    # Records apart from full-page images, which depend on the time since the checkpoint.
    read -r records fpi < <("$PGC_BIN/pg_waldump" --stats -p "$(pgc_datadir "$dir")/pg_wal" -s "$start_lsn" -e "$end_lsn" 2>/dev/null \
        | awk '$1 == "Total" { print $3, $5 }')
    printf 'wal\t%s\t-\t-\t-\t-\t%s B/txn (records %s, full-page images %s), backlog TPS %s\n' "$identity" \
        "$(( wal / txns ))" "$(( records / txns ))" "$(( fpi / txns ))" "$tps" >>"$results"
    for (( r = 1; r <= rounds; r++ )); do
        n=${#set_list[@]}
        for (( i = 0; i < n; i++ )); do
            s=${set_list[$(( (i + r - 1) % n ))]}
            q "SELECT pg_copy_logical_replication_slot('backlog', 'drain')" >/dev/null
            no_walsender
            read -r -a opts <<<"$(set_options "$s")"
            c0=$(reaped_ticks)
            bytes=$(on_clients pg_recvlogical -h 127.0.0.1 -p "$port" -U postgres -d bench -S drain --start \
                -E "$end_lsn" "${opts[@]}" -f - | wc -c)
            no_walsender
            c1=$(reaped_ticks)
            q "SELECT pg_drop_replication_slot('drain')" >/dev/null
            us=$(per $(( c1 - c0 )) "$changes")
            printf 'backlog\t%s\t%s\t%s\t%s\t%s\t\n' "$identity" "$s" "$r" "$us" "$(( bytes / changes ))" >>"$results"
            say "  $identity $s round $r: $us µs per row change, $(( bytes / changes )) B per change"
        done
    done
    q "SELECT pg_drop_replication_slot('backlog')" >/dev/null
done

# Part 2: steady rate, identity FULL (the last backlog's).
if [[ $rate -gt 0 ]]; then
    q "SELECT pg_create_logical_replication_slot('steady', 'wal2json')" >/dev/null
    for (( r = 1; r <= rounds; r++ )); do
        for interval in 1 10; do
            n=${#set_list[@]}
            for (( i = 0; i < n; i++ )); do
                s=${set_list[$(( (i + r - 1) % n ))]}
                no_walsender
                q "SELECT pg_replication_slot_advance('steady', pg_current_wal_lsn())" >/dev/null
                read -r -a opts <<<"$(set_options "$s")"
                # exec, so that $! is pg_recvlogical itself and SIGINT reaches it.
                (exec $client_prefix pg_recvlogical -h 127.0.0.1 -p "$port" -U postgres -d bench -S steady --start \
                    -s "$interval" "${opts[@]}" -f /dev/null 2>>"$dir/pg_recvlogical.log") &
                recv_pid=$!
                ws=""
                for (( k = 0; k < 100; k++ )); do
                    sleep 0.1
                    ws=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'steady' AND active_pid IS NOT NULL")
                    [[ -z "$ws" ]] || break
                done
                [[ -n "$ws" ]] || die "pg_recvlogical did not connect"
                w0=$(cpu_ticks "$ws")
                pgbench_run -R "$rate" -T "$seconds" >"$dir/pgbench-steady.log" 2>&1 \
                    || { cat "$dir/pgbench-steady.log" >&2; die "pgbench failed"; }
                sleep 1
                w1=$(cpu_ticks "$ws")
                stop_pid "$recv_pid" INT
                recv_pid=""
                txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/pgbench-steady.log")
                us=$(per $(( w1 - w0 )) "$txns")
                printf 'steady\tFULL\t%s\t%s\t%s\t-\tstatus every %ss, %s txns, µs per txn\n' "$s" "$r" "$us" "$interval" "$txns" >>"$results"
                say "  steady $s status ${interval}s round $r: $us µs per transaction"
            done
        done
    done
fi

echo "# walsender CPU per row change draining a backlog of $transactions tpcb-like transactions (min / median of $rounds)"
for identity in DEFAULT FULL; do
    echo "identity $identity: $(awk -F'\t' -v i="$identity" '$1 == "wal" && $2 == i { print $7 }' "$results")"
    for s in "${set_list[@]}"; do
        mapfile -t v < <(awk -F'\t' -v i="$identity" -v s="$s" '$1 == "backlog" && $2 == i && $3 == s { print $5 }' "$results")
        b=$(awk -F'\t' -v i="$identity" -v s="$s" '$1 == "backlog" && $2 == i && $3 == s { print $6; exit }' "$results")
        echo "  $s: $(stats "${v[@]}") µs per change, $b B of JSON per change"
    done
done
if [[ $rate -gt 0 ]]; then
    echo "# walsender CPU per transaction at $rate TPS, identity FULL (min / median of $rounds)"
    for interval in 1 10; do
        for s in "${set_list[@]}"; do
            mapfile -t v < <(awk -F'\t' -v s="$s" -v st="status every ${interval}s," '$1 == "steady" && $3 == s && index($7, st) == 1 { print $5 }' "$results")
            echo "  $s, status every ${interval}s: $(stats "${v[@]}") µs per transaction"
        done
    done
fi
