#!/usr/bin/env bash
# The capture benchmark: how fast pgtrail drains a replication backlog into its
# store, next to how fast wal2json itself can be read (pg_recvlogical to
# /dev/null), measured in the same run on the same backlog.
#
#   bash bench/capture.sh [options]
#
#   --transactions N   pgbench transactions in the backlog (default 250000: tpcb-like
#                      makes 4 row changes per transaction, so 1,000,000 row changes)
#   --clients N        pgbench clients (default 4; the scale factor is the same N)
#   --full             REPLICA IDENTITY FULL on the pgbench tables (default: DEFAULT)
#                      (either way `pgtrail setup` installs its context trigger, as in
#                      a real deployment: one context message per transaction)
#   --both             run twice, DEFAULT then FULL, and print both ratios last
#   --bulk             the backlog is the same number of row changes made as bulk
#                      transactions of 10,000 UPDATEs of pgbench_accounts each (rounded
#                      up to whole transactions) instead of pgbench's 4 per transaction
#   --fsync            run the server with fsync=on (default: fsync=off, for both
#                      measurements alike)
#   --poll MODE        how (b) sees progress every 100 ms: `checkpoint` (default)
#                      reads pgtrail.checkpoints over one psql session kept open
#                      for the drain (nothing forked per poll); `status` runs
#                      `pgtrail status --json` (its entries_estimate is two index
#                      probes, not a count)
#   --ref-only         measure pg_recvlogical only (no pgtrail build or run)
#   --no-build         use the existing target/release/pgtrail
#   --dir DIR          work directory (default target/bench/capture; wiped first)
#   --keep             leave the cluster running and DIR in place at the end
#
# What it does, in order:
#  1. a private cluster (scripts/pgcluster.sh), `pgbench -i` into database `bench`;
#  2. `pgtrail setup` (the store database `pgtrail` on the same server, pgtrail's
#     default, and the slot bench_pgtrail) and a second wal2json slot, bench_ref,
#     both before any benchmark transaction, so each has the same backlog to read;
#  3. the backlog: `pgbench -n -M prepared -t` with the daemon NOT running; the end
#     of the backlog is pg_current_wal_lsn() right after pgbench, followed by one
#     marker transaction on a table outside the capture so that a reader has
#     something past the end to stop on;
#  4. (a) pg_recvlogical drains slot bench_ref to that end LSN (--endpos), format
#     version 2 with xids, timestamps, LSNs and primary keys, add-tables naming the
#     four pgbench tables, into /dev/null;
#  5. (b) `pgtrail run` drains slot bench_pgtrail into the store; the clock stops at
#     the first poll (every 100 ms; see --poll) that shows last_stored_lsn >= the
#     end LSN, or all expected entries stored; then SIGTERM;
#  6. checks the entry count against pgbench's (4 row changes per transaction),
#     prints both rates, the ratio b/a and pgtrail's peak RSS (VmHWM), and removes
#     everything it made.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

transactions=250000
clients=4
identity=DEFAULT
fsync=off
ref_only=0
poll=checkpoint
build=1
keep=0
both=0
bulk=0
# Row changes per transaction of --bulk.
bulk_rows=10000
dir="$repo/target/bench/capture"

bench=capture
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --transactions) transactions="${2:?--transactions needs a number}"; shift 2 ;;
        --clients) clients="${2:?--clients needs a number}"; shift 2 ;;
        --full) identity=FULL; shift ;;
        --both) both=1; shift ;;
        --bulk) bulk=1; shift ;;
        --fsync) fsync=on; shift ;;
        --ref-only) ref_only=1; shift ;;
        --poll) poll="${2:?--poll needs status or checkpoint}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        *) echo "capture: unknown option $1" >&2; usage ;;
    esac
done
[[ "$transactions" =~ ^[1-9][0-9]*$ ]] || die "--transactions must be a positive integer"
[[ "$clients" =~ ^[1-9][0-9]*$ ]] || die "--clients must be a positive integer"
[[ "$poll" == status || "$poll" == checkpoint ]] || die "--poll must be status or checkpoint"

if [[ $both -eq 1 ]]; then
    # The same run twice in one invocation, one identity each, as the bar asks; the
    # second run reuses the directory, and only a run of pgtrail has a ratio to print.
    [[ $keep -eq 0 ]] || die "--both cannot --keep (both runs use one directory): keep one run at a time"
    [[ $ref_only -eq 0 ]] || die "--both compares pgtrail's ratios: drop --ref-only"
    args=(--transactions "$transactions" --clients "$clients" --poll "$poll" --dir "$dir")
    [[ $fsync == on ]] && args+=(--fsync)
    [[ $bulk -eq 1 ]] && args+=(--bulk)
    [[ $build -eq 0 ]] && args+=(--no-build)
    out_default=$(bash "${BASH_SOURCE[0]}" "${args[@]}") || die "the DEFAULT run failed"
    echo "$out_default"
    out_full=$(bash "${BASH_SOURCE[0]}" "${args[@]}" --no-build --full) || die "the FULL run failed"
    echo "$out_full"
    echo
    echo "ratio b/a, REPLICA IDENTITY DEFAULT: $(sed -n 's/^ratio b\/a: *//p' <<<"$out_default")"
    echo "ratio b/a, REPLICA IDENTITY FULL:    $(sed -n 's/^ratio b\/a: *//p' <<<"$out_full")"
    exit 0
fi

# pgbench -t counts per client: round the total up to a multiple of the clients.
per_client=$(( (transactions + clients - 1) / clients ))
transactions=$(( per_client * clients ))
jobs=$(( clients < $(nproc) ? clients : $(nproc) ))
expected_rows=$(( transactions * 4 ))
if [[ $bulk -eq 1 ]]; then
    bulk_transactions=$(( (expected_rows + bulk_rows - 1) / bulk_rows ))
    expected_rows=$(( bulk_transactions * bulk_rows ))
fi

bash "$repo/scripts/install-deps.sh"
pgc_find_bin
pgtrail="$release_dir/pgtrail"
if [[ $ref_only -eq 0 ]]; then build_pgtrail "$build"; fi

daemon_pid=""
recv_pid=""
stop_all() {
    stop_pid "$recv_pid"
    stop_pid "$daemon_pid"
}
bench_trap_exit

# 1. Cluster, pgbench tables, store database.
bench_pgbench_cluster "$fsync"

# 2. Slots, both before the backlog. The tables are named one by one: wal2json's
# add-tables takes `*` only as a whole schema or table name (`public.*`), so
# `public.pgbench_*` would match nothing and pg_recvlogical would read only B/C.
tables=(public.pgbench_accounts public.pgbench_tellers public.pgbench_branches public.pgbench_history)
tables_csv=$(IFS=,; echo "${tables[*]}")
tables_toml=$(printf '"%s", ' "${tables[@]}")
tables_toml="${tables_toml%, }"
cfg="$dir/pgtrail.toml"
cat >"$cfg" <<EOF
# Written by bench/capture.sh
[source]
url  = "postgres://postgres@127.0.0.1:$port/bench"
slot = "bench_pgtrail"
[store]
url  = "postgres://postgres@127.0.0.1:$port/pgtrail"
[capture]
tables  = [$tables_toml]
exclude = []
# setup leaves the identity chosen above (--full) as it is
before_images = false
EOF
if [[ $ref_only -eq 0 ]]; then
    say "pgtrail setup"
    "$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 \
        || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }
    if [[ $(psql_db bench -At -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_pgtrail'") != 1 ]]; then
        say "setup made no slot: creating bench_pgtrail"
        psql_db bench -At -c "SELECT pg_create_logical_replication_slot('bench_pgtrail', 'wal2json')" >/dev/null
    fi
fi
psql_db bench -At -c "SELECT pg_create_logical_replication_slot('bench_ref', 'wal2json')" >/dev/null
start_lsn=$(psql_db bench -At -c "SELECT pg_current_wal_lsn()")

# 3. The backlog, with nothing reading it.
if [[ $bulk -eq 1 ]]; then bench_bulk_backlog; else bench_backlog; fi
wal_bytes=$(( $(lsn_num "$end_lsn") - $(lsn_num "$start_lsn") ))
say "backlog done in ${backlog_s}s: $expected_rows row changes, $((wal_bytes / 1048576)) MiB of WAL, end LSN $end_lsn"

# 4. (a) pg_recvlogical to /dev/null.
say "(a) pg_recvlogical draining bench_ref to $end_lsn"
t0=$(now)
pg_recvlogical -d "host=127.0.0.1 port=$port user=postgres dbname=bench" --slot bench_ref --start \
    --endpos "$end_lsn" --no-loop \
    -o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 -o include-pk=1 \
    -o "add-tables=$tables_csv" -f /dev/null 2>"$dir/recvlogical.log" &
recv_pid=$!
wait "$recv_pid" || { cat "$dir/recvlogical.log" >&2; die "pg_recvlogical failed"; }
recv_pid=""
t1=$(now)
ref_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
ref_rate=$(awk -v n="$expected_rows" -v s="$ref_s" 'BEGIN { printf "%.0f", n / s }')
say "(a) ${ref_s}s, $ref_rate row changes/s"

# 5. (b) pgtrail run into the store.
if [[ $ref_only -eq 0 ]]; then
    end_num=$(lsn_num "$end_lsn")
    say "(b) pgtrail run draining bench_pgtrail"
    # The checkpoint poll is one psql session kept open for the whole drain,
    # and the loop below forks nothing else: a psql, a server backend and the
    # helpers around them started ten times a second cost about a fifth of a
    # core, which (a) does not pay.
    # Its stderr goes to a file, not the pipe the answers come back on: each
    # poll reads up to a line of its own (\echo poll-done), after which an error
    # of that poll is in the file (psql writes it before it runs the \echo), and
    # an error of any length cannot leave stale lines for the next poll.
    poll_err="$dir/poll.err"
    if [[ $poll == checkpoint ]]; then
        coproc POLL { psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d pgtrail 2>"$poll_err"; }
        poll_in=${POLL[1]} poll_out=${POLL[0]}
    fi
    # $EPOCHREALTIME has the locale's decimal separator (a comma in many): awk
    # and the arithmetic below read a dot. No subshell: the loop forks nothing.
    t0=${EPOCHREALTIME//[!0-9]/.}
    NO_COLOR=1 PGTRAIL_LOG="${PGTRAIL_LOG:-info}" "$pgtrail" --config "$cfg" run 2>"$dir/pgtrail.log" &
    daemon_pid=$!
    hwm_kb=0
    last_progress="$t0"
    last_seen=""
    done_reason=""
    while :; do
        sleep 0.1
        kill -0 "$daemon_pid" 2>/dev/null \
            || { tail -n 30 "$dir/pgtrail.log" >&2; die "pgtrail run exited before draining the backlog (log above)"; }
        hwm=""
        while read -r key value _; do
            [[ $key == VmHWM: ]] && hwm=$value
        done <"/proc/$daemon_pid/status" 2>/dev/null || true
        [[ $hwm =~ ^[0-9]+$ ]] && (( hwm > hwm_kb )) && hwm_kb=$hwm
        if [[ $poll == status ]]; then
            status=$("$pgtrail" --config "$cfg" status --json 2>/dev/null || true)
            stored=$(json_field last_stored_lsn "$status")
            entries=$(json_field entries_estimate "$status")
        else
            stored="" line=""
            printf '%s\n' "SELECT coalesce((SELECT lsn::text FROM pgtrail.checkpoints WHERE slot = 'bench_pgtrail'), 'none');" \
                '\echo poll-done' >&"$poll_in"
            while :; do
                read -r -t 30 line <&"$poll_out" \
                    || die "the checkpoint poll's psql did not answer (its stderr: $(cat "$poll_err"))"
                [[ $line == poll-done ]] && break
                [[ -z $stored ]] || die "the checkpoint poll's psql answered more than one line: $stored, $line"
                stored=$line
            done
            [[ ! -s $poll_err ]] || die "the checkpoint poll's psql failed: $(cat "$poll_err")"
            status="checkpoint ${stored:-none}"
            entries=""
        fi
        t=${EPOCHREALTIME//[!0-9]/.}
        if [[ "$stored" == */* ]] && (( $(lsn_num "$stored") >= end_num )); then
            done_reason="last_stored_lsn $stored >= $end_lsn"
            break
        fi
        if [[ "$entries" =~ ^[0-9]+$ ]] && (( entries >= expected_rows )); then
            done_reason="entries $entries >= $expected_rows (last_stored_lsn ${stored:-?})"
            break
        fi
        if [[ "$stored/$entries" != "$last_seen" ]]; then
            last_seen="$stored/$entries"
            last_progress="$t"
        elif (( ${t%.*} - ${last_progress%.*} > 120 )); then
            tail -n 30 "$dir/pgtrail.log" >&2
            die "no progress for 120 s (last_stored_lsn ${stored:-?}, entries ${entries:-?}; last status: $status)"
        fi
    done
    t1="$t"
    daemon_ticks=$(cpu_ticks "$daemon_pid")
    kill -TERM "$daemon_pid"
    rc=0
    wait "$daemon_pid" || rc=$?
    daemon_pid=""
    if [[ $poll == checkpoint ]]; then exec {poll_in}>&-; wait "$POLL_PID" 2>/dev/null || true; fi
    [[ $rc -eq 0 ]] || say "warning: pgtrail run exited with status $rc after SIGTERM"
    pgtrail_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

    # 6. Check the count.
    # status --json gives an estimate (max(id) - min(id) + 1); the check needs the exact count.
    stored_rows=$(psql_db pgtrail -At -c "SELECT count(*) FROM pgtrail.entries") || die "cannot count the stored entries"
    [[ "$stored_rows" =~ ^[0-9]+$ ]] || die "no entry count: $stored_rows"
    pgtrail_rate=$(awk -v n="$stored_rows" -v s="$pgtrail_s" 'BEGIN { printf "%.0f", n / s }')
    ratio=$(awk -v b="$pgtrail_rate" -v a="$ref_rate" 'BEGIN { printf "%.2f", b / a }')
    cpu_s=$(ticks_to_s "$daemon_ticks")
fi

pg_version=$(psql_db bench -At -c "SHOW server_version")
w2j_version=$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo unknown)
echo
echo "== capture benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores) =="
echo "PostgreSQL $pg_version, wal2json $w2j_version, fsync=$fsync, REPLICA IDENTITY $identity, store on the same server"
if [[ $bulk -eq 1 ]]; then
    echo "backlog:          $bulk_transactions bulk transactions of $bulk_rows UPDATEs of pgbench_accounts (scale $clients) = $expected_rows row changes, $((wal_bytes / 1048576)) MiB of WAL, built in ${backlog_s}s"
else
    echo "backlog:          $transactions pgbench tpcb-like transactions ($clients clients, scale $clients) = $expected_rows row changes, $((wal_bytes / 1048576)) MiB of WAL, built in ${backlog_s}s"
fi
echo "(a) pg_recvlogical: ${ref_s}s  -> $ref_rate row changes/s"
if [[ $ref_only -eq 0 ]]; then
    echo "(b) pgtrail run:    ${pgtrail_s}s  -> $pgtrail_rate row changes/s ($stored_rows entries stored; polled by $poll; stopped on $done_reason)"
    echo "ratio b/a:          $ratio"
    echo "pgtrail peak RSS:   $((hwm_kb / 1024)) MiB (VmHWM), CPU ${cpu_s}s user+system"
    if [[ "$stored_rows" != "$expected_rows" ]]; then
        echo "MISMATCH: pgtrail stored $stored_rows entries, the backlog made $expected_rows row changes" >&2
        exit 1
    fi
    echo "entries check:      $stored_rows = the $expected_rows row changes the backlog made"
fi
