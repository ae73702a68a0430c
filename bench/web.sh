#!/usr/bin/env bash
# The web view's benchmark: a store of 5,000,000 synthetic entries, `pgtrail web`
# on it, and the server time (its Server-Timing header) and client time of the
# pages people use, measured in one run.
#
#   bash bench/web.sh [options]
#
#   --entries N     entries to fill the store with (default 5000000)
#   --days D        days of commit times the entries span, ending now (default 365:
#                   13 monthly partitions)
#   --max-wal-size S  the cluster's max_wal_size (default 16GB; the WAL kept on disk
#                   while filling: smaller for a large store on a small disk)
#   --requests N    measured requests per case (default 60), after --warmup N (default 5)
#   --cases LIST    comma-separated subset of the cases below (default: all)
#   --dir DIR       work directory (default target/bench/web; wiped first unless --reuse)
#   --reuse DIR     measure the store an earlier `--keep` run left in DIR (no fill;
#                   pending migrations are applied and timed, as an upgrade would,
#                   then VACUUM as autovacuum would after a rewrite)
#   --keep          keep DIR and its cluster's data at the end (the cluster is stopped)
#   --no-build      use target/release/pgtrail and the fill program as they are
#   --explain       also write EXPLAIN (ANALYZE, BUFFERS) of each case's page query
#                   for its first value to DIR/explain/ (read from the server's log)
#
# Method:
#  1. a private cluster (scripts/pgcluster.sh; fsync=off, shared_buffers=1GB,
#     max_wal_size=16GB unless --max-wal-size, checkpoint_timeout=1h), a source
#     database `app` with one empty table, `pgtrail setup` for the store database
#     `pgtrail` (its migrations), then the slot is dropped so it pins no WAL;
#  2. the fill: the partitions of the fill's span made first (pgtrail.ensure_partition,
#     the store's period: month by default), then `examples/web_fill.rs` writes the
#     entries, commit times rising evenly over --days, as COPY text with
#     pgtrail's own encoder (so row_key and every column pgtrail computes are what
#     the daemon writes) to two files, its transactions for pgtrail.transactions and
#     its entry rows for pgtrail.entry_rows (the layout of migration 23), which psql's
#     COPY ... FROM STDIN loads in that order into the partitions with all their
#     indexes (bench/lib.sh, fill_copy); then VACUUM (ANALYZE). All three timed;
#  3. `pgtrail web` on a free port, signed in with curl as an admin user `bench`
#     (created, or given a new password, with the CLI), so that every request
#     pays for its session check as people's do; the values each case varies over are sampled
#     from the store (all tables in random order, actors, row keys, time windows,
#     terms found in row values and a few that are nowhere, entry ids);
#  4. per case, one request at a time with curl: --warmup requests, then
#     --requests requests cycling through the case's values; every answer must be
#     a 200 (or a 503: the web view's 30 s statement timeout, counted as a
#     failure with its time) with a Server-Timing header. Server time is that header (request in
#     to response ready, the page fully rendered); client time is curl's total;
#  5. a table of median and p95 of both per case, against the targets: p95 under
#     100 ms for every case but free text and the facet cases, under 500 ms for
#     free text, under 300 ms for the facet cases.
#
# A view's facets and timeline are counted apart from its log page, on
# /breakdown (within their time budget, src/web/log/tally.rs), which the page
# loads once shown. Cases: first (the first page, unfiltered), table,
# actor, ip (one client address), time (a 1-hour or 1-day from/to window), pk
# (table and key value, what a row's history link gives), pk_any (a key value
# without a table), text (q=…), diff (View Difference, /entries/ID), sort_actor
# and sort_ip (first page, asc and desc), txn (a transaction's page,
# /transactions/XID); facets_day and facets_week (the breakdown of 1-day and
# 7-day from/to windows: about 14,000 and 96,000 matches at 5,000,000
# entries over 365 days), facets_action (of action=DELETE, no index, every tenth entry or so),
# search_box (a search-box line, answered with the redirect to its URL) and
# timeline_slice (a bar's link: the 12-hour slice of the unfiltered timeline).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR/.. source=scripts/pgcluster.sh
source "$repo/scripts/pgcluster.sh"
bench=web
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

entries=5000000
days=365
max_wal=16GB
requests=60
warmup=5
cases_wanted=""
dir="$repo/target/bench/web"
reuse=0
keep=0
build=1
explain=0
all_cases=(first table actor ip time pk pk_any text diff sort_actor sort_ip txn facets_day facets_week facets_action search_box timeline_slice)

usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --entries) entries="${2:?--entries needs a number}"; shift 2 ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        --max-wal-size) max_wal="${2:?--max-wal-size needs a size}"; shift 2 ;;
        --requests) requests="${2:?--requests needs a number}"; shift 2 ;;
        --warmup) warmup="${2:?--warmup needs a number}"; shift 2 ;;
        --cases) cases_wanted="${2:?--cases needs a list}"; shift 2 ;;
        --dir) dir=$(pgc_abspath "${2:?--dir needs a directory}"); shift 2 ;;
        --reuse) dir=$(pgc_abspath "${2:?--reuse needs a directory}"); reuse=1; shift 2 ;;
        --keep) keep=1; shift ;;
        --no-build) build=0; shift ;;
        --explain) explain=1; shift ;;
        -h|--help) usage ;;
        *) echo "web: unknown option $1" >&2; usage ;;
    esac
done
[[ "$entries" =~ ^[1-9][0-9]*$ ]] || die "--entries must be a positive integer"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer"
[[ "$requests" =~ ^[1-9][0-9]*$ ]] || die "--requests must be a positive integer"
[[ "$warmup" =~ ^[0-9]+$ ]] || die "--warmup must be a whole number"
cases=("${all_cases[@]}")
if [[ -n "$cases_wanted" ]]; then
    IFS=, read -r -a cases <<<"$cases_wanted"
    for c in "${cases[@]}"; do
        [[ " ${all_cases[*]} " == *" $c "* ]] || die "--cases: unknown case $c (the cases: ${all_cases[*]})"
    done
fi

pgtrail="$release_dir/pgtrail"
fill="$release_dir/examples/web_fill"
build_pgtrail "$build" web_fill

# Unlike bench_cleanup, which leaves a kept cluster running, web_cleanup
# stops a kept store: --reuse starts it again.
# shellcheck source=bench/web_lib.sh
source "$repo/bench/web_lib.sh"

settings=("fsync=off" "max_wal_size=$max_wal" "checkpoint_timeout=1h" "shared_buffers=1GB")
pgc_find_bin
if [[ $reuse -eq 1 ]]; then
    [[ -s "$dir/fill.info" ]] || die "--reuse: $dir holds no filled store (no fill.info; run once with --keep)"
else
    pgc_destroy "$dir" || true
    mkdir -p "$dir"
fi
bench_trap_exit web_cleanup
pgc_start "$dir" "${settings[@]}"
web_config bench_web

if [[ $reuse -eq 0 ]]; then
    # 1. The store's schema, as pgtrail setup makes it; 2. the fill.
    web_fill "$entries" "$days"
    migrate_note=""
else
    # An upgrade: migrations the store does not have yet, timed.
    t0=$(now)
    # The fill dropped the slot (it would pin WAL): setup calls that a gap, so
    # it makes a new slot, recording the gap as an event, dropped again below.
    "$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 \
        || "$pgtrail" --config "$cfg" setup --recreate-slot >>"$dir/setup.log" 2>&1 \
        || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }
    t1=$(now)
    drop_slots
    # A migration that rewrote the table cleared its visibility map, which
    # index-only scans (the counts) need; autovacuum would set it again soon.
    psql_store -c "VACUUM pgtrail.entry_rows, pgtrail.transactions"
    t2=$(now)
    migrate_note="pgtrail setup on the reused store (pending migrations applied): $(secs "$t0" "$t1") s, then VACUUM $(secs "$t1" "$t2") s"
fi
# shellcheck disable=SC1091
source "$dir/fill.info"
n=$(psql_store -At -c "SELECT count(*) FROM pgtrail.entries")
# The partitions of the entries' two tables (pg_partition_tree: a parent itself holds nothing).
sizes=$(psql_store -At -c "SELECT pg_size_pretty(sum(pg_table_size(relid))) || ' tables, ' || pg_size_pretty(sum(pg_indexes_size(relid))) || ' indexes in ' || count(*) FILTER (WHERE isleaf) || ' partitions of entry_rows and transactions' FROM (SELECT * FROM pg_partition_tree('pgtrail.entry_rows') UNION ALL SELECT * FROM pg_partition_tree('pgtrail.transactions')) p")
span=$(psql_store -At -c "SELECT (SELECT committed_at::date FROM pgtrail.entry_rows ORDER BY id LIMIT 1) || ' to ' || (SELECT committed_at::date FROM pgtrail.entry_rows ORDER BY id DESC LIMIT 1)")
indexes=$(psql_store -At -c "SELECT string_agg(indexname, ', ' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'pgtrail' AND tablename IN ('entry_rows', 'transactions')")

# 3. The web view, signed in as an admin as people use it (every request then
# pays for its session check), and the values to vary.
web_signed_in

say "sampling values from the store"
vals="$dir/values"
rm -rf "$vals"
mkdir -p "$vals"
echo "/" >"$vals/first"
sample_tables >"$vals/table"
psql_store -At -c "SELECT a FROM (SELECT DISTINCT coalesce(context->>'actor', context->>'db_user') a FROM pgtrail.transactions TABLESAMPLE SYSTEM (1)) s WHERE a IS NOT NULL ORDER BY random() LIMIT 200" \
    | while read -r a; do echo "/?actor=$(enc "$a")"; done >"$vals/actor"
psql_store -At -F $'\t' -c "
    WITH b AS (SELECT (SELECT committed_at FROM pgtrail.entry_rows ORDER BY id LIMIT 1) lo,
                      (SELECT committed_at FROM pgtrail.entry_rows ORDER BY id DESC LIMIT 1) hi)
    SELECT to_char(f, 'YYYY-MM-DD\"T\"HH24:MI:SS'), to_char(f + w, 'YYYY-MM-DD\"T\"HH24:MI:SS')
    FROM b, LATERAL (SELECT lo + random() * (hi - lo - interval '1 day') f,
                            CASE WHEN random() < 0.5 THEN interval '1 hour' ELSE interval '1 day' END w
                     FROM generate_series(1, 200)) s" \
    | while IFS=$'\t' read -r f t; do echo "/?from=$f&to=$t"; done >"$vals/time"
psql_store -At -F $'\t' -c "
    SELECT schema_name || '.' || table_name,
           CASE WHEN (SELECT count(*) FROM json_object_keys(primary_key)) = 1
                THEN (SELECT value FROM json_each_text(primary_key)) ELSE primary_key::text END
    FROM pgtrail.entry_rows TABLESAMPLE SYSTEM (0.05) WHERE primary_key IS NOT NULL ORDER BY random() LIMIT 200" >"$dir/keys"
while IFS=$'\t' read -r t k; do echo "/?table=$(enc "$t")&pk=$(enc "$k")"; done <"$dir/keys" >"$vals/pk"
while IFS=$'\t' read -r _ k; do echo "/?pk=$(enc "$k")"; done <"$dir/keys" >"$vals/pk_any"
{
    # Terms people look for: an SKU or an email seen in a row (rare), a surname
    # (common), a word of the notes (very common), and terms that are nowhere.
    psql_store -At -c "SELECT DISTINCT substring(after::text from 'SKU-[0-9]{5}-[A-Z]') FROM pgtrail.entry_rows TABLESAMPLE SYSTEM (0.05) WHERE after::text LIKE '%SKU-%' LIMIT 20"
    psql_store -At -c "SELECT DISTINCT substring(after::text from '[a-z]+\\.[a-z]+[0-9]+@example\\.[a-z]+') FROM pgtrail.entry_rows TABLESAMPLE SYSTEM (0.05) WHERE after::text LIKE '%@example.%' LIMIT 20"
    printf '%s\n' Lindqvist Okafor Haddad Popescu Santos Tanaka Jensen Moreau Walsh Novak
    printf '%s\n' refund gdpr warehouse priority expired
    printf '%s\n' no-such-customer zz-absent-term "lost parcel 4711" qwertyuiop 0xDEADBEEF
} | grep -v '^$' | shuf --random-source=<(yes) | while read -r q; do echo "/?q=$(enc "$q")"; done >"$vals/text"
sample_ids | while read -r id; do echo "/entries/$id"; done >"$vals/diff"
printf '%s\n' "/?sort=actor&dir=asc" "/?sort=actor&dir=desc" >"$vals/sort_actor"
printf '%s\n' "/?sort=ip&dir=asc" "/?sort=ip&dir=desc" >"$vals/sort_ip"
psql_store -At -c "SELECT a FROM (SELECT DISTINCT host(client_addr) a FROM pgtrail.transactions TABLESAMPLE SYSTEM (1) WHERE client_addr IS NOT NULL) s ORDER BY random() LIMIT 200" \
    | while read -r a; do echo "/?ip=$(enc "$a")"; done >"$vals/ip"
psql_store -At -c "SELECT xid FROM pgtrail.transactions TABLESAMPLE SYSTEM (0.1) WHERE xid IS NOT NULL ORDER BY random() LIMIT 200" \
    | while read -r x; do echo "/transactions/$x"; done >"$vals/txn"
windows() { # DAYS: 200 random from/to windows of DAYS days within the store's time span
    psql_store -At -F $'\t' -c "
        WITH b AS (SELECT (SELECT committed_at FROM pgtrail.entry_rows ORDER BY id LIMIT 1) lo,
                          (SELECT committed_at FROM pgtrail.entry_rows ORDER BY id DESC LIMIT 1) hi)
        SELECT to_char(f, 'YYYY-MM-DD\"T\"HH24:MI:SS'), to_char(f + interval '$1 days', 'YYYY-MM-DD\"T\"HH24:MI:SS')
        FROM b, LATERAL (SELECT lo + random() * (hi - lo - interval '$1 days') f FROM generate_series(1, 200)) s" \
        | while IFS=$'\t' read -r f t; do echo "/?from=$f&to=$t"; done
}
windows 1 | sed 's|^/?|/breakdown?part=1\&|' >"$vals/facets_day"
windows 7 | sed 's|^/?|/breakdown?part=1\&|' >"$vals/facets_week"
printf '%s\n' "/breakdown?part=1&action=DELETE" >"$vals/facets_action"
sed -n 's|^/?actor=|/?search=action%3AUPDATE+actor%3A|p' "$vals/actor" >"$vals/search_box"
psql_store -At -F $'\t' -c "
    SELECT to_char(s, 'YYYY-MM-DD\"T\"HH24:MI:SS'), to_char(s + interval '12 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS')
    FROM (SELECT to_timestamp(floor(extract(epoch FROM committed_at) / 43200) * 43200) AT TIME ZONE 'UTC' s
          FROM pgtrail.entry_rows TABLESAMPLE SYSTEM (0.01) ORDER BY random() LIMIT 200) x" \
    | while IFS=$'\t' read -r f t; do echo "/?from=$f&to=$t"; done >"$vals/timeline_slice"
for c in "${cases[@]}"; do
    [[ -s "$vals/$c" ]] || die "no values sampled for case $c"
done

# 4. The requests.
declare -A label=(
    [first]="first page, unfiltered" [table]="table" [actor]="actor" [time]="time range (from/to)"
    [pk]="primary key (table + key)" [pk_any]="primary key alone" [text]="free text (q)"
    [diff]="View Difference" [sort_actor]="sort by actor" [sort_ip]="sort by IP"
    [ip]="client address" [txn]="transaction page"
    [facets_day]="facets, 1-day window" [facets_week]="facets, 7-day window" [facets_action]="facets, action=DELETE"
    [search_box]="search box (redirect)" [timeline_slice]="timeline bar (12 h slice)"
)
target_of() {
    case "$1" in
        text) echo 500 ;;
        facets_*) echo 300 ;;
        *) echo 100 ;;
    esac
}
hdr="$dir/headers"
results="$dir/results"
rm -rf "$results"
mkdir -p "$results"
request() { # URL OUTFILE: appends "server_ms client_ms status" to OUTFILE (if given)
    local out code client server
    out=$(curl -s -b "$jar" -o "$dir/body" -D "$hdr" -w '%{http_code} %{time_total}' "$base$1") || die "curl failed on $1"
    read -r code client <<<"$out"
    # A 503 is the store's statement timeout (30 s): counted, and its time kept.
    # A 303 is the search box's redirect to the filters' URL (not followed).
    [[ "$code" == 303 && "$1" == /\?search=* ]] && code=200
    [[ "$code" == 200 || "$code" == 503 ]] || die "$1 answered $code: $(head -c 400 "$dir/body")"
    [[ "$code" == 200 ]] || say "$1 answered $code after ${client}s"
    server=$(tr -d '\r' <"$hdr" | sed -n 's/^[Ss]erver-[Tt]iming: total;dur=\([0-9.]*\).*/\1/p')
    [[ -n "$server" ]] || die "$1: no Server-Timing header"
    [[ -z "${2:-}" ]] || awk -v s="$server" -v c="$client" -v k="$code" 'BEGIN { printf "%s %.1f %s\n", s, c * 1000, k }' >>"$2"
}
count_line() { # the page's count of matches, and the facets' count, for the table
    local count facets
    count=$(sed -n 's/.*class="count"[^>]*>\([^<]*\)<.*/\1/p' "$dir/body" | head -n 1)
    facets=$(sed -n 's/.*<span class="counted">\([^<]*\)<.*/\1/p' "$dir/body" | head -n 1)
    echo "$count${facets:+; facets: $facets}"
}
declare -A counts
for c in "${cases[@]}"; do
    mapfile -t urls <"$vals/$c"
    say "case $c: $warmup warm-up + $requests requests over ${#urls[@]} values"
    for ((i = 0; i < warmup; i++)); do request "${urls[$((i % ${#urls[@]}))]}"; done
    for ((i = 0; i < requests; i++)); do
        request "${urls[$(((warmup + i) % ${#urls[@]}))]}" "$results/$c"
        [[ $i -eq 0 ]] && counts[$c]=$(count_line)
    done
done

if [[ $explain -eq 1 ]]; then
    # One more request per case with auto_explain on for the web view's sessions.
    say "EXPLAIN ANALYZE of each case's queries (auto_explain) into $dir/explain/"
    mkdir -p "$dir/explain"
    pgc_psql "$dir" -c "ALTER DATABASE pgtrail SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER DATABASE pgtrail SET auto_explain.log_min_duration = 0" \
        -c "ALTER DATABASE pgtrail SET auto_explain.log_analyze = on" \
        -c "ALTER DATABASE pgtrail SET auto_explain.log_buffers = on" \
        -c "ALTER DATABASE pgtrail SET log_min_messages = 'log'"
    stop_pid "$web_pid"
    start_web
    log=$(readlink -f "$dir/postgres.log")
    for c in "${cases[@]}"; do
        url=$(sed -n 3p "$vals/$c"); [[ -n "$url" ]] || url=$(head -n 1 "$vals/$c")
        from=$(wc -c <"$log")
        request "$url"
        sleep 0.2
        { echo "== $c: GET $url"; tail -c +"$((from + 1))" "$log"; } >"$dir/explain/$c.txt"
    done
    pgc_psql "$dir" -c "ALTER DATABASE pgtrail RESET ALL"
fi

# 5. The table.
stat() { # FILE COLUMN: "median p95" (nearest rank)
    awk -v k="$2" '{ print $k }' "$1" | sort -g | awk '{ a[NR] = $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        r = int(NR * 0.95); if (r < NR * 0.95) r++; if (r < 1) r = 1
        printf "%.1f %.1f\n", m, a[r] }'
}
echo "== web view benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)) =="
echo "PostgreSQL $(psql_store -At -c 'SHOW server_version'); $(psql_store -At -c "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'shared_buffers', 'jit', 'work_mem', 'effective_cache_size')")"
echo "store: $n entries committed $span ($sizes; indexes: $indexes)"
echo "fill ($filled_at): examples/web_fill ${fill_seconds:-?} s, COPY ${copy_seconds} s, VACUUM (ANALYZE) ${vacuum_seconds} s"
[[ -z "$migrate_note" ]] || echo "$migrate_note"
echo "method: one request at a time with curl, $warmup warm-up + $requests measured per case, values varied;"
echo "        server = the Server-Timing header (request in to page rendered), client = curl's total time"
echo
echo "| case | server median ms | server p95 ms | client median ms | client p95 ms | target p95 | met | not 200 | count shown (first value) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"
missed=0
for c in "${cases[@]}"; do
    read -r sm sp <<<"$(stat "$results/$c" 1)"
    read -r cm cp <<<"$(stat "$results/$c" 2)"
    t=$(target_of "$c")
    met=$(awk -v p="$sp" -v t="$t" 'BEGIN { print (p < t) ? "yes" : "**no**" }')
    failed=$(awk '$3 != 200' "$results/$c" | wc -l)
    [[ "$failed" -eq 0 ]] || met="**no**"
    [[ "$met" == yes ]] || missed=$((missed + 1))
    printf '| %s | %s | %s | %s | %s | < %s | %s | %s | %s |\n' "${label[$c]}" "$sm" "$sp" "$cm" "$cp" "$t" "$met" "$failed" "${counts[$c]:-}"
done
echo
echo "targets missed: $missed of ${#cases[@]}; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
