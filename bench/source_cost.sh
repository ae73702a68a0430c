#!/usr/bin/env bash
# What auditing costs the SOURCE server when pgtrail's store and daemon run elsewhere (the
# deployment recommended for production), next to no audit and to a classic row-trigger
# audit, all in one run. The machine is split by CPU affinity: the three source clusters run
# on CPU 0 (`taskset` on `pg_ctl start`; every backend and walsender inherits it), the store
# cluster, pgtrail's daemon, pgbench and this script on CPU 1. The configurations, each on a
# source cluster with database `bench` made by `pgbench -i -s SCALE`:
#
#   (a) no audit: wal_level=logical, nothing else;
#   (d) pgtrail set up by `pgtrail setup` (REPLICA IDENTITY FULL, the context trigger, the
#       slot) with its daemon stopped: what the source pays inside its transactions;
#   (b) the same cluster as (d), with `pgtrail run` streaming it into the store cluster:
#       what pgtrail costs the source in all, its walsender included;
#   (c) a classic AFTER ROW trigger writing to_jsonb(OLD) and to_jsonb(NEW) into an audit
#       table (bench/sql/trigger_audit.sql, the same as bench/app_cost.sh's).
#
#   bash bench/source_cost.sh [options]
#
#   --duration S         seconds of each full-speed run (default 15)
#   --rate-duration S    seconds of each fixed-rate run (default 10)
#   --rounds N           times the pattern a d b c c b d a runs (default 1: each
#                        configuration twice, in an order that lays a steady drift of
#                        the machine on all alike)
#   --warmup S           one unrecorded full-speed run per configuration first (default
#                        5; 0: none)
#   --rate TPS           the fixed rate (default: half of (a)'s TPS in a calibration run)
#   --clients N          pgbench clients (default 4; threads: min(clients, cores))
#   --scale N            pgbench scale factor (default 10)
#   --catchup-timeout S  how long (b)'s daemon may take to store everything (default 120)
#   --fsync              fsync=on on every cluster (default off, for all alike)
#   --no-build           no cargo build: use target/release/pgtrail ($CARGO_TARGET_DIR's
#                        when set)
#   --binary FILE        the pgtrail binary to measure (no build)
#   --dir DIR            work directory (default target/bench/source_cost; wiped first)
#   --keep               leave the clusters running and DIR in place at the end
#
# Method:
#  1. four private clusters (scripts/pgcluster.sh: wal_level=logical; fsync off unless
#     --fsync; autovacuum off, so that no run gets a vacuum the others do not; max_wal_size
#     32GB and checkpoint_timeout 1h after one CHECKPOINT each before the warm-up, so that
#     no checkpoint falls in a run; full_page_writes off, else a run's WAL and CPU would
#     depend on how many pages of pgbench_accounts (1,640 per scale unit) it was the first
#     to touch since the checkpoint, i.e. on its place in the order); the pgtrail binary
#     is copied into DIR first;
#  2. warm-up: one full-speed run per configuration; then, without --rate, one calibration
#     run of (a) at full speed: the fixed rate is half its TPS;
#  3. the rounds: each configuration in turn runs at full speed (`pgbench -n -M prepared
#     -T S`, tpcb-like: its TPS), then at the fixed rate (`-R RATE --log`: p50 and p95
#     latency from pgbench's per-transaction log; with -R it counts from the scheduled
#     start, so a queue behind a slow transaction shows). Before each run, VACUUM of
#     pgbench_branches and pgbench_tellers (what pgbench does by default). (b)'s daemon is
#     started before its full-speed run and has stored everything before each of its runs
#     (the store's pgtrail.checkpoints has reached the source's pg_current_wal_lsn(),
#     after a marker transaction on a table outside the capture); it is stopped after the
#     fixed-rate run. (d) leaves a backlog in the slot: (b)'s daemon stores it before (b)
#     is measured;
#  4. measured over each fixed-rate run, from a moment when the source has no client
#     connection (the last run's have exited) to one when pgbench's have exited again and,
#     for (b), the daemon has stored all of the run: the source's CPU from /proc. The
#     postmaster's own utime+stime, its reaped children's (cutime+cstime) and its live
#     children's utime+stime, sampled every 0.2 s by pid and classed by /proc/PID/cmdline:
#     client backends (pgbench's connections, this script's two or three short queries,
#     any the daemon holds), the walsender, and the rest (the postmaster, checkpointer,
#     walwriter, background writer, launchers). A child that exits during the run counts
#     what was sampled of it to its class; what the reaped time adds beyond that (a
#     connection's last moments, connections too short to be sampled) counts to the
#     client backends, the only children that exit during a run (a snapshot during which
#     the postmaster reaped a child is taken again, so none counts twice). The parts add
#     up to the source's whole CPU over the run; divided by pgbench's transactions: CPU
#     per transaction. Also: WAL bytes per transaction
#     (pg_current_wal_lsn() after pgbench minus before); for (b), the store side's CPU per
#     transaction (the store cluster and the daemon, on CPU 1), reported apart; and CPU
#     0's busy time beyond the source's, i.e. other work on the machine, to judge noise
#     (two tick counts sampled differently: a few % below zero is a quiet CPU 0);
#  5. a summary per configuration (the mean over its runs, and min-max), then, last, the
#     ratios against the targets of issue 11, of the means: pgtrail's source CPU overhead
#     over (a) at most the trigger's, (b-a)/(c-a) <= 1.0 (goal <= 0.5; (d)'s too), and
#     full-speed TPS b/c >= 1.0 (goal b/a >= 0.85).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

duration=15
rate_duration=10
rounds=1
warmup=5
rate=""
clients=4
scale=10
catchup_timeout=120
fsync=off
build=1
binary=""
keep=0
dir="$repo/target/bench/source_cost"
slot=source_cost
pattern=(a d b c c b d a)

bench=source_cost
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 2; }

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
        --fsync) fsync=on; shift ;;
        --no-build) build=0; shift ;;
        --binary) binary=$(pgc_abspath "${2:?--binary needs a file}"); build=0; shift 2 ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        *) echo "$bench: unknown option $1" >&2; usage ;;
    esac
done
for v in duration rate_duration rounds clients scale catchup_timeout; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number of seconds"
[[ -z "$rate" || "$rate" =~ ^[1-9][0-9]*$ ]] || die "--rate must be a positive integer"
cores=$(nproc)
[[ $cores -ge 2 ]] || die "the split layout needs 2 CPUs (the sources on CPU 0, the rest on CPU 1); this machine has $cores"
command -v taskset >/dev/null || die "taskset not found (Debian package util-linux)"
jobs=$(( clients < cores ? clients : cores ))
hz=$(getconf CLK_TCK)
runs=$(( 2 * rounds ))

bash "$repo/scripts/install-deps.sh" >&2
pgc_find_bin
if [[ -z "$binary" ]]; then
    target="${CARGO_TARGET_DIR:-$repo/target}"
    if [[ $build -eq 1 ]]; then
        say "cargo build --release"
        (cd "$repo" && cargo build --release --quiet)
    fi
    binary="$target/release/pgtrail"
fi
[[ -x "$binary" ]] || die "$binary not found or not executable (build it, or drop --no-build, or give --binary)"

# Everything from here on runs on CPU 1, save the source clusters.
taskset -cp 1 $$ >/dev/null || die "could not move this script to CPU 1"

daemon_pid=""
bench_pid=""
sampler_pid=""
stop_all() {
    stop_pid "$bench_pid"
    stop_pid "$sampler_pid"
    stop_pid "$daemon_pid"
    if [[ $keep -eq 1 ]]; then
        say "the clusters run in $dir/{a,b,c,store}: stop them with: for n in a b c store; do bash scripts/pgcluster.sh destroy $dir/\$n; done"
    else
        for n in a b c store; do pgc_destroy "$dir/$n" || true; done
    fi
}
bench_trap_exit

declare -A PORT=() PM=()
settings=("fsync=$fsync" "full_page_writes=off" "max_wal_size=32GB" "checkpoint_timeout=1h" "shared_buffers=512MB" "autovacuum=off")
# start_cluster NAME CPU: a fresh cluster in DIR/NAME whose every process runs on CPU; sets
# PORT[NAME] and PM[NAME] (the postmaster's pid).
start_cluster() {
    (taskset -cp "$2" "$BASHPID" >/dev/null && pgc_start "$dir/$1" "${settings[@]}") \
        || die "could not start cluster $1 on CPU $2"
    PORT[$1]=$(pgc_status "$dir/$1")
    PM[$1]=$(head -n 1 "$(pgc_datadir "$dir/$1")/postmaster.pid")
    local cpus
    cpus=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/${PM[$1]}/status")
    [[ "$cpus" == "$2" ]] || die "cluster $1's postmaster may run on CPUs $cpus, not only $2"
}
# q NAME DB [psql args...]: psql as the superuser on cluster NAME, unaligned, stopping at errors.
q() {
    local name="$1" db="$2"
    shift 2
    psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT[$name]}" -U postgres -d "$db" "$@"
}
# The source cluster of a configuration: (d) is (b)'s with the daemon stopped.
cluster_of() { if [[ $1 == d ]]; then echo b; else echo "$1"; fi; }

# 1. The clusters.
for n in a b c store; do pgc_destroy "$dir/$n"; done
pgc_destroy "$dir"
mkdir -p "$dir/logs" "$dir/lat" "$dir/cpu"
for n in a b c; do start_cluster "$n" 0; done
start_cluster store 1
pgtrail="$dir/pgtrail"
cp "$binary" "$pgtrail"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for n in a b c; do
    q "$n" postgres -c "CREATE DATABASE bench"
    say "pgbench -i -s $scale on cluster $n"
    pgbench -i -q -s "$scale" -h 127.0.0.1 -p "${PORT[$n]}" -U postgres bench >"$dir/logs/init_$n.log" 2>&1 \
        || { cat "$dir/logs/init_$n.log" >&2; die "pgbench -i failed on cluster $n"; }
done
q c bench -f "$repo/bench/sql/trigger_audit.sql"

# (b)/(d): pgtrail setup against the store cluster. bench_marker stays outside the capture
# and only marks the end of a run.
q b bench -c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
cfg="$dir/pgtrail.toml"
bench_pgtrail_setup "postgres://postgres@127.0.0.1:${PORT[b]}/bench" "postgres://postgres@127.0.0.1:${PORT[store]}/pgtrail" q b bench

# wait_stored LSN START: see bench_wait_stored; the store is on its own cluster.
wait_stored() { bench_wait_stored "$1" "$2" q store pgtrail; }
# A transaction on (b)'s source past everything so far, for the checkpoint to reach; prints
# the LSN before it.
mark_end() {
    local lsn
    lsn=$(q b bench -c "SELECT pg_current_wal_lsn()")
    q b bench -c "INSERT INTO bench_marker DEFAULT VALUES"
    echo "$lsn"
}
# Waits until the daemon has stored all WAL written so far.
settle() {
    wait_stored "$(mark_end)" "$EPOCHREALTIME" >/dev/null \
        || die "pgtrail run did not store everything within ${catchup_timeout}s"
}
start_daemon() {
    NO_COLOR=1 PGTRAIL_LOG="${PGTRAIL_LOG:-info}" "$pgtrail" --config "$cfg" run >>"$dir/logs/pgtrail.log" 2>&1 &
    daemon_pid=$!
    settle
}
# pgbench_run CONFIG LOG [pgbench args...]: pgbench tpcb-like on CONFIG's source, after
# the VACUUM pgbench would do.
pgbench_run() {
    local name
    name=$(cluster_of "$1")
    local log="$2"
    shift 2
    q "$name" bench -c "VACUUM pgbench_branches, pgbench_tellers"
    pgbench -n -M prepared -c "$clients" -j "$jobs" "$@" -h 127.0.0.1 -p "${PORT[$name]}" -U postgres bench \
        >"$log" 2>&1 &
    bench_pid=$!
    wait "$bench_pid" || { cat "$log" >&2; die "pgbench failed ($log)"; }
    bench_pid=""
}
tps_of() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1"; }
txns_of() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1"; }

# snapshot PM: "pid ticks class" of PM's live children; class is backend (a client
# connection), walsender, rest, or gone (exited before its command line was read).
snapshot() {
    local pid ticks title class
    while read -r pid ticks; do
        title=""
        { read -r -d '' title <"/proc/$pid/cmdline"; } 2>/dev/null || true
        case "$title" in
            "") class=gone ;;
            *walsender*) class=walsender ;;
            *"127.0.0.1("*|*"[local]"*) class=backend ;;
            *) class=rest ;;
        esac
        echo "$pid $ticks $class"
    done < <(proc_children "$1")
}
# sample PM FILE STOPFILE: a snapshot every 0.2 s appended to FILE, until STOPFILE exists.
sample() {
    while [[ ! -e "$3" ]]; do
        snapshot "$1" >>"$2"
        sleep 0.2
    done
}
# split_ticks BASE SAMPLES FINAL OWN REAPED: "backend walsender rest" ticks over a window,
# from the snapshots at its start (BASE), during it and at its end (FINAL), the
# postmaster's own ticks and its reaped children's over the window. A child seen at the
# end counts end minus start (0 if born during the window); one that exited counts what
# was last sampled of it minus start; the reaped ticks beyond what was last sampled of
# the exited ones go to the backends.
split_ticks() {
    awk -v base="$1" -v fin="$3" -v own="$4" -v reaped="$5" '
        NF != 3 { next }
        FILENAME == base { b[$1] = $2 }
        FILENAME == fin { f[$1] = $2 }
        { if ($3 != "gone") cls[$1] = $3; if (!($1 in last) || $2 > last[$1]) last[$1] = $2 }
        END {
            t["backend"] = 0; t["walsender"] = 0; t["rest"] = own; u = reaped
            for (p in last) {
                c = (p in cls) ? cls[p] : "backend"
                s = (p in b) ? b[p] : 0
                if (p in f) t[c] += f[p] - s
                else { t[c] += last[p] - s; u -= last[p] }
            }
            printf "%d %d %d\n", t["backend"] + u, t["walsender"], t["rest"]
        }' "$1" "$2" "$3"
}
cpu0_busy() { awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# Microseconds per transaction of TICKS over N transactions.
us_per() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }'; }

declare -A TPS=() RATE_TPS=() P50=() P95=() SRC=() BACK=() WS=() REST=() WAL=() STORE=() DAEMON=() OTHER0=() CATCHUP=()

# counters CONFIG PM FILE: the snapshot of PM's children into FILE, then one line: PM's own
# and reaped ticks, CPU 0's busy ticks, the store cluster's and the daemon's ticks (0 but
# for b) and the time.
# The snapshot is taken again until the postmaster reaped no child while it was taken:
# such a child would count twice, or not at all.
counters() {
    local own reaped before="" store=0 daemon=0 i
    for (( i = 0; i < 20; i++ )); do
        before=$(proc_own_reaped "$2")
        snapshot "$2" >"$3"
        read -r own reaped < <(proc_own_reaped "$2")
        [[ "${before#* }" != "$reaped" ]] || break
    done
    [[ $1 != b ]] || { store=$(proc_tree_ticks "${PM[store]}"); daemon=$(cpu_ticks "$daemon_pid"); }
    echo "$own $reaped $(cpu0_busy) $store $daemon $EPOCHREALTIME"
}
# quiesce PM CONFIG: waits (up to 3 s) until PM has no client connection left, nor one exiting:
# a window starts and ends with none, so that no connection's last moments fall on the
# wrong side of it.
quiesce() {
    local i
    for (( i = 0; i < 30; i++ )); do
        snapshot "$1" | grep -q ' backend$\| gone$' || return 0
        sleep 0.1
    done
    say "warning: cluster $(cluster_of "$2") still has client connections after 3 s"
}
# measure_rate CONFIG KEY: the fixed-rate run of CONFIG, measured (see the header, 4).
measure_rate() {
    local s="$1" key="$2" name pm w="$dir/cpu/$2"
    name=$(cluster_of "$s")
    pm=${PM[$name]}
    local own0 reaped0 own1 reaped1 busy0 busy1 st0 st1 d0 d1 t0 t1 t2 start_lsn end_lsn
    [[ $s != b ]] || settle
    quiesce "$pm" "$s"
    read -r own0 reaped0 busy0 st0 d0 t0 < <(counters "$s" "$pm" "$w.base")
    : >"$w.samples"
    rm -f "$w.stop"
    sample "$pm" "$w.samples" "$w.stop" &
    sampler_pid=$!
    start_lsn=$(q "$name" bench -c "SELECT pg_current_wal_lsn()")
    pgbench_run "$s" "$dir/logs/rate_$key.log" -R "$rate" -T "$rate_duration" --log --log-prefix "$dir/lat/$key"
    t1=$EPOCHREALTIME
    end_lsn=$(q "$name" bench -c "SELECT pg_current_wal_lsn()")
    if [[ $s == b ]]; then
        q b bench -c "INSERT INTO bench_marker DEFAULT VALUES"
        CATCHUP[$key]=$(wait_stored "$end_lsn" "$t1") || die "pgtrail run did not store run $key within ${catchup_timeout}s"
    fi
    # pgbench's connections exit as it ends: their last moments belong to the run.
    quiesce "$pm" "$s"
    touch "$w.stop"
    wait "$sampler_pid" || true
    sampler_pid=""
    read -r own1 reaped1 busy1 st1 d1 t2 < <(counters "$s" "$pm" "$w.final")

    local n back ws rest src
    n=$(txns_of "$dir/logs/rate_$key.log")
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "no transactions in $dir/logs/rate_$key.log"
    RATE_TPS[$key]=$(tps_of "$dir/logs/rate_$key.log")
    read -r back ws rest < <(split_ticks "$w.base" "$w.samples" "$w.final" $(( own1 - own0 )) $(( reaped1 - reaped0 )))
    src=$(( back + ws + rest ))
    SRC[$key]=$(us_per "$src" "$n"); BACK[$key]=$(us_per "$back" "$n"); WS[$key]=$(us_per "$ws" "$n"); REST[$key]=$(us_per "$rest" "$n")
    WAL[$key]=$(( $(lsn_num "$end_lsn") - $(lsn_num "$start_lsn") ))
    WAL[$key]=$(awk -v w="${WAL[$key]}" -v n="$n" 'BEGIN { printf "%.0f", w / n }')
    OTHER0[$key]=$(awk -v b=$(( busy1 - busy0 - src )) -v hz="$hz" -v a="$t0" -v z="$t2" 'BEGIN { printf "%.1f", b / hz / (z - a) * 100 }')
    local lat="$dir/lat/sorted_$key"
    cat "$dir/lat/$key".* | awk '{ print $3 / 1000 }' | sort -n >"$lat"
    P50[$key]=$(percentile 0.50 "$lat"); P95[$key]=$(percentile 0.95 "$lat")
    local note=""
    if [[ $s == b ]]; then
        STORE[$key]=$(us_per $(( st1 - st0 )) "$n"); DAEMON[$key]=$(us_per $(( d1 - d0 )) "$n")
        note=", store side ${STORE[$key]} + daemon ${DAEMON[$key]} µs/txn, all stored ${CATCHUP[$key]} s after pgbench"
    fi
    say "$(printf '(%s) run %s at %s TPS: %.0f TPS, p50 %.2f ms, p95 %.2f ms; source %s µs/txn (backends %s, walsender %s, rest %s), WAL %s B/txn, other work on CPU 0 %s%%%s' \
        "$s" "${key#?}" "$rate" "${RATE_TPS[$key]}" "${P50[$key]}" "${P95[$key]}" "${SRC[$key]}" "${BACK[$key]}" "${WS[$key]}" \
        "${REST[$key]}" "${WAL[$key]}" "${OTHER0[$key]}" "$note")"
}
# full_speed CONFIG LOG SECS: CONFIG's full-speed TPS over SECS seconds, into $tps.
full_speed() {
    pgbench_run "$1" "$2" -T "$3"
    tps=$(tps_of "$2")
    [[ -n "$tps" ]] || die "no TPS in $2"
}

# One checkpoint on every cluster, then none during the runs: the warm-up pays the
# full-page images, and no run pays for them more than another.
checkpoints_query="SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"
declare -A CKPT0=()
for n in a b c store; do
    q "$n" postgres -c "CHECKPOINT"
    CKPT0[$n]=$(q "$n" postgres -c "$checkpoints_query")
done
t_start=$EPOCHREALTIME

# 2. Warm-up and calibration.
tps=""
calibration=""
if [[ $warmup -gt 0 ]]; then
    for s in a d b c; do
        [[ $s != b ]] || start_daemon
        full_speed "$s" "$dir/logs/warmup_$s.log" "$warmup"
        say "($s) warm-up: $(printf '%.0f' "$tps") TPS"
        [[ $s != b ]] || bench_stop_daemon
    done
fi
if [[ -z "$rate" ]]; then
    full_speed a "$dir/logs/calibration_a.log" "$duration"
    calibration=$tps
    rate=$(awk -v t="$calibration" 'BEGIN { printf "%d", t / 2 + 0.5 }')
    [[ "$rate" -ge 1 ]] || die "(a) ran at $calibration TPS: no rate to hold"
    say "calibration: (a) at $(printf '%.0f' "$calibration") TPS; fixed rate $rate TPS"
fi

# 3. The rounds.
declare -A SEEN=()
for (( r = 1; r <= rounds; r++ )); do
    for s in "${pattern[@]}"; do
        SEEN[$s]=$(( ${SEEN[$s]:-0} + 1 ))
        key="$s${SEEN[$s]}"
        [[ $s != b ]] || start_daemon
        full_speed "$s" "$dir/logs/full_$key.log" "$duration"
        TPS[$key]=$tps
        say "($s) run ${SEEN[$s]} at full speed: $(printf '%.0f' "${TPS[$key]}") TPS"
        measure_rate "$s" "$key"
        [[ $s != b ]] || bench_stop_daemon
    done
done
total_s=$(secs "$t_start" "$EPOCHREALTIME")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
checkpoints=0
for n in a b c store; do
    checkpoints=$(( checkpoints + $(q "$n" postgres -c "$checkpoints_query") - CKPT0[$n] ))
done

# 4. The summary.
# stats ARRAY CONFIG: "mean min max" of ARRAY over CONFIG's runs.
stats() {
    local -n values="$1"
    local i all=""
    for (( i = 1; i <= runs; i++ )); do all+=" ${values[$2$i]}"; done
    awk -v v="$all" 'BEGIN { n = split(v, x, " "); lo = hi = x[1]
        for (i = 1; i <= n; i++) { s += x[i]; if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i] }
        printf "%.6f %s %s\n", s / n, lo, hi }'
}
mean() { local m lo hi; read -r m lo hi < <(stats "$1" "$2"); echo "$m"; }
# span ARRAY CONFIG DECIMALS: "mean (min–max)".
span() {
    local m lo hi
    read -r m lo hi < <(stats "$1" "$2")
    printf '%.*f (%.*f–%.*f)' "$3" "$m" "$3" "$lo" "$3" "$hi"
}
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo MET; else echo "NOT MET"; fi; }
label() {
    case "$1" in
        a) echo "(a) no audit" ;;
        d) echo "(d) pgtrail set up, daemon stopped" ;;
        b) echo "(b) pgtrail running" ;;
        c) echo "(c) row trigger" ;;
    esac
}

pg_version=$(q a postgres -c "SHOW server_version")
w2j_version=$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo unknown)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "== what auditing costs the source server, split layout ($(date -u +%Y-%m-%dT%H:%M:%SZ), $cores cores, ${total_s}s of measuring) =="
echo "PostgreSQL $pg_version, wal2json $w2j_version, fsync=$fsync, full_page_writes off, autovacuum off; sources on CPU 0;"
echo "store, daemon, pgbench on CPU 1; pgtrail: $binary ($("$pgtrail" --version), built $(date -u -r "$binary" +%Y-%m-%dT%H:%M:%SZ);"
echo "the repository is at $commit)"
echo "pgbench tpcb-like, -M prepared, $clients clients, $jobs threads, scale $scale; $rounds round(s) of a d b c c b d a:"
rate_from=""
[[ -z "$calibration" ]] || rate_from=$(printf " (half of (a)'s %.0f TPS in a calibration run)" "$calibration")
echo "full speed ${duration}s per run, then fixed rate ${rate_duration}s per run at $rate TPS$rate_from"
echo "load average before $load_before, after $load_after; means over $runs runs per configuration (min–max)"
echo
echo "| | full-speed TPS | at $rate TPS: achieved | p50 latency, ms | p95 latency, ms | WAL bytes per txn |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for s in a d b c; do
    echo "| $(label "$s") | $(span TPS "$s" 0) | $(span RATE_TPS "$s" 0) | $(span P50 "$s" 2) | $(span P95 "$s" 2) | $(span WAL "$s" 0) |"
done
echo
cpu_a=$(mean SRC a)
echo "| source CPU per txn, µs | all | client backends | walsender | the rest | overhead over (a) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for s in a d b c; do
    over="—"
    [[ $s == a ]] || over=$(awk -v x="$(mean SRC "$s")" -v a="$cpu_a" 'BEGIN { printf "%+.0f", x - a }')
    echo "| $(label "$s") | $(span SRC "$s" 0) | $(span BACK "$s" 0) | $(span WS "$s" 0) | $(span REST "$s" 0) | $over |"
done
echo
echo "(b) store side, on CPU 1, per transaction: store cluster $(span STORE b 0) µs, daemon $(span DAEMON b 0) µs;"
echo "    everything stored $(span CATCHUP b 1) s after pgbench ended"
read -r other_mean other_lo other_hi < <(for k in "${!OTHER0[@]}"; do echo "${OTHER0[$k]}"; done \
    | awk 'NR == 1 { lo = hi = $1 } { s += $1; if ($1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { printf "%.0f %.0f %.0f\n", s / NR, lo, hi }')
echo "other work on CPU 0 during the fixed-rate runs (busy beyond the source's): mean $other_mean%, per run $other_lo% to $other_hi%"
if [[ $other_mean -gt 25 ]]; then
    echo "note: other work took $other_mean% of CPU 0: the sources shared their core, so TPS is low and latency long;"
    echo "      CPU per transaction suffers less (sharing caches still inflates it): read the ratios"
fi
for s in a d b c; do
    if awk -v r="$rate" -v t="$(mean RATE_TPS "$s")" 'BEGIN { exit !(t < 0.97 * r) }'; then
        echo "note: $(label "$s") did not hold the fixed rate: its latency there measures a queue that grew all run long"
    fi
done
[[ $checkpoints -eq 0 ]] || echo "note: $checkpoints checkpoint(s) happened during the runs"

tps_a=$(mean TPS a); tps_b=$(mean TPS b); tps_c=$(mean TPS c); tps_d=$(mean TPS d)
over_b=$(calc "$(mean SRC b) - $cpu_a"); over_c=$(calc "$(mean SRC c) - $cpu_a"); over_d=$(calc "$(mean SRC d) - $cpu_a")
echo
echo "ratios (of the means) and the targets of issue 11:"
if awk "BEGIN { exit !($over_c > 0) }"; then
    ratio_b=$(calc "$over_b / $over_c"); ratio_d=$(calc "$over_d / $over_c")
    printf '  source CPU overhead (b)/(c): %+.0f / %+.0f µs = %s   bar <= 1.0 %s; goal <= 0.5 %s\n' "$over_b" "$over_c" "$ratio_b" \
        "$(verdict "$ratio_b <= 1.0")" "$(verdict "$ratio_b <= 0.5")"
    printf '  source CPU overhead (d)/(c): %+.0f / %+.0f µs = %s   bar <= 1.0 %s; goal <= 0.5 %s\n' "$over_d" "$over_c" "$ratio_d" \
        "$(verdict "$ratio_d <= 1.0")" "$(verdict "$ratio_d <= 0.5")"
else
    echo "  source CPU overhead: (c)'s is $over_c µs, not above (a): no ratio (the run was too noisy; run it again)"
fi
ratio_bc=$(calc "$tps_b / $tps_c"); ratio_ba=$(calc "$tps_b / $tps_a")
echo "  full-speed TPS b/c: $ratio_bc   bar >= 1.0 $(verdict "$ratio_bc >= 1.0")"
echo "  full-speed TPS b/a: $ratio_ba   goal >= 0.85 $(verdict "$ratio_ba >= 0.85")"
echo "  full-speed TPS d/a: $(calc "$tps_d / $tps_a"), c/a: $(calc "$tps_c / $tps_a")"
