#!/usr/bin/env bash
# The store migration's benchmark: a store of 5,000,000 synthetic entries in the
# unpartitioned layout of an earlier pgtrail (before migration 16), moved into the
# time partitions by `pgtrail setup` of this build, timed, with its peak memory and
# disk, and checked afterwards.
#
#   bash bench/migrate.sh [options]
#
#   --entries N      entries in the old store (default 5000000)
#   --days D         days of commit times they span, ending now (default 365)
#   --old-commit C   the commit the old layout's pgtrail and examples/web_fill are built
#                    from (default 8d7c8b1, main just before migration 16), in a git
#                    worktree of its own with the same CARGO_TARGET_DIR (then this build
#                    is compiled again); the binaries are kept in
#                    $CARGO_TARGET_DIR/bench-old/COMMIT/, so that is done once
#   --old-bin DIR    take the old pgtrail and web_fill from DIR instead
#   --batch N        PGTRAIL_MIGRATE_BATCH: old ids copied per store transaction
#                    (default: pgtrail's own, 50,000)
#   --dir DIR        work directory (default target/bench/migrate; wiped first)
#   --keep           keep DIR and its clusters at the end (stopped)
#   --no-build       use target/release/pgtrail as it is (the old binaries are still
#                    built if they are not in the cache)
#
# Method:
#  1. two private clusters (scripts/pgcluster.sh): the source (database `app`, one
#     empty table) and the store (fsync=off, shared_buffers=1GB, max_wal_size=4GB,
#     checkpoint_timeout=1h): apart, so that the slot pins none of the store's WAL
#     and the upgrade finds its slot as a stopped daemon left it;
#  2. the old build's `pgtrail setup` (the store's migrations up to 15), then its
#     examples/web_fill (the same synthetic entries bench/web.sh uses, hashed into
#     the capture chain by that build's own code) through COPY into the one table
#     `pgtrail.entries` with all its indexes; the capture chain's head set to the
#     last entry, as capture would have left it; VACUUM (ANALYZE);
#  3. what the old table holds: entries by source (as the migration reads a row
#     stored before sources had ids), by action, and the sum of their ids;
#  4. this build's `pgtrail setup` under GNU time (wall time, peak RSS of pgtrail),
#     its progress lines kept in DIR/setup.log, while the store's database and WAL
#     sizes are sampled every second (the peak: both layouts exist side by side
#     until the end); the load average is read before and after;
#  5. afterwards: the same counts from the partitions, the old table gone and the
#     migration marked done, how many monthly partitions hold entries, and
#     `pgtrail verify --json` must find every chain intact with every entry.
# Prints the figures as a table row for docs/benchmarks.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=migrate
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

entries=5000000
days=365
old_commit=8d7c8b1
old_bin=""
batch=""
dir="$repo/target/bench/migrate"
keep=0
build=1

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --entries) entries="${2:?--entries needs a number}"; shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --old-commit) old_commit="${2:?--old-commit needs a commit}"; shift 2 ;;
        --old-bin) old_bin=$(pgc_abspath "${2:?--old-bin needs a directory}"); shift 2 ;;
        --batch) batch="${2:?--batch needs a number}"; shift 2 ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --keep) keep=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) usage ;;
        *) echo "migrate: unknown option $1" >&2; usage ;;
    esac
done
[[ "$entries" =~ ^[1-9][0-9]*$ ]] || die "--entries must be a positive integer"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer"
[[ -z "$batch" || "$batch" =~ ^[1-9][0-9]*$ ]] || die "--batch must be a positive integer"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is needed for the peak RSS: apt-get install time"

# The old binaries, built first: they share the target directory, so this build
# comes after them and is what target/release holds at the end.
if [[ -z "$old_bin" ]]; then
    full=$(git -C "$repo" rev-parse --verify "$old_commit^{commit}") || die "--old-commit: no commit $old_commit"
    [[ -z "$(git -C "$repo" ls-tree --name-only "$full" sql/store/0016_partitioned.sql)" ]] \
        || die "--old-commit: $old_commit already has migration 16 (the partitioned layout)"
    old_bin="${CARGO_TARGET_DIR:-$repo/target}/bench-old/$full"
    if [[ ! -x "$old_bin/pgtrail" || ! -x "$old_bin/web_fill" ]]; then
        src="${CARGO_TARGET_DIR:-$repo/target}/bench-old/src-$full"
        say "building pgtrail and examples/web_fill of $old_commit in $src"
        git -C "$repo" worktree remove --force "$src" 2>/dev/null || true
        git -C "$repo" worktree add --detach "$src" "$full" >/dev/null
        (cd "$src" && export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" \
            && cargo build --release --quiet && cargo build --release --quiet --example web_fill)
        mkdir -p "$old_bin"
        cp "$release_dir/pgtrail" "$release_dir/examples/web_fill" "$old_bin/"
        git -C "$repo" worktree remove --force "$src"
        # Cargo hashes a path package's artifacts by its path relative to the
        # workspace, so the old build replaced this one's, and its fingerprints now
        # look fresh: newer crate roots make this build compile again.
        touch "$repo/src/lib.rs" "$repo/src/main.rs"
        build=1
    fi
fi
[[ -x "$old_bin/pgtrail" && -x "$old_bin/web_fill" ]] || die "no pgtrail and web_fill in $old_bin"
pgtrail="$release_dir/pgtrail"
build_pgtrail "$build"

pgc_find_bin
pgc_destroy "$dir/store" 2>/dev/null || true
pgc_destroy "$dir/source" 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir"
sampler_pid=""
stop_all() {
    stop_pid "$sampler_pid"
    if [[ $keep -eq 1 ]]; then
        pgc_stop "$dir/store" || true
        pgc_stop "$dir/source" || true
    else
        pgc_destroy "$dir/store" || true
        pgc_destroy "$dir/source" || true
    fi
}
# The clusters are in DIR/store and DIR/source; stop_all keeps or destroys them.
migrate_cleanup() {
    local rc=$?
    stop_all
    [[ $keep -eq 1 ]] && say "kept $dir (its clusters stopped)"
    [[ $keep -eq 1 ]] || rm -rf "$dir"
    exit "$rc"
}
bench_trap_exit migrate_cleanup

pgc_start "$dir/source"
source_port="$PGC_PORT"
pgc_psql "$dir/source" -c "CREATE DATABASE app" >/dev/null
# setup wants a table to capture; this one is never written.
pgc_psql "$dir/source" -d app -c "CREATE TABLE public.placeholder (id int PRIMARY KEY)" >/dev/null
pgc_start "$dir/store" "fsync=off" "max_wal_size=4GB" "checkpoint_timeout=1h" "shared_buffers=1GB"
store_port="$PGC_PORT"
store() { pgc_psql "$dir/store" -d pgtrail -At "$@"; }
cfg="$dir/pgtrail.toml"
cat >"$cfg" <<CONFIG
[source]
url  = "postgres://postgres@127.0.0.1:$source_port/app"
slot = "bench_migrate"
[store]
url  = "postgres://postgres@127.0.0.1:$store_port/pgtrail"
[capture]
tables = ["public.*"]
CONFIG

# 2. The old store.
"$old_bin/pgtrail" --config "$cfg" setup >"$dir/old-setup.log" 2>&1 \
    || { cat "$dir/old-setup.log" >&2; die "the old pgtrail setup failed"; }
say "filling the old layout with $entries entries over $days days (old examples/web_fill | COPY)"
t0=$(now)
"$old_bin/web_fill" --entries "$entries" --days "$days" --end "$(date +%s)" \
    | store -c "$("$old_bin/web_fill" --copy-sql)" >/dev/null
# The fill wrote the chain from an empty store; its head is the last entry's hash.
store -c "UPDATE pgtrail.chain_heads SET entries = entries + $entries,
    hash = (SELECT hash FROM pgtrail.entries ORDER BY id DESC LIMIT 1) WHERE source = 1" >/dev/null
store -c "VACUUM (ANALYZE) pgtrail.entries" >/dev/null
t1=$(now)
fill_s=$(secs "$t0" "$t1")
[[ $(store -c "SELECT relkind FROM pg_class WHERE oid = 'pgtrail.entries'::regclass") == r ]] \
    || die "the old build's store is not the unpartitioned layout"

# 3. What the old table holds. A row stored before sources had ids is read as
# the first source's with an LSN and pgtrail's own (0) without, as the migration does.
counts_sql() { # TABLE: "source action count sum(id)" lines
    echo "SELECT src || ' ' || action || ' ' || count(*) || ' ' || sum(id)
          FROM (SELECT coalesce(source, CASE WHEN lsn IS NULL THEN 0 ELSE 1 END) src, action, id FROM $1) e
          GROUP BY src, action ORDER BY 1"
}
store -c "$(counts_sql pgtrail.entries)" >"$dir/counts.before"
total=$(store -c "SELECT count(*) FROM pgtrail.entries")
size_before=$(store -c "SELECT pg_database_size('pgtrail')")

# 4. The upgrade, sampled.
sample() { # every second: the store database's size plus the WAL's, in bytes
    while :; do
        store -c "SELECT pg_database_size('pgtrail') + (SELECT sum(size) FROM pg_ls_waldir())" 2>/dev/null || true
        sleep 1
    done
}
sample >"$dir/sizes" &
sampler_pid=$!
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "pgtrail setup (this build) on the old store"
t0=$(now)
knobs=(PGTRAIL_LOG=info)
[[ -z "$batch" ]] || knobs+=("PGTRAIL_MIGRATE_BATCH=$batch")
env "${knobs[@]}" /usr/bin/time -f 'time %e s, peak RSS %M KiB' -o "$dir/time" \
    "$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 \
    || { cat "$dir/setup.log" >&2; die "pgtrail setup failed on the old store"; }
t1=$(now)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_pid "$sampler_pid"
sampler_pid=""
setup_s=$(secs "$t0" "$t1")
moved=$(sed -n 's/.*moved \([0-9]*\) entries into time partitions in \([0-9.]*\) s.*/\1 \2/p' "$dir/setup.log")
[[ -n "$moved" ]] || { cat "$dir/setup.log" >&2; die "setup did not say it moved the entries"; }
read -r moved_n copy_s <<<"$moved"
rss_kib=$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' "$dir/time")
peak=$(sort -n "$dir/sizes" | tail -n 1)

# 5. The checks.
[[ $(store -c "SELECT relkind FROM pg_class WHERE oid = 'pgtrail.entries'::regclass") == p ]] \
    || die "pgtrail.entries is not partitioned after setup"
[[ $(store -c "SELECT to_regclass('pgtrail.entries_unpartitioned') IS NULL AND (SELECT state = 'done' FROM pgtrail.store_migration)") == t ]] \
    || die "the old table is still there, or the migration is not marked done"
store -c "$(counts_sql pgtrail.entries)" >"$dir/counts.after"
# The partitioned table's source is NOT NULL: the old rows' readings must match it.
diff "$dir/counts.before" "$dir/counts.after" >&2 \
    || die "the entries by source and action (count, sum of ids) differ after the move (above)"
[[ "$moved_n" == "$total" ]] || die "setup moved $moved_n entries; the old table held $total"
filled=$(store -c "SELECT count(*) FROM pg_partition_tree('pgtrail.entries') WHERE isleaf AND pg_relation_size(relid) > 0")
size_after=$(store -c "SELECT pg_database_size('pgtrail')")
say "pgtrail verify"
t0=$(now)
report=$("$pgtrail" --config "$cfg" verify --json) || die "verify did not find the store intact: $report"
t1=$(now)
verify_s=$(secs "$t0" "$t1")
read_n=$(grep -o '^{"intact":true,"entries":[0-9]*' <<<"$report" | grep -o '[0-9]*$' || true)
[[ "$read_n" -ge "$total" ]] || die "verify read ${read_n:-no} entries, fewer than the $total moved: $report"

gib() { awk -v b="$1" 'BEGIN { printf "%.1f GiB", b / 1073741824 }'; }
rate=$(awk -v n="$moved_n" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')
echo "== store migration benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)) =="
echo "old store: $total entries over $days days, pgtrail $(git -C "$repo" rev-parse --short "$old_commit" 2>/dev/null || echo "from $old_bin"), filled in $fill_s s (COPY, chain head, VACUUM (ANALYZE))"
echo "batch: ${batch:-the default (50,000)} old ids per transaction; load average $load_before before, $load_after after"
echo
echo "| entries | pgtrail setup s | of which moving s | entries/s | pgtrail peak RSS | store before / peak (with WAL) / after | partitions with entries | verify s |"
echo "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
printf '| %s | %s | %s | %s | %s MiB | %s / %s / %s | %s | %s |\n' "$moved_n" "$setup_s" "$copy_s" "$rate" \
    "$((rss_kib / 1024))" "$(gib "$size_before")" "$(gib "$peak")" "$(gib "$size_after")" "$filled" "$verify_s"
echo
echo "verify: $read_n entries intact (the moved entries and pgtrail's own events); counts by source and action and the sum of ids unchanged"
