#!/usr/bin/env bash
# What auditing costs the application: pgbench tpcb-like on three databases of ONE
# private cluster, measured in the same run, one after the other and interleaved:
#
#   (a) app_a  no audit: the cluster has wal_level=logical, no slot reads app_a;
#   (b) app_b  pgtrail fully on: `pgtrail setup` (REPLICA IDENTITY FULL, the context
#              trigger, the slot) and `pgtrail run` storing into database pgtrail on
#              the same server, running and keeping up while pgbench runs;
#   (c) app_c  a classic row-trigger audit: AFTER INSERT OR UPDATE OR DELETE FOR EACH
#              ROW on the four pgbench tables, writing table, operation, now(),
#              current_user, to_jsonb(OLD) and to_jsonb(NEW) into an audit table in
#              the same transaction (bench/sql/trigger_audit.sql);
#   (r) app_b  the reference: pgtrail installed (identity FULL, the context trigger)
#              but, instead of its daemon, pg_recvlogical streaming the same changes
#              with the same wal2json options from a slot of its own to /dev/null.
#              It is what any wal2json consumer costs the server (the walsender's
#              decoding and its wake-up at every commit) with nothing done with the
#              changes: b/r is what pgtrail's own work (parsing, storing) costs.
#
#   bash bench/app_cost.sh [options]
#
#   --duration S         seconds of each full-speed run (default 15)
#   --rate-duration S    seconds of each fixed-rate run (default 10)
#   --rounds N           rounds of each measurement (default 3): odd rounds run
#                        a, b, r, c, even rounds c, r, b, a, so a steady drift
#                        of the machine weighs on all of them alike
#   --warmup S           one unrecorded run per database first (default 5; 0: none)
#   --rate TPS           the fixed rate (default: half of (a)'s mean full-speed TPS)
#   --clients N          pgbench clients (default 4; threads: min(clients, cores))
#   --scale N            pgbench scale factor (default 4)
#   --catchup-timeout S  how long (b)'s daemon may take, after a run, to store all of
#                        it before the run counts as "did not catch up" (default 120)
#   --split              also measure, at full speed, app_b with pgtrail installed but
#                        its daemon stopped ("b-": the triggers and identity FULL
#                        alone), to tell their cost from the daemon's
#   --fsync              run the server with fsync=on (default off, for all alike)
#   --no-build           use the existing target/release/pgtrail
#   --dir DIR            work directory (default target/bench/app_cost; wiped first)
#   --keep               leave the cluster running and DIR in place at the end
#
# Method:
#  1. a private cluster (scripts/pgcluster.sh: wal_level=logical, fsync off unless
#     --fsync, autovacuum off so that no run gets a vacuum the others do not), three
#     databases made alike by `pgbench -i -s SCALE`, then (b) and (c) set up; the
#     pgtrail binary is copied into DIR first, so a rebuild meanwhile changes nothing;
#  2. one CHECKPOINT, then none during the runs (max_wal_size=32GB, checkpoint_timeout
#     1h), so no run pays for full-page images more than another, after the warm-up
#     paid them for each database; before every run a VACUUM of pgbench_branches and
#     pgbench_tellers (what pgbench does by default); for (b) the daemon is then
#     started and waited for until it has stored everything so far and the slot
#     knows it. The daemon runs only during (b)'s runs: during (a) and (c) no
#     walsender reads WAL;
#  3. full speed: `pgbench -n -M prepared -T S`, TPS per run; the ratios b/a, c/a
#     and r/a are of the means over the rounds; (r) runs right after (b) in odd
#     rounds and right before it in even ones; its slot is moved to the end of the
#     WAL before each of its runs (outside the measured time), so that it never
#     decodes a backlog the others left;
#  4. fixed rate: `pgbench -R RATE --log` (no --latency-limit, no aggregation); p50
#     and p95 over every transaction of all rounds, from the per-transaction logs.
#     pgbench's latency with -R counts from the scheduled start, so it includes any
#     time a transaction waited behind a slow one;
#  5. during every run a psql session samples once a second how far (b)'s slot
#     (confirmed_flush_lsn, which pgtrail advances as the store commits) is behind
#     pg_current_wal_lsn() (the same query for a, b and c, so the cost is alike);
#     after each (b) run, the end LSN is pg_current_wal_lsn() right after pgbench, one
#     marker transaction on a table outside the capture follows, and the catch-up
#     time is from the end of pgbench until pgtrail.checkpoints reaches the end LSN
#     (polled every 0.1 s). CPU of pgtrail, its walsender and its store backends is
#     read from /proc over each (b) run; over every run, the CPU of all this benchmark
#     runs (cluster, pgbench, psql, pgtrail) per transaction, which other work on the
#     machine disturbs far less than TPS; for (b) and (r) it runs on until the
#     consumer has caught up ((b) everything stored, (r) its walsender past a mark
#     written when pgbench ends), since that catching up is part of the cost; and the
#     share of the machine that went to other work (busy CPU in /proc/stat minus
#     ours), to judge the noise;
#  6. a summary with the targets of issue 3 and whether each is met.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

duration=15
rate_duration=10
rounds=3
warmup=5
rate=""
clients=4
scale=4
catchup_timeout=120
fsync=off
build=1
keep=0
split=0
dir="$repo/target/bench/app_cost"
slot=app_cost
ref_slot=app_cost_ref

bench=app_cost
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
usage() { sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
        --rate-duration) rate_duration="${2:?--rate-duration needs seconds}"; shift 2 ;;
        --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
        --warmup) warmup="${2:?--warmup needs seconds}"; shift 2 ;;
        --rate) rate="${2:?--rate needs transactions per second}"; shift 2 ;;
        --clients) clients="${2:?--clients needs a number}"; shift 2 ;;
        --scale) scale="${2:?--scale needs a number}"; shift 2 ;;
        --catchup-timeout) catchup_timeout="${2:?--catchup-timeout needs seconds}"; shift 2 ;;
        --split) split=1; shift ;;
        --fsync) fsync=on; shift ;;
        --no-build) build=0; shift ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        *) echo "app_cost: unknown option $1" >&2; usage ;;
    esac
done
for v in duration rate_duration rounds clients scale catchup_timeout; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds"
[[ -z "$rate" || "$rate" =~ ^[1-9][0-9]*$ ]] || die "--rate must be a positive integer"
jobs=$(( clients < $(nproc) ? clients : $(nproc) ))

bash "$repo/scripts/install-deps.sh" >&2
pgc_find_bin
build_pgtrail "$build"

daemon_pid=""
ref_pid=""
sampler_pid=""
bench_pid=""
stop_all() {
    stop_pid "$bench_pid"
    stop_pid "$sampler_pid"
    stop_pid "$daemon_pid"
    stop_pid "$ref_pid"
}
bench_trap_exit

# Seconds between two $EPOCHREALTIME values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# Arithmetic on decimals: calc EXPR [name=value...].
calc() {
    local expr="$1"
    shift
    local -a vars=()
    local kv
    for kv in "$@"; do vars+=(-v "$kv"); done
    awk "${vars[@]}" "BEGIN { print $expr }"
}
# CPU ticks of the cluster: the postmaster, its live children, and the children it
# has reaped (cutime + cstime).
cluster_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } \
        | awk -v pm="$postmaster" '$1 == pm { t += $14 + $15 + $16 + $17 } $4 == pm { t += $14 + $15 } END { print t + 0 }'
}
# CPU ticks of this shell's reaped children (pgbench, psql), from `times`.
children_ticks() {
    times | awk -v hz="$hz" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz }'
}
hz=$(getconf CLK_TCK)
cores=$(nproc)

# 1. The cluster and the three databases.
pgc_destroy "$dir"
pgc_start "$dir" "fsync=$fsync" "max_wal_size=32GB" "checkpoint_timeout=1h" "shared_buffers=1GB" "autovacuum=off"
port="$PGC_PORT"
postmaster=$(head -n 1 "$(pgc_datadir "$dir")/postmaster.pid")
mkdir -p "$dir/logs" "$dir/lat"
pgtrail="$dir/pgtrail"
cp "$release_dir/pgtrail" "$pgtrail"
# psql as the superuser on database $1, unaligned, no headers, stopping at errors.
q() {
    local db="$1"
    shift
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for s in a b c; do
    q postgres -c "CREATE DATABASE app_$s"
    say "pgbench -i -s $scale app_$s"
    pgbench -i -q -s "$scale" -h 127.0.0.1 -p "$port" -U postgres "app_$s" >"$dir/logs/init_$s.log" 2>&1 \
        || { cat "$dir/logs/init_$s.log" >&2; die "pgbench -i failed for app_$s"; }
done

# (c): the classic row-trigger audit.
q app_c -f "$repo/bench/sql/trigger_audit.sql"

# (b): pgtrail setup, with the store (database pgtrail) on the same server. The
# tables are named one by one, as in bench/capture.sh; bench_marker stays outside
# the capture and only serves to mark the end of a run.
q app_b -c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
cfg="$dir/pgtrail.toml"
bench_pgtrail_setup "postgres://postgres@127.0.0.1:$port/app_b" "postgres://postgres@127.0.0.1:$port/pgtrail" q app_b

# (r): the reference consumer's slot, and the options pgtrail's daemon starts its
# stream with (src/pipeline.rs), so that the walsender does the same work for both.
q app_b -c "SELECT pg_create_logical_replication_slot('$ref_slot', 'wal2json')" >/dev/null
ref_options=(-o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1 -o include-pk=1
    -o add-tables=public.pgbench_accounts,public.pgbench_tellers,public.pgbench_branches,public.pgbench_history
    -o add-msg-prefixes=pgtrail,pgtrail_ddl,pgtrail_partitions,pgtrail_truncate)

# The sampler's query, the same during every run.
cat >"$dir/sampler.sql" <<EOF
SELECT round(extract(epoch FROM clock_timestamp()), 3), pg_current_wal_lsn() - confirmed_flush_lsn
  FROM pg_replication_slots WHERE slot_name = '$slot' \watch 1
EOF
lag_query="SELECT l, l - confirmed_flush_lsn FROM (SELECT pg_current_wal_lsn() AS l) x, pg_replication_slots
 WHERE slot_name = '$slot'"

# wait_stored LSN START: waits until pgtrail.checkpoints reaches LSN and prints the
# seconds since START ($EPOCHREALTIME); fails after --catchup-timeout.
wait_stored() { bench_wait_stored "$1" "$2" q pgtrail; }
# A transaction in app_b past everything so far, so that the checkpoint has
# something to reach; prints the LSN before it.
mark_end() {
    local lsn
    lsn=$(q app_b -c "SELECT pg_current_wal_lsn()")
    q app_b -c "INSERT INTO bench_marker DEFAULT VALUES"
    echo "$lsn"
}
# Starts `pgtrail run` and waits until it has stored everything so far, and until
# the slot has been told it is past all WAL written by then, the store's own writes
# for that catch-up included (else the first samples would show a stale slot).
start_daemon() {
    NO_COLOR=1 PGTRAIL_LOG="${PGTRAIL_LOG:-info}" "$pgtrail" --config "$cfg" run >>"$dir/logs/pgtrail.log" 2>&1 &
    daemon_pid=$!
    local lsn t0
    t0=$EPOCHREALTIME
    lsn=$(mark_end)
    wait_stored "$lsn" "$t0" >/dev/null || die "pgtrail run did not catch up within ${catchup_timeout}s of starting"
    lsn=$(q postgres -c "SELECT pg_current_wal_lsn()")
    until [[ $(q postgres -c "SELECT confirmed_flush_lsn >= '$lsn'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'") == t ]]; do
        awk -v a="$t0" -v b="$EPOCHREALTIME" -v m="$catchup_timeout" 'BEGIN { exit !(b - a > m) }' \
            && die "the slot's confirmed_flush_lsn did not reach $lsn within ${catchup_timeout}s"
        sleep 0.1
    done
}
# Starts pg_recvlogical on the reference slot, moved first to the end of the WAL so
# that it starts with no backlog, and waits until its walsender streams.
start_reference() {
    q app_b -c "SELECT pg_replication_slot_advance('$ref_slot', pg_current_wal_lsn())" >/dev/null
    pg_recvlogical -h 127.0.0.1 -p "$port" -U postgres -d app_b -S "$ref_slot" --start -f /dev/null -s 1 \
        "${ref_options[@]}" >>"$dir/logs/pg_recvlogical.log" 2>&1 &
    ref_pid=$!
    local i
    # Streaming, and past the point the slot was moved to: the walsender
    # starts reading at the slot's restart_lsn, which can be well before it,
    # and that re-reading must not fall into the measured run.
    wait_reference_past "$(reference_mark)" || die "pg_recvlogical did not reach the end of the WAL within 60 s"
}
# A record for the reference's walsender to read past; prints its LSN.
reference_mark() {
    q app_b -c "SELECT pg_logical_emit_message(false, 'app_cost_mark', '')"
}
# Waits (up to 60 s) until the reference's walsender has sent past LSN.
wait_reference_past() {
    local lsn="$1" i
    for (( i = 0; i < 600; i++ )); do
        [[ $(q postgres -c "SELECT coalesce(bool_or(r.sent_lsn >= '$lsn'::pg_lsn), false) FROM pg_replication_slots s
                             JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '$ref_slot'") == t ]] && return 0
        kill -0 "$ref_pid" 2>/dev/null || { cat "$dir/logs/pg_recvlogical.log" >&2; die "pg_recvlogical exited"; }
        sleep 0.1
    done
    return 1
}
stop_reference() {
    stop_pid "$ref_pid"
    ref_pid=""
}

declare -A TPS=() LAG_MAX=() LAG_END=() CATCHUP=() WAL_RATE=() CPU=() OTHERS=() CPU_TX=()

# run_one SETUP MODE ROUND: one pgbench run on app_SETUP (SETUP n: app_b with the
# daemon stopped; SETUP r: app_b with pg_recvlogical instead of the daemon). MODE is
# full, rate or warmup. Records TPS and, for (b), the lag, catch-up and CPU.
run_one() {
    local s="$1" mode="$2" r="$3"
    local db="app_$s" key="$1/$2/$3" secs=$duration
    [[ $s != n && $s != r ]] || db=app_b
    local -a args=(-n -M prepared -c "$clients" -j "$jobs")
    case "$mode" in
        full) ;;
        rate) secs=$rate_duration; args+=(-R "$rate" --log --log-prefix "$dir/lat/${s}_r$r") ;;
        warmup) secs=$warmup ;;
    esac
    args+=(-T "$secs" -h 127.0.0.1 -p "$port" -U postgres "$db")

    q "$db" -c "VACUUM pgbench_branches, pgbench_tellers"
    if [[ $s == b ]]; then start_daemon; fi
    if [[ $s == r ]]; then start_reference; fi

    # The consumer (pgtrail's daemon or pg_recvlogical) and the server processes
    # serving it.
    local consumer="$daemon_pid"
    [[ $s != r ]] || consumer="$ref_pid"
    local -a pids=()
    if [[ $s == r ]]; then
        mapfile -t pids < <(q postgres -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$ref_slot' AND active_pid IS NOT NULL")
    elif [[ $s == b ]]; then
        mapfile -t pids < <(q postgres -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot' AND active_pid IS NOT NULL
                                          UNION ALL SELECT pid FROM pg_stat_activity WHERE datname = 'pgtrail' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    fi
    psql -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -f "$dir/sampler.sql" >"$dir/logs/samples_$s-$mode-$r.txt" 2>&1 &
    sampler_pid=$!
    local start_lsn
    start_lsn=$(q postgres -c "SELECT pg_current_wal_lsn()")

    # CPU over the run: pgtrail's pipeline (for b), and how much of the machine went
    # to work other than this benchmark (the cluster, pgbench, psql, pgtrail).
    local log="$dir/logs/pgbench_$s-$mode-$r.log" t_begin t_end end_lsn lag
    local m0 c0 k0 d0=0 p0=0 m1 c1 k1 d1=0 p1=0
    [[ -z "$consumer" ]] || { d0=$(cpu_ticks "$consumer"); p0=$(cpu_ticks "${pids[@]}"); }
    m0=$(machine_busy_ticks); c0=$(cluster_ticks); k0=$(children_ticks)
    t_begin=$EPOCHREALTIME
    pgbench "${args[@]}" >"$log" 2>&1 &
    bench_pid=$!
    wait "$bench_pid" || { cat "$log" >&2; die "pgbench failed on $db ($mode, round $r)"; }
    bench_pid=""
    t_end=$EPOCHREALTIME
    m1=$(machine_busy_ticks); c1=$(cluster_ticks); k1=$(children_ticks)
    [[ -z "$consumer" ]] || { d1=$(cpu_ticks "$consumer"); p1=$(cpu_ticks "${pids[@]}"); }
    OTHERS[$key]=$(calc "((m1 - m0) - (c1 - c0) - (k1 - k0) - (d1 - d0)) / hz / (t1 - t0) / n * 100" \
        "m1=$m1" "m0=$m0" "c1=$c1" "c0=$c0" "k1=$k1" "k0=$k0" "d1=$d1" "d0=$d0" "hz=$hz" "t1=$t_end" "t0=$t_begin" "n=$cores")
    IFS='|' read -r end_lsn lag < <(q postgres -c "$lag_query")
    stop_pid "$sampler_pid"
    sampler_pid=""

    TPS[$key]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$log")
    [[ -n "${TPS[$key]}" ]] || { cat "$log" >&2; die "no tps in pgbench's output ($key)"; }
    # A consumer is behind when pgbench ends: the CPU it spends catching up is
    # part of what the transactions cost, so (b) and (r) are read again once
    # they have caught up (b: everything stored; r: its walsender past a mark
    # written now). The polling's own backends add a few ms to that tail.
    local c2=$c1 d2=$d1
    if [[ $s == r ]]; then
        wait_reference_past "$(reference_mark)" || die "pg_recvlogical did not catch up within 60 s of pgbench's end"
        c2=$(cluster_ticks); d2=$(cpu_ticks "$consumer")
    elif [[ $s == b ]]; then
        q app_b -c "INSERT INTO bench_marker DEFAULT VALUES"
        local caught_up
        if caught_up=$(wait_stored "$end_lsn" "$t_end"); then
            CATCHUP[$key]=$caught_up
        else
            CATCHUP[$key]="no"
        fi
        c2=$(cluster_ticks); d2=$(cpu_ticks "$consumer")
    fi
    # CPU of everything this benchmark runs, per transaction: far less disturbed by
    # other work on the machine than TPS is.
    local done_tx
    done_tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
    # shellcheck disable=SC2034 # read by mean, through a nameref
    CPU_TX[$key]=$(calc "((c2 - c0) + (k1 - k0) + (d2 - d0)) / hz / n * 1000000" \
        "c2=$c2" "c0=$c0" "k1=$k1" "k0=$k0" "d2=$d2" "d0=$d0" "hz=$hz" "n=${done_tx:-1}")
    WAL_RATE[$key]=$(calc "w / s" "w=$(q postgres -c "SELECT '$end_lsn'::pg_lsn - '$start_lsn'::pg_lsn")" "s=$secs")
    local note=""
    if [[ -n "$consumer" ]]; then
        CPU[$key]=$(calc "(d1 - d0 + p1 - p0) / hz / (t1 - t0) * 100" "d1=$d1" "d0=$d0" "p1=$p1" "p0=$p0" "hz=$hz" "t1=$t_end" "t0=$t_begin")
    fi
    if [[ $s == r ]]; then
        kill -0 "$ref_pid" 2>/dev/null || { cat "$dir/logs/pg_recvlogical.log" >&2; die "pg_recvlogical exited during the run"; }
        stop_reference
        note=$(printf '; pg_recvlogical+walsender %.0f%% of a core' "${CPU[$key]}")
    fi
    if [[ $s == b ]]; then
        bench_stop_daemon
        # Largest lag seen by the sampler, and the lag at the end of pgbench.
        LAG_MAX[$key]=$(awk -F'|' -v m="$lag" '$2 + 0 > m { m = $2 + 0 } END { print m }' "$dir/logs/samples_$s-$mode-$r.txt")
        LAG_END[$key]=$lag
        note=$(printf '; slot lag max %.1f MiB, at end %.1f MiB; stored all %s s after pgbench ended; pgtrail+walsender+store %.0f%% of a core' \
            "$(calc "x / 1048576" "x=${LAG_MAX[$key]}")" "$(calc "x / 1048576" "x=$lag")" "${CATCHUP[$key]}" "${CPU[$key]}")
    fi
    say "$(printf '(%s) %-6s round %s: %s s, %.0f TPS, WAL %.1f MiB/s, other work %.0f%% of the machine%s' "$s" "$mode" "$r" "$secs" \
        "${TPS[$key]}" "$(calc "x / 1048576" "x=${WAL_RATE[$key]}")" "${OTHERS[$key]}" "$note")"
    [[ "${CATCHUP[$key]:-}" != no ]] || say "(b) did not catch up within ${catchup_timeout}s"
}

# order ROUND [n]: a b r c in odd rounds, c r b a in even ones; with n, b's run
# without the daemon right after (odd) or before (even) r's.
order() {
    local -a o=(a b r c)
    [[ "${2:-}" != n ]] || o=(a b r n c)
    if (( $1 % 2 )); then echo "${o[@]}"; else printf '%s\n' "${o[@]}" | tac | xargs; fi
}

# One checkpoint before everything, none during the runs (max_wal_size is far
# above the WAL of a whole run): the warm-up gives every database its full-page
# images, and then no run pays for them more than another.
q postgres -c "CHECKPOINT"
checkpoints_query="SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
checkpoints0=$(q postgres -c "$checkpoints_query")
t_start=$EPOCHREALTIME
if [[ $warmup -gt 0 ]]; then
    for s in a b c; do run_one "$s" warmup 0; done
fi
for (( r = 1; r <= rounds; r++ )); do
    if [[ $split -eq 1 ]]; then
        for s in $(order "$r" n); do run_one "$s" full "$r"; done
    else
        for s in $(order "$r"); do run_one "$s" full "$r"; done
    fi
done

# mean SETUP MODE [ARRAY]: mean over the rounds of TPS (or of the named array).
mean() {
    local -n values="${3:-TPS}"
    local r sum=0
    for (( r = 1; r <= rounds; r++ )); do sum=$(calc "a + b" "a=$sum" "b=${values[$1/$2/$r]}"); done
    calc "s / n" "s=$sum" "n=$rounds"
}
tps_a=$(mean a full); tps_b=$(mean b full); tps_c=$(mean c full); tps_r=$(mean r full)
if [[ -z "$rate" ]]; then
    rate=$(calc "int(t / 2 + 0.5)" "t=$tps_a")
    [[ "$rate" -ge 1 ]] || die "(a) ran at $tps_a TPS: no rate to hold"
fi
say "fixed rate: $rate TPS"
for (( r = 1; r <= rounds; r++ )); do
    for s in $(order "$r"); do run_one "$s" rate "$r"; done
done
total_s=$(elapsed "$t_start" "$EPOCHREALTIME")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
checkpoints=$(( $(q postgres -c "$checkpoints_query") - checkpoints0 ))

# Latency percentiles (nearest rank) over every logged transaction of a setup, in ms.
declare -A P50=() P95=() NTX=()
for s in a b r c; do
    files=("$dir/lat/${s}_r"*)
    [[ -e "${files[0]}" ]] || die "no latency logs for ($s)"
    awk '{ print $3 }' "${files[@]}" | sort -n >"$dir/lat/sorted_$s"
    NTX[$s]=$(wc -l <"$dir/lat/sorted_$s")
    P50[$s]=$(awk -v p=0.50 -v n="${NTX[$s]}" 'BEGIN { k = int(p * n); if (k < p * n) k++; if (k < 1) k = 1 } NR == k { printf "%.2f", $1 / 1000; exit }' "$dir/lat/sorted_$s")
    P95[$s]=$(awk -v p=0.95 -v n="${NTX[$s]}" 'BEGIN { k = int(p * n); if (k < p * n) k++; if (k < 1) k = 1 } NR == k { printf "%.2f", $1 / 1000; exit }' "$dir/lat/sorted_$s")
done
rate_tps() { local r sum=0; for (( r = 1; r <= rounds; r++ )); do sum=$(calc "a + b" "a=$sum" "b=${TPS[$1/rate/$r]}"); done; calc "s / n" "s=$sum" "n=$rounds"; }

ratio_b=$(calc "sprintf(\"%.2f\", b / a)" "a=$tps_a" "b=$tps_b")
ratio_c=$(calc "sprintf(\"%.2f\", c / a)" "a=$tps_a" "c=$tps_c")
ratio_r=$(calc "sprintf(\"%.2f\", r / a)" "a=$tps_a" "r=$tps_r")
p95_ratio_b=$(calc "sprintf(\"%.2f\", b / a)" "a=${P95[a]}" "b=${P95[b]}")
p95_ratio_c=$(calc "sprintf(\"%.2f\", c / a)" "a=${P95[a]}" "c=${P95[c]}")
p95_ratio_r=$(calc "sprintf(\"%.2f\", r / a)" "a=${P95[a]}" "r=${P95[r]}")
verdict() { if awk "BEGIN { exit !($1) }"; then echo MET; else echo "NOT MET"; fi; }
t1=$(verdict "${P95[b]} <= 1.15 * ${P95[a]}")
t2=$(verdict "${P95[b]} < ${P95[c]}")
t3=$(verdict "$ratio_b > $ratio_c")

per_round() { # per_round SETUP MODE: "x / y" TPS of each round
    local r out=""
    for (( r = 1; r <= rounds; r++ )); do out+="${out:+ / }$(printf '%.0f' "${TPS[$1/$2/$r]}")"; done
    echo "$out"
}
# consumer_us SETUP: CPU of the consumer and the server processes serving it
# (walsender, store backends), in µs per transaction, mean over the full-speed runs.
consumer_us() {
    local r sum=0
    for (( r = 1; r <= rounds; r++ )); do
        sum=$(calc "s + c / 100 / t * 1000000" "s=$sum" "c=${CPU[$1/full/$r]}" "t=${TPS[$1/full/$r]}")
    done
    calc "s / n" "s=$sum" "n=$rounds"
}
mib() { calc "sprintf(\"%.1f\", x / 1048576)" "x=$1"; }

# Other work on the machine over the measured runs (not the warm-up).
others=$(for k in "${!OTHERS[@]}"; do [[ $k == */warmup/* ]] || echo "${OTHERS[$k]}"; done \
    | awk 'NR == 1 { lo = hi = $1 } { s += $1; if ($1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { printf "mean %.0f%%, per run %.0f%% to %.0f%%", s / NR, lo, hi }')

pg_version=$(q postgres -c "SHOW server_version")
w2j_version=$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo unknown)
echo
echo "== cost to the application ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, ${total_s}s of measuring) =="
echo "PostgreSQL $pg_version, wal2json $w2j_version, fsync=$fsync, autovacuum off; pgbench tpcb-like, -M prepared,"
echo "$clients clients, $jobs threads, scale $scale; $rounds round(s) of each (in turn a b r c, c r b a, ...), full speed ${duration}s"
echo "per run, fixed rate ${rate_duration}s per run at $rate TPS; load average before $load_before, after $load_after;"
echo "other work on the machine during the runs (CPU not used by this benchmark, of all $cores cores): $others"
echo
echo "| | (a) no audit | (b) pgtrail | (c) row trigger | (r) pg_recvlogical alone |"
echo "| --- | ---: | ---: | ---: | ---: |"
printf '| full speed, TPS (mean of %s x %s s) | %.0f | %.0f | %.0f | %.0f |\n' "$rounds" "$duration" "$tps_a" "$tps_b" "$tps_c" "$tps_r"
printf '| per round | %s | %s | %s | %s |\n' "$(per_round a full)" "$(per_round b full)" "$(per_round c full)" "$(per_round r full)"
printf '| ratio to (a) | 1.00 | **%s** | **%s** | %s |\n' "$ratio_b" "$ratio_c" "$ratio_r"
cpu_a=$(mean a full CPU_TX); cpu_b=$(mean b full CPU_TX); cpu_c=$(mean c full CPU_TX); cpu_r=$(mean r full CPU_TX)
printf '| CPU per transaction at full speed, µs (cluster + pgbench + consumer) | %.0f | %.0f (%.2fx) | %.0f (%.2fx) | %.0f (%.2fx) |\n' \
    "$cpu_a" "$cpu_b" "$(calc "b / a" "a=$cpu_a" "b=$cpu_b")" "$cpu_c" "$(calc "c / a" "a=$cpu_a" "c=$cpu_c")" \
    "$cpu_r" "$(calc "r / a" "a=$cpu_a" "r=$cpu_r")"
printf '| CPU of the consumer and its server processes, µs per transaction | | %.0f | | %.0f |\n' \
    "$(consumer_us b)" "$(consumer_us r)"
if [[ $split -eq 1 ]]; then
    tps_n=$(mean n full)
    cpu_n=$(mean n full CPU_TX)
    printf '| (b-) pgtrail installed, daemon stopped: TPS (per round), ratio to (a); CPU per transaction, µs | | %.0f (%s), %s; %.0f µs (%.2fx) | | |\n' \
        "$tps_n" "$(per_round n full)" "$(calc "sprintf(\"%.2f\", n / a)" "a=$tps_a" "n=$tps_n")" \
        "$cpu_n" "$(calc "n / a" "a=$(mean a full CPU_TX)" "n=$cpu_n")"
fi
printf '| at %s TPS (achieved %.0f / %.0f / %.0f / %.0f): p50 latency, ms | %s | %s | %s | %s |\n' "$rate" \
    "$(rate_tps a)" "$(rate_tps b)" "$(rate_tps c)" "$(rate_tps r)" "${P50[a]}" "${P50[b]}" "${P50[c]}" "${P50[r]}"
printf '| p95 latency, ms | %s | **%s** | **%s** | %s |\n' "${P95[a]}" "${P95[b]}" "${P95[c]}" "${P95[r]}"
printf '| p95 ratio to (a) | 1.00 | %s | %s | %s |\n' "$p95_ratio_b" "$p95_ratio_c" "$p95_ratio_r"
echo
echo "(b) daemon at full speed (slot lag = pg_current_wal_lsn() - confirmed_flush_lsn, sampled every second):"
caught_all=yes
for (( r = 1; r <= rounds; r++ )); do
    k="b/full/$r"
    [[ "${CATCHUP[$k]}" != no ]] || caught_all=no
    printf '  round %s: WAL %s MiB/s; slot lag max %s MiB (%.1f s of WAL), at the end of pgbench %s MiB (%.1f s of WAL);\n' \
        "$r" "$(mib "${WAL_RATE[$k]}")" "$(mib "${LAG_MAX[$k]}")" "$(calc "l / w" "l=${LAG_MAX[$k]}" "w=${WAL_RATE[$k]}")" \
        "$(mib "${LAG_END[$k]}")" "$(calc "l / w" "l=${LAG_END[$k]}" "w=${WAL_RATE[$k]}")"
    printf '           everything stored %s s after pgbench ended; CPU of pgtrail + its walsender + its store backends %.0f%% of a core\n' \
        "${CATCHUP[$k]}" "${CPU[$k]}"
done
for (( r = 1; r <= rounds; r++ )); do
    k="b/rate/$r"
    [[ "${CATCHUP[$k]}" != no ]] || caught_all=no
    printf '(b) at the fixed rate, round %s: slot lag max %s MiB, everything stored %s s after pgbench ended\n' \
        "$r" "$(mib "${LAG_MAX[$k]}")" "${CATCHUP[$k]}"
done
for s in a b c r; do
    if awk -v r="$rate" -v t="$(rate_tps "$s")" 'BEGIN { exit !(t < 0.97 * r) }'; then
        echo "note: ($s) did not hold the fixed rate (achieved $(printf '%.0f' "$(rate_tps "$s")") of $rate TPS): its latencies there"
        echo "      measure a queue that grew for the whole run"
    elif awk -v r="$rate" -v t="$(mean "$s" full)" 'BEGIN { exit !(t < 1.2 * r) }'; then
        echo "note: ($s)'s full speed in this run ($(printf '%.0f' "$(mean "$s" full)") TPS) is within 20% of the fixed rate: there it ran"
        echo "      near saturation"
    fi
done
[[ $checkpoints -eq 0 ]] || echo "note: $checkpoints checkpoint(s) happened during the runs"
echo
echo "targets (issue 3):"
echo "  fixed rate: (b) p95 within 1.15x of (a)'s:   ${P95[b]} ms vs ${P95[a]} ms = ${p95_ratio_b}x   $t1"
echo "  fixed rate: (b) p95 below (c)'s:             ${P95[b]} ms vs ${P95[c]} ms                 $t2"
echo "  full speed: b/a above c/a:                   $ratio_b vs $ratio_c                 $t3"
echo "  daemon caught up after every (b) run:        $caught_all"
echo
echo "the reference (r), the same run: any wal2json consumer costs the server what (r) does before it does"
echo "anything with the changes. r/a = $ratio_r, b/r = $(calc "sprintf(\"%.2f\", b / r)" "b=$tps_b" "r=$tps_r"); (r) p95 at the fixed rate ${P95[r]} ms."
if awk "BEGIN { exit !($ratio_r <= $ratio_c) }"; then
    echo "  r/a <= c/a: on this machine no wal2json consumer can beat the row trigger at full speed."
fi
