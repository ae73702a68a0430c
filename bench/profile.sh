#!/usr/bin/env bash
# Where the CPU goes while pgtrail drains a replication backlog: CPU seconds of
# the three processes that do the work (the walsender decoding with wal2json,
# the store backend running pgtrail's COPY, pgtrail itself) and pgtrail's
# functions by self time.
#
#   bash bench/profile.sh [options]
#
#   --transactions N   pgbench transactions in the backlog (default 250000 with perf,
#                      25000 with callgrind, which runs pgtrail ~50x slower); 4 row
#                      changes each
#   --clients N        pgbench clients (default 4; the scale factor is the same N)
#   --full             REPLICA IDENTITY FULL on the pgbench tables (default: DEFAULT)
#   --tool T           perf, callgrind or auto (default): perf when `perf record`
#                      can sample here, else valgrind's callgrind
#   --freq HZ          perf sampling frequency (default 999)
#   --call-graph M     perf call graphs: fp (default, `-g`) or dwarf (callers of
#                      Rust code too, at a much higher cost in overhead and data)
#   --top N            functions listed for pgtrail (default 15)
#   --build            cargo build --release first (default: only if the binary is missing)
#   --dir DIR          work directory (default target/bench/profile; wiped first)
#   --keep             leave the cluster running and DIR (with perf.data or
#                      callgrind.out, pidstat.log, pgtrail.log) in place at the end
#
# Method:
#  1-3. the backlog is made the way bench/capture.sh makes it (whose steps are
#     not sourceable, so they are repeated here): a private cluster
#     (scripts/pgcluster.sh; fsync=off, shared_buffers=1GB, max_wal_size=16GB,
#     checkpoint_timeout=1h), `pgbench -i -s CLIENTS`, `pgtrail setup` (store
#     database `pgtrail` on the same server, slot bench_pgtrail), then
#     `pgbench -n -M prepared -t` with the daemon not running, the end LSN, and
#     a marker transaction past it;
#  4. perf: `perf record -a -g -e cpu-clock` starts system-wide before
#     `pgtrail run` does, so every sample of the drain is caught, including the
#     walsender's and the store backend's; callgrind: pgtrail runs under
#     `valgrind --tool=callgrind`. The two backends are found in
#     pg_replication_slots.active_pid and pg_stat_activity (application_name
#     pgtrail, database pgtrail), and `pidstat -u 1` samples the three;
#  5. the drain ends at the first poll (every 200 ms, psql reading
#     pgtrail.checkpoints) that shows the end LSN stored; each process's CPU is
#     then read from /proc/PID/stat (all three were born with the drain, so their
#     whole user+system time is the drain's), the machine's from /proc/stat, and
#     pgtrail gets SIGTERM; the entry count is checked against pgbench's;
#  6. printed: CPU seconds by process, and the top functions by self time of
#     pgtrail (perf: share of pgtrail's samples, and that share of its CPU
#     seconds; callgrind: share of instructions executed), then the walsender's
#     and the store backend's top functions (perf only).
#
# On a VM without hardware counters perf samples on the cpu-clock software
# timer, which is what this script asks for anyway. With `-g` (frame pointers)
# the callers of Rust functions are mostly lost (the release build keeps none),
# but self time, which is what is reported, does not depend on them.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"

transactions=""
clients=4
identity=DEFAULT
tool=auto
freq=999
call_graph=fp
top=15
build=0
keep=0
dir="$repo/target/bench/profile"

bench=profile
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --transactions) transactions="${2:?--transactions needs a number}"; shift 2 ;;
        --clients) clients="${2:?--clients needs a number}"; shift 2 ;;
        --full) identity=FULL; shift ;;
        --tool) tool="${2:?--tool needs perf, callgrind or auto}"; shift 2 ;;
        --freq) freq="${2:?--freq needs a number}"; shift 2 ;;
        --call-graph) call_graph="${2:?--call-graph needs fp or dwarf}"; shift 2 ;;
        --top) top="${2:?--top needs a number}"; shift 2 ;;
        --build) build=1; shift ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage ;;
        *) echo "profile: unknown option $1" >&2; usage ;;
    esac
done
[[ "$tool" =~ ^(perf|callgrind|auto)$ ]] || die "--tool must be perf, callgrind or auto"
[[ "$call_graph" =~ ^(fp|dwarf)$ ]] || die "--call-graph must be fp or dwarf"
[[ "$clients" =~ ^[1-9][0-9]*$ ]] || die "--clients must be a positive integer"
[[ "$freq" =~ ^[1-9][0-9]*$ ]] || die "--freq must be a positive integer"
[[ "$top" =~ ^[1-9][0-9]*$ ]] || die "--top must be a positive integer"
[[ -z "$transactions" || "$transactions" =~ ^[1-9][0-9]*$ ]] || die "--transactions must be a positive integer"

# sysstat for pidstat; linux-perf for perf; valgrind for the fallback.
bash "$repo/scripts/install-deps.sh" sysstat linux-perf valgrind >&2
pgc_find_bin

# Can perf sample here? Hardware counters are often missing in VMs; the
# cpu-clock software event is enough for a profile.
hw_counters="yes"
if ! perf stat -x, -e instructions true 2>&1 >/dev/null | grep -q '^[0-9]'; then
    hw_counters="no (perf stat -e instructions: not supported)"
fi
perf_ok=0
probe=$(mktemp -d)
if perf record -q -e cpu-clock -F 999 -g -o "$probe/p.data" -- \
        sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done' >/dev/null 2>&1 \
    && [[ $(perf report -i "$probe/p.data" --stdio 2>/dev/null | sed -n 's/^# Samples: \([0-9]*\).*/\1/p' | head -n1) -gt 0 ]]; then
    perf_ok=1
fi
rm -rf "$probe"
if [[ $tool == auto ]]; then
    if [[ $perf_ok -eq 1 ]]; then tool=perf; else tool=callgrind; fi
elif [[ $tool == perf && $perf_ok -eq 0 ]]; then
    die "perf record cannot sample on this machine: use --tool callgrind"
fi
if [[ -z "$transactions" ]]; then
    if [[ $tool == perf ]]; then transactions=250000; else transactions=25000; fi
fi
say "tool: $tool (hardware counters: $hw_counters)"

per_client=$(( (transactions + clients - 1) / clients ))
transactions=$(( per_client * clients ))
jobs=$(( clients < $(nproc) ? clients : $(nproc) ))
expected_rows=$(( transactions * 4 ))

pgtrail="$release_dir/pgtrail"
if [[ ! -x "$pgtrail" ]]; then build=1; fi
build_pgtrail "$build"

daemon_pid=""
perf_pid=""
pidstat_pid=""
stop_all() {
    stop_pid "$pidstat_pid"
    stop_pid "$perf_pid" INT
    stop_pid "$daemon_pid"
}
bench_trap_exit


# 1. Cluster, pgbench tables, store database.
bench_pgbench_cluster off

# 2. pgtrail setup and its slot, before the backlog.
cfg="$dir/pgtrail.toml"
cat >"$cfg" <<EOF
# Written by bench/profile.sh
[source]
url  = "postgres://postgres@127.0.0.1:$port/bench"
slot = "bench_pgtrail"
[store]
url  = "postgres://postgres@127.0.0.1:$port/pgtrail"
[capture]
tables  = ["public.pgbench_accounts", "public.pgbench_tellers", "public.pgbench_branches", "public.pgbench_history"]
exclude = []
EOF
say "pgtrail setup"
"$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }
if [[ $(psql_db bench -At -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_pgtrail'") != 1 ]]; then
    psql_db bench -At -c "SELECT pg_create_logical_replication_slot('bench_pgtrail', 'wal2json')" >/dev/null
fi

# 3. The backlog, with nothing reading it.
bench_backlog
end_num=$(lsn_num "$end_lsn")
say "backlog done: $expected_rows row changes, end LSN $end_lsn"

# 4. Profilers, then the daemon.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $tool == perf ]]; then
    cg=(-g)
    # shellcheck disable=SC2054 # dwarf,16384 is one argument
    [[ $call_graph == dwarf ]] && cg=(--call-graph dwarf,16384)
    perf record -q -a -e cpu-clock -F "$freq" "${cg[@]}" -o "$dir/perf.data" 2>"$dir/perf-record.log" &
    perf_pid=$!
    sleep 0.5
    kill -0 "$perf_pid" 2>/dev/null || { cat "$dir/perf-record.log" >&2; die "perf record did not start"; }
    launcher=()
    stall_limit=120
else
    launcher=(valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" --log-file="$dir/valgrind.log")
    stall_limit=900
fi
say "pgtrail run draining bench_pgtrail${launcher:+ under callgrind}"
busy0=$(machine_busy_ticks)
t0=$(now)
NO_COLOR=1 PGTRAIL_LOG="${PGTRAIL_LOG:-info}" "${launcher[@]}" "$pgtrail" --config "$cfg" run 2>"$dir/pgtrail.log" &
daemon_pid=$!

walsender_pid=""
store_pids=""
catalog_pids=""
last_progress="$t0"
last_seen=""
poll=0.2
while :; do
    sleep "$poll"
    kill -0 "$daemon_pid" 2>/dev/null || { tail -n 30 "$dir/pgtrail.log" >&2; die "pgtrail run exited before draining the backlog"; }
    if [[ -z "$walsender_pid" || -z "$store_pids" ]]; then
        walsender_pid=$(psql_db postgres -At -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'bench_pgtrail' AND active")
        store_pids=$(psql_db postgres -At -c "SELECT string_agg(pid::text, ',' ORDER BY backend_start) FROM pg_stat_activity
            WHERE datname = 'pgtrail' AND application_name = 'pgtrail' AND backend_type = 'client backend'")
        catalog_pids=$(psql_db postgres -At -c "SELECT string_agg(pid::text, ',' ORDER BY backend_start) FROM pg_stat_activity
            WHERE datname = 'bench' AND application_name = 'pgtrail' AND backend_type = 'client backend'")
        if [[ -n "$walsender_pid" && -n "$store_pids" ]]; then
            say "walsender $walsender_pid, store backend $store_pids, pgtrail $daemon_pid"
            stdbuf -oL pidstat -h -u -p "$daemon_pid,$walsender_pid,$store_pids" 1 >"$dir/pidstat.log" 2>&1 &
            pidstat_pid=$!
        fi
    fi
    stored=$(psql_db pgtrail -At -c "SELECT lsn FROM pgtrail.checkpoints WHERE slot = 'bench_pgtrail'" 2>/dev/null || true)
    t=$(now)
    if [[ "$stored" == */* ]] && (( $(lsn_num "$stored") >= end_num )); then
        break
    fi
    if [[ "$stored" != "$last_seen" ]]; then
        last_seen="$stored"
        last_progress="$t"
    elif awk -v a="$last_progress" -v b="$t" -v l="$stall_limit" 'BEGIN { exit !(b - a > l) }'; then
        tail -n 30 "$dir/pgtrail.log" >&2
        die "no progress for $stall_limit s (last_stored_lsn ${stored:-none})"
    fi
done
t1="$t"
busy1=$(machine_busy_ticks)
[[ -n "$walsender_pid" && -n "$store_pids" ]] || die "the walsender or the store backend was never seen"

# 5. CPU of each process, read while all are still alive.
pgtrail_ticks=$(cpu_ticks "$daemon_pid")
pgtrail_tids=$(find "/proc/$daemon_pid/task" -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | paste -sd, -)
walsender_ticks=$(cpu_ticks "$walsender_pid")
store_ticks=0
for p in ${store_pids//,/ }; do store_ticks=$(( store_ticks + $(cpu_ticks "$p") )); done
catalog_ticks=0
for p in ${catalog_pids//,/ }; do catalog_ticks=$(( catalog_ticks + $(cpu_ticks "$p") )); done
if [[ $tool == perf ]]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    perf_pid=""
fi
kill -INT "$pidstat_pid" 2>/dev/null || true
wait "$pidstat_pid" 2>/dev/null || true
pidstat_pid=""
kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
[[ $rc -eq 0 ]] || say "warning: pgtrail run exited with status $rc after SIGTERM"
pgtrail_pid="$daemon_pid"
daemon_pid=""

stored_rows=$(psql_db pgtrail -At -c "SELECT count(*) FROM pgtrail.entries")
[[ "$stored_rows" == "$expected_rows" ]] || die "pgtrail stored $stored_rows entries, pgbench made $expected_rows row changes"

# 6. Report.
wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
rate=$(awk -v n="$expected_rows" -v s="$wall_s" 'BEGIN { printf "%.0f", n / s }')
pct_core() { awk -v c="$1" -v w="$wall_s" 'BEGIN { printf "%.0f%%", 100 * c / w }'; }
# pidstat_stats PID: "mean/peak" %CPU of PID over the samples where it was seen.
pidstat_stats() {
    awk -v pid="$1" '
        /^#/ { for (i = 1; i <= NF; i++) { if ($i == "PID") pc = i - 1; if ($i == "%CPU") cc = i - 1 } next }
        /^Average/ { next }
        cc && $pc == pid { s += $cc; n++; if ($cc > m) m = $cc }
        END { if (n) printf "%.0f%% / %.0f%% (%d samples)", s / n, m, n; else printf "-" }' "$dir/pidstat.log"
}
pgtrail_s=$(ticks_to_s "$pgtrail_ticks")
walsender_s=$(ticks_to_s "$walsender_ticks")
store_s=$(ticks_to_s "$store_ticks")
catalog_s=$(ticks_to_s "$catalog_ticks")
machine_s=$(ticks_to_s $(( busy1 - busy0 )))
other_s=$(awk -v m="$machine_s" -v a="$pgtrail_s" -v b="$walsender_s" -v c="$store_s" -v d="$catalog_s" \
    'BEGIN { printf "%.2f", m - a - b - c - d }')
pg_version=$(psql_db postgres -At -c "SHOW server_version")
w2j_version=$(dpkg-query -W -f='${Version}' postgresql-15-wal2json 2>/dev/null || echo unknown)

echo
echo "== pgtrail profile ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average before $load_before) =="
echo "PostgreSQL $pg_version, wal2json $w2j_version, fsync=off, REPLICA IDENTITY $identity, store on the same server"
echo "backlog: $transactions pgbench tpcb-like transactions ($clients clients) = $expected_rows row changes; all stored and counted"
if [[ $tool == perf ]]; then
    echo "profiler: perf record -a -e cpu-clock -F $freq $([[ $call_graph == dwarf ]] && echo '--call-graph dwarf' || echo '-g') (hardware counters: $hw_counters)"
else
    echo "profiler: valgrind --tool=callgrind on pgtrail (perf cannot sample here); the CPU split below is distorted by it"
fi
echo "drain: ${wall_s}s wall from start to the end LSN stored -> $rate row changes/s while profiled"
echo
echo "| process | CPU s (user+sys) | share of one core over the drain | pidstat %CPU mean / peak |"
echo "| --- | ---: | ---: | --- |"
echo "| walsender (wal2json decoding), pid $walsender_pid | $walsender_s | $(pct_core "$walsender_s") | $(pidstat_stats "$walsender_pid") |"
echo "| store backend (COPY into pgtrail.entries), pid $store_pids | $store_s | $(pct_core "$store_s") | $(pidstat_stats "${store_pids%%,*}") |"
echo "| pgtrail (decode, assemble, encode COPY), pid $pgtrail_pid | $pgtrail_s | $(pct_core "$pgtrail_s") | $(pidstat_stats "$pgtrail_pid") |"
[[ -z "$catalog_pids" ]] || echo "| pgtrail's catalog connection (source), pid $catalog_pids | $catalog_s | $(pct_core "$catalog_s") | |"
echo "| everything else on the machine (poller psql, other postgres processes, other work) | $other_s | $(pct_core "$other_s") | |"
echo "| whole machine busy | $machine_s | $(pct_core "$machine_s") of $(nproc) | |"
echo

# perf_top PID N CPU_S: markdown rows of PID's top N functions by self samples.
# Instances that demangle to the same name (generic code instantiated for
# several types) are summed.
perf_top() {
    local pid="$1" n="$2" cpu_s="$3"
    perf report -i "$dir/perf.data" --pid "$pid" --no-children --percentage relative --sort dso,symbol \
        --stdio -g none --percent-limit 0 -t $'\t' 2>/dev/null \
        | awk -F'\t' '
            /^#/ || NF < 3 { next }
            {
                pct = $1; gsub(/[ %]/, "", pct)
                dso = $2; gsub(/^ +| +$/, "", dso)
                sym = $3; sub(/^ *\[[^]]*\] +/, "", sym); gsub(/ +$/, "", sym)
                key = sym "\t" dso; share[key] += pct
            }
            END { for (k in share) printf "%.4f\t%s\n", share[k], k }' \
        | sort -t$'\t' -k1,1gr \
        | awk -F'\t' -v n="$n" -v cpu="$cpu_s" '
            NR <= n {
                sym = $2; if (length(sym) > 110) sym = substr(sym, 1, 107) "..."
                gsub(/\|/, "\\|", sym)
                printf "| %d | `%s` | %s | %.1f%% | %.2f |\n", NR, sym, $3, $1, $1 * cpu / 100
            }'
}
# perf_tids [--pid P]: "samples<TAB>tid:comm" per thread, most samples first.
perf_tids() {
    perf report -i "$dir/perf.data" "$@" --stdio -g none --sort pid -F sample,pid -t $'\t' 2>/dev/null \
        | awk -F'\t' '!/^#/ && NF >= 2 { s = $1; gsub(/ /, "", s); p = $2; gsub(/^ +| +$/, "", p); print s "\t" p }' \
        | sort -t$'\t' -k1,1nr
}
if [[ $tool == perf ]]; then
    samples=$(perf_tids --pid "$pgtrail_pid" | awk -F'\t' '{ s += $1 } END { print s + 0 }')
    threads=$(perf_tids --pid "$pgtrail_pid" | awk -F'\t' -v t="$samples" '
        { n = $2; sub(/^[0-9]+:/, "", n); printf "%s%s %.0f%%", sep, $2, 100 * $1 / t; sep = ", " }')
    echo "pgtrail's top $top functions by self time ($samples samples; seconds = share x its ${pgtrail_s}s of CPU)."
    echo "Its threads by samples: $threads."
    echo
    echo "| # | function | object | self % of pgtrail | self CPU s |"
    echo "| ---: | --- | --- | ---: | ---: |"
    perf_top "$pgtrail_pid" "$top" "$pgtrail_s"
    echo
    echo "walsender's top 8 (pid $walsender_pid):"
    echo
    echo "| # | function | object | self % of walsender | self CPU s |"
    echo "| ---: | --- | --- | ---: | ---: |"
    perf_top "$walsender_pid" 8 "$walsender_s"
    echo
    echo "store backend's top 8 (pid ${store_pids%%,*}):"
    echo
    echo "| # | function | object | self % of store backend | self CPU s |"
    echo "| ---: | --- | --- | ---: | ---: |"
    perf_top "${store_pids%%,*}" 8 "$store_s"
    echo
    mine="$pgtrail_tids,$walsender_pid,$store_pids,$catalog_pids"
    others=$(perf_tids | awk -F'\t' -v mine=",$mine," -v hz="$freq" '
        { tid = $2; sub(/:.*/, "", tid); if (index(mine, "," tid ",")) next
          c = $2; sub(/^[0-9]+:/, "", c); if (c == "swapper") next; s[c] += $1 }
        END { for (c in s) printf "%d\t%s\n", s[c], c }' \
        | sort -t$'\t' -k1,1nr | awk -F'\t' -v hz="$freq" 'NR <= 6 { printf "%s%s %.2fs", sep, $2, $1 / hz; sep = ", " }')
    echo "other processes on the machine during the profile (perf samples / $freq Hz, top 6): $others"
else
    out="$dir/callgrind.out"
    [[ -s "$out" ]] || die "no callgrind output ($dir/valgrind.log: $(tail -n 3 "$dir/valgrind.log"))"
    total=$(callgrind_annotate --inclusive=no "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { t = $1; gsub(/,/, "", t) } END { print t }')
    echo "pgtrail's top $top functions by self cost (instructions executed, callgrind; $total in all):"
    echo
    echo "| # | function | object | self % of instructions |"
    echo "| ---: | --- | --- | ---: |"
    # One function's cost can be spread over several source files (inlined
    # code): sum it by function name.
    callgrind_annotate --inclusive=no --auto=no --threshold=100 "$out" 2>/dev/null \
        | awk '
            /file:function/ { body = 1; next }
            body && $1 ~ /^[0-9,]+$/ && NF >= 2 {
                ir = $1; gsub(/,/, "", ir)
                rest = $0; sub(/^ *[0-9,]+ +(\([0-9. %]+\) +)?/, "", rest)
                obj = ""; if (match(rest, / \[[^]]*\]$/)) { obj = substr(rest, RSTART + 2, RLENGTH - 3); rest = substr(rest, 1, RSTART - 1) }
                sub(/^[^:]*:/, "", rest); sub(/\047[0-9]+$/, "", rest)
                n2 = split(obj, parts, "/"); obj = parts[n2]
                cost[rest] += ir; if (obj != "" && !(rest in where)) where[rest] = obj
            }
            END { for (f in cost) printf "%d\t%s\t%s\n", cost[f], f, where[f] }' \
        | sort -t$'\t' -k1,1nr \
        | awk -F'\t' -v n="$top" -v total="$total" '
            NR <= n {
                f = $2; if (length(f) > 110) f = substr(f, 1, 107) "..."
                gsub(/\|/, "\\|", f)
                printf "| %d | `%s` | %s | %.1f%% |\n", NR, f, $3, 100 * $1 / total
            }'
fi
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
