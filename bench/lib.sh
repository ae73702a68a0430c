# shellcheck shell=bash
# Helpers shared by the benchmark scripts; sourced after scripts/pgcluster.sh, not run.
# The sourcing script sets $bench (its name, for messages) first, and $dir, $keep
# before calling bench_trap_exit; it may define stop_all() to stop what it started,
# or give bench_trap_exit a cleanup of its own.

say() { echo "$bench: $*" >&2; }
die() { echo "$bench: $*" >&2; exit 1; }

# Where cargo puts release builds: CARGO_TARGET_DIR's, else target/.
release_dir="${CARGO_TARGET_DIR:-$repo/target}/release"

# build_pgtrail 0|1 [EXAMPLE]: runs `cargo build --release` (and of examples/EXAMPLE) when
# asked, then insists the binaries are there.
build_pgtrail() {
    local example="${2:-}"
    if [[ "$1" -eq 1 ]]; then
        say "cargo build --release${example:+ (pgtrail and examples/$example)}"
        (cd "$repo" && cargo build --release --quiet)
        if [[ -n "$example" ]]; then (cd "$repo" && cargo build --release --quiet --example "$example"); fi
    fi
    [[ -x "$release_dir/pgtrail" ]] || die "$release_dir/pgtrail not found (build it, or drop --no-build)"
    if [[ -n "$example" && ! -x "$release_dir/examples/$example" ]]; then
        die "$release_dir/examples/$example not found (build it, or drop --no-build)"
    fi
}

# stop_pid PID [SIGNAL]: stops a background process if it still runs and reaps it.
stop_pid() {
    local pid="$1" sig="${2:-TERM}"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

# On exit: stop what the script started (its stop_all), then keep or destroy the cluster in $dir.
bench_cleanup() {
    local rc=$?
    if declare -F stop_all >/dev/null; then stop_all; fi
    if [[ $keep -eq 1 ]]; then
        say "kept $dir (stop it with: bash scripts/pgcluster.sh destroy $dir)"
    else
        pgc_destroy "$dir" || true
    fi
    exit "$rc"
}
# bench_trap_exit [CLEANUP]: on exit run CLEANUP (default bench_cleanup); INT and TERM exit 130.
# shellcheck disable=SC2120  # CLEANUP is optional: most scripts call it without one
bench_trap_exit() {
    # shellcheck disable=SC2064  # the function's name is meant to be fixed now
    trap "${1:-bench_cleanup}" EXIT
    trap 'exit 130' INT TERM
}

now() { date +%s.%N; }
# secs T0 T1: seconds from T0 to T1 (both from now), to a tenth.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# "X/Y" (hex) -> integer byte position.
lsn_num() {
    local hi="${1%/*}" lo="${1#*/}"
    echo $(( (16#$hi << 32) + 16#$lo ))
}
# json_field NAME JSON: the value of a top-level string or number field.
json_field() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$2"
}
# utime + stime, in clock ticks, summed over the given pids (gone ones count 0).
cpu_ticks() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$(( sum + t ))
    done
    echo "$sum"
}
# Busy (not idle, not iowait) CPU ticks of the whole machine.
machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
ticks_to_s() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; }

psql_db() { local db="$1"; shift; pgc_psql "$dir" -d "$db" "$@"; }

# fill_partitions DAYS END: the SQL that makes the store's partitions for the commit times of
# `examples/web_fill --days DAYS --end END` (END in Unix seconds): one call of
# pgtrail.ensure_partition a day over the span and a day either side (a call for a day whose
# partition exists finds it in the ledger), whatever the store's partition period.
fill_partitions() {
    echo "SELECT count(pgtrail.ensure_partition(to_timestamp($2) - make_interval(days => g))) FROM generate_series(-1, $1 + 1) g"
}

# fill_copy FILL ENTRIES DAYS END: ENTRIES entries from the web_fill program FILL, commit times
# over DAYS days ending at END (Unix seconds), into the store database `pgtrail` in its layout
# since migration 23: the fill's transactions (ids from the sequence's next value up) into
# pgtrail.transactions first, then its entries into pgtrail.entry_rows (ids from their
# sequence), each with COPY from a file in $dir (removed after), then
# pgtrail.transactions_id_seq set past the new ids. Sets $fill_seconds (writing the files) and
# $copy_seconds (the two COPYs). The store's partitions must cover the span (fill_partitions).
fill_copy() {
    local first t0 t1 t2 txns="$dir/fill.transactions" rows="$dir/fill.entry_rows"
    first=$(psql_db pgtrail -At -c "SELECT nextval('pgtrail.transactions_id_seq')")
    t0=$(now)
    "$1" --entries "$2" --days "$3" --end "$4" --first-txn "$first" --transactions-out "$txns" >"$rows"
    t1=$(now)
    psql_db pgtrail -c "$("$1" --copy-sql transactions)" <"$txns" >/dev/null
    psql_db pgtrail -c "$("$1" --copy-sql entry_rows)" <"$rows" >/dev/null
    t2=$(now)
    rm -f "$txns" "$rows"
    psql_db pgtrail -At -c "SELECT setval('pgtrail.transactions_id_seq', max(id)) FROM pgtrail.transactions" >/dev/null
    fill_seconds=$(secs "$t0" "$t1")
    copy_seconds=$(secs "$t1" "$t2")
}

# bench_pgbench_cluster FSYNC: a fresh cluster in $dir (its port in $port) with database
# `bench` made by `pgbench -i -s $clients`, a marker table outside the capture, and the
# pgbench tables' replica identity FULL when $identity is FULL.
bench_pgbench_cluster() {
    pgc_destroy "$dir"
    pgc_start "$dir" "fsync=$1" "max_wal_size=16GB" "checkpoint_timeout=1h" "shared_buffers=1GB"
    port="$PGC_PORT"
    psql_db postgres -c "CREATE DATABASE bench"
    say "pgbench -i -s $clients"
    pgbench -i -q -s "$clients" -h 127.0.0.1 -p "$port" -U postgres bench >"$dir/pgbench-init.log" 2>&1 \
        || { cat "$dir/pgbench-init.log" >&2; die "pgbench -i failed"; }
    psql_db bench -c "CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz DEFAULT now())"
    if [[ $identity == FULL ]]; then
        local t
        for t in accounts tellers branches history; do
            psql_db bench -c "ALTER TABLE pgbench_$t REPLICA IDENTITY FULL"
        done
    fi
}

# bench_backlog_end: sets $end_lsn to where the backlog ends, then writes one marker row
# outside the capture, so that a reader has something past the end to stop on.
bench_backlog_end() {
    end_lsn=$(psql_db bench -At -c "SELECT pg_current_wal_lsn()")
    psql_db bench -c "INSERT INTO bench_marker DEFAULT VALUES"
}

# bench_backlog: $transactions tpcb-like transactions on `bench` with nothing reading the
# slots, then one marker row; sets $end_lsn (the WAL position right after pgbench) and
# $backlog_s, and checks that every transaction happened.
bench_backlog() {
    say "backlog: $transactions tpcb-like transactions ($clients clients x $per_client), daemon not running"
    local t0 t1 history
    t0=$(now)
    pgbench -n -M prepared -c "$clients" -j "$jobs" -t "$per_client" -h 127.0.0.1 -p "$port" -U postgres bench \
        >"$dir/pgbench.log" 2>&1 || { cat "$dir/pgbench.log" >&2; die "pgbench failed"; }
    t1=$(now)
    bench_backlog_end
    history=$(psql_db bench -At -c "SELECT count(*) FROM pgbench_history")
    [[ "$history" == "$transactions" ]] || die "pgbench_history has $history rows; expected $transactions"
    backlog_s=$(secs "$t0" "$t1")
}

# bench_bulk_backlog: $bulk_transactions transactions of $bulk_rows UPDATEs of
# pgbench_accounts each (going round the scale's 100,000 accounts per unit), with
# nothing reading the slots, then the marker row; sets $end_lsn and $backlog_s, and
# checks that every UPDATE happened (each adds 1 to a balance that pgbench -i left 0).
bench_bulk_backlog() {
    say "backlog: $bulk_transactions bulk transactions of $bulk_rows UPDATEs, daemon not running"
    local t0 t1 i lo accounts total
    accounts=$(( clients * 100000 ))
    (( accounts >= bulk_rows )) || die "--bulk: $accounts accounts are fewer than $bulk_rows"
    t0=$(now)
    for ((i = 0; i < bulk_transactions; i++)); do
        lo=$(( (i * bulk_rows) % (accounts - bulk_rows + 1) ))
        echo "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > $lo AND aid <= $(( lo + bulk_rows ));"
    done | psql_db bench -q >/dev/null || die "the bulk backlog failed"
    t1=$(now)
    bench_backlog_end
    total=$(psql_db bench -At -c "SELECT sum(abalance) FROM pgbench_accounts")
    [[ "$total" == "$expected_rows" ]] || die "the bulk backlog made $total row changes; expected $expected_rows"
    backlog_s=$(secs "$t0" "$t1")
}

# The fields of /proc/PID/stat after the command name, which may hold spaces and
# parentheses: the text after its last ") ", where $2 is the parent's pid, $12 + $13 the
# process's own utime + stime and $14 + $15 its reaped children's (cutime + cstime).
# proc_children PID: "pid ticks" (utime + stime) of PID's live children, one a line.
proc_children() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } \
        | awk -v pm="$1" '{ pid = $1; sub(/^.*\) /, "") } $2 == pm { print pid, $12 + $13 }'
}
# proc_own_reaped PID: "own reaped": PID's utime + stime, and its reaped children's.
proc_own_reaped() { awk '{ sub(/^.*\) /, ""); print $12 + $13, $14 + $15 }' "/proc/$1/stat"; }
# proc_tree_ticks PID: CPU ticks of PID, of the children it has reaped and of its live children.
proc_tree_ticks() {
    local own reaped
    read -r own reaped < <(proc_own_reaped "$1")
    proc_children "$1" | awk -v t=$(( own + reaped )) '{ t += $2 } END { print t }'
}
# percentile P FILE: the P-quantile (nearest rank; P from 0 to 1) of a file of sorted numbers.
percentile() {
    awk -v p="$1" -v n="$(wc -l <"$2")" \
        'BEGIN { k = int(p * n); if (k < p * n) k++; if (k < 1) k = 1 } NR == k { print $1; exit }' "$2"
}

# pgtrail on a pgbench database, for the scripts that run its daemon beside pgbench: they set
# $pgtrail (the binary), $cfg (its config file), $slot, $daemon_pid and $catchup_timeout.
# bench_pgtrail_setup SOURCE_URL STORE_URL PSQL...: writes $cfg to capture the four pgbench
# tables with before images through slot $slot into the store at STORE_URL, runs `pgtrail
# setup`, and checks what it installed, with PSQL (a command giving psql on the source
# database, to which -c SQL is added): identity FULL and the context trigger on the four
# tables, and the slot.
bench_pgtrail_setup() {
    local source_url="$1" store_url="$2" full triggers slots
    shift 2
    cat >"$cfg" <<CONF
# Written by bench/$bench.sh
[source]
url  = "$source_url"
slot = "$slot"
[store]
url  = "$store_url"
[capture]
tables  = ["public.pgbench_accounts", "public.pgbench_tellers", "public.pgbench_branches", "public.pgbench_history"]
exclude = []
before_images = true
[web]
listen = "127.0.0.1:0"
CONF
    say "pgtrail setup"
    "$pgtrail" --config "$cfg" setup >"$dir/logs/setup.log" 2>&1 \
        || { cat "$dir/logs/setup.log" >&2; die "pgtrail setup failed"; }
    full=$("$@" -c "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbench\_%' AND relkind = 'r' AND relreplident = 'f'")
    triggers=$("$@" -c "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgfoid = 'pgtrail.emit_context'::regproc AND NOT tgisinternal")
    slots=$("$@" -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND database = current_database()")
    [[ "$full" == 4 && "$triggers" == 4 && "$slots" == 1 ]] \
        || die "after setup: $full of 4 tables with identity FULL, $triggers with the context trigger, $slots slot(s)"
}
# bench_wait_stored LSN START PSQL...: waits until the store's pgtrail.checkpoints reaches
# LSN, PSQL giving psql on the store database; prints the seconds since START
# ($EPOCHREALTIME). Dies if the daemon exits; returns 1 after $catchup_timeout seconds.
bench_wait_stored() {
    local target="$1" start="$2" t
    shift 2
    while :; do
        t=$EPOCHREALTIME
        if [[ $("$@" -c "SELECT lsn >= '$target'::pg_lsn FROM pgtrail.checkpoints WHERE slot = '$slot'") == t ]]; then
            secs "$start" "$t"
            return 0
        fi
        kill -0 "$daemon_pid" 2>/dev/null \
            || { tail -n 30 "$dir/logs/pgtrail.log" >&2; die "pgtrail run exited (log above)"; }
        awk -v a="$start" -v b="$t" -v m="$catchup_timeout" 'BEGIN { exit !(b - a > m) }' && return 1
        sleep 0.1
    done
}
# Stops the daemon ($daemon_pid) with SIGTERM, as a user would, and says if it failed.
bench_stop_daemon() {
    local rc=0
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || rc=$?
    daemon_pid=""
    [[ $rc -eq 0 ]] || say "warning: pgtrail run exited with status $rc after SIGTERM"
}
