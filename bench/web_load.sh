#!/usr/bin/env bash
# The web view under concurrent load: a store of 1,000,000 synthetic entries,
# `pgtrail web` on it, and 8, 32, 128 and 512 clients at once sending a mix of
# the pages people use, with per-route latency percentiles and status counts.
#
#   bash bench/web_load.sh [options]
#
#   --entries N     entries to fill the store with (default 1000000)
#   --levels LIST   comma-separated numbers of concurrent clients (default 8,32,128,512)
#   --seconds N     measured seconds per level (default 30), after --warmup N (default 5)
#   --binary PATH   the pgtrail to measure (default: the one built from this tree), e.g. an
#                   older build kept aside, to compare before and after a change
#   --web TOML      extra [web] keys for the measured server, e.g. 'max_wait = "1s"'
#   --dir DIR       work directory (default target/bench/web_load; wiped first unless --reuse)
#   --reuse DIR     measure the store an earlier `--keep` run left in DIR (no fill)
#   --keep          keep DIR and its cluster's data at the end (the cluster is stopped)
#   --no-build      use the built pgtrail and examples as they are
#
# Method:
#  1. a private cluster (scripts/pgcluster.sh; fsync=off, shared_buffers=1GB), `pgtrail
#     setup` for the store database `pgtrail`, its slot dropped; the store filled as
#     bench/web.sh fills it (examples/web_fill.rs through COPY, then VACUUM (ANALYZE));
#  2. `pgtrail web` on a free port, signed in with curl as an admin user `bench`, so that
#     every request pays for its session check as people's do; the values each route
#     varies over sampled from the store (tables, entry ids, terms found in row values and
#     terms that are nowhere);
#  3. per level, examples/web_load.rs: that many clients, each sending one request after
#     another without a pause (a closed loop: a refused request is followed at once by the
#     next) for --warmup then --seconds seconds; each request a route drawn by weight:
#       first   2  the first page, unfiltered             (GET /)
#       table   2  a table's first page                   (GET /?table=…)
#       action  2  an action filter's first page          (GET /?action=…)
#       api     1  the API's list, with or without a table (GET /api/v1/entries…)
#       api_entry 1  one entry from the API                (GET /api/v1/entries/ID)
#       entry   2  View Difference                        (GET /entries/ID)
#       text    2  a free-text search                     (GET /?q=…)
#  4. per level and route: requests, status counts, and p50/p95/p99 of the server's
#     time (its Server-Timing header: request in to response ready, the wait for a store
#     connection included) and of the client's, over the answered (200) requests, and the
#     longest server time of any request (a refused one included).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=web_load
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

entries=1000000
levels="8,32,128,512"
seconds=30
warmup=5
binary=""
web_toml=""
dir="$repo/target/bench/web_load"
reuse=0
keep=0
build=1
mix="first=2,table=2,action=2,api=1,api_entry=1,entry=2,text=2"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --entries) entries="${2:?--entries needs a number}"; shift 2 ;;
        --levels) levels="${2:?--levels needs a list}"; shift 2 ;;
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --warmup) warmup="${2:?--warmup needs a number}"; shift 2 ;;
        --binary) binary=$(pgc_abspath "${2:?--binary needs a path}"); shift 2 ;;
        --web) web_toml="${2:?--web needs TOML}"; shift 2 ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --reuse) dir=$(pgc_abspath "${2:?--reuse needs a directory}"); reuse=1; shift 2 ;;
        --keep) keep=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) usage ;;
        *) echo "web_load: unknown option $1" >&2; usage ;;
    esac
done
[[ "$entries" =~ ^[1-9][0-9]*$ ]] || die "--entries must be a positive integer"
[[ "$levels" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--levels must be numbers separated by commas"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive integer"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number"

# Built where cargo builds (CARGO_TARGET_DIR, else target/).
out="${CARGO_TARGET_DIR:-$repo/target}/release"
if [[ $build -eq 1 ]]; then
    say "cargo build --release (pgtrail, examples/web_fill and examples/web_load)"
    (cd "$repo" && cargo build --release --quiet && cargo build --release --quiet --example web_fill --example web_load)
fi
pgtrail="${binary:-$out/pgtrail}"
fill="$out/examples/web_fill"
load="$out/examples/web_load"
for b in "$pgtrail" "$fill" "$load"; do
    [[ -x "$b" ]] || die "$b not found (build it, or drop --no-build)"
done

# shellcheck source=bench/web_lib.sh
source "$repo/bench/web_lib.sh"
pgc_find_bin
if [[ $reuse -eq 1 ]]; then
    [[ -s "$dir/fill.info" ]] || die "--reuse: $dir holds no filled store (no fill.info; run once with --keep)"
else
    pgc_destroy "$dir" || true
    mkdir -p "$dir"
fi
bench_trap_exit web_cleanup
pgc_start "$dir" "fsync=off" "max_wal_size=16GB" "checkpoint_timeout=1h" "shared_buffers=1GB" "max_connections=200"
web_config bench_web_load "$web_toml"
[[ $reuse -eq 1 ]] || web_fill "$entries"
# shellcheck disable=SC1091
source "$dir/fill.info"
n=$(psql_store -At -c "SELECT count(*) FROM pgtrail.entries")
web_signed_in
# The jar's cookies as one Cookie header (curl marks HttpOnly ones with a prefix).
cookie=$(awk -F'\t' 'NF >= 7 { sub(/^#HttpOnly_/, "", $1); if ($1 !~ /^#/) printf "%s%s=%s", (n++ ? "; " : ""), $6, $7 }' "$jar")
[[ -n "$cookie" ]] || die "no session cookie after signing in"

say "sampling values from the store"
vals="$dir/values"
rm -rf "$vals"
mkdir -p "$vals"
echo "/" >"$vals/first"
sample_tables >"$vals/table"
printf '%s\n' "/?action=DELETE" "/?action=INSERT" "/?action=TRUNCATE" "/?action=DDL" "/?action=UPDATE,DELETE" >"$vals/action"
head -n 20 "$vals/table" | sed 's|^/?|/api/v1/entries?|' >"$vals/api"
echo "/api/v1/entries" >>"$vals/api"
sample_ids >"$dir/ids"
sed 's|^|/entries/|' "$dir/ids" >"$vals/entry"
sed 's|^|/api/v1/entries/|' "$dir/ids" >"$vals/api_entry"
{
    # Rare terms seen in rows, common ones, and terms that are nowhere (they read for the whole budget).
    psql_store -At -c "SELECT DISTINCT substring(after::text from 'SKU-[0-9]{5}-[A-Z]') FROM pgtrail.entry_rows TABLESAMPLE SYSTEM (0.2) WHERE after::text LIKE '%SKU-%' LIMIT 10"
    printf '%s\n' Lindqvist Okafor Haddad Popescu refund gdpr warehouse no-such-customer zz-absent-term qwertyuiop
} | grep -v '^$' | while read -r q; do echo "/?q=$(enc "$q")"; done >"$vals/text"
for f in "$vals"/*; do [[ -s "$f" ]] || die "no values sampled for $(basename "$f")"; done

version=$("$pgtrail" --version 2>/dev/null | head -n 1)
echo "== web view under load ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)) =="
echo "pgtrail: $pgtrail ($version); store: $n entries (filled $filled_at: COPY ${copy_seconds} s, VACUUM ${vacuum_seconds} s)"
echo "[web] extra keys: ${web_toml:-none}; mix: $mix; $warmup s warm-up + $seconds s measured per level"
IFS=, read -r -a level_list <<<"$levels"
for c in "${level_list[@]}"; do
    say "$c clients"
    echo
    echo "### $c clients"
    echo
    "$load" --base "$base" --urls "$vals" --mix "$mix" --clients "$c" --seconds "$seconds" --warmup "$warmup" \
        --cookie "$cookie" | tee "$dir/level-$c.md"
    kill -0 "$web_pid" 2>/dev/null || { tail -n 40 "$dir/web.log" >&2; die "pgtrail web died under $c clients"; }
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
