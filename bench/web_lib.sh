# shellcheck shell=bash
# Helpers shared by the web view's benchmarks (bench/web.sh, bench/web_load.sh); sourced after
# bench/lib.sh, not run. They use the sourcing script's $dir, $keep, $reuse, $pgtrail and $fill,
# and set $port, $cfg, $base, $jar and $web_pid.

web_pid=""
# On exit: stop the web view; keep the store (stopped: --reuse starts it again) or destroy it.
web_cleanup() {
    local rc=$?
    stop_pid "$web_pid"
    if [[ $keep -eq 1 || $reuse -eq 1 ]]; then
        pgc_stop "$dir" || true
        say "kept $dir: measure it again with --reuse $dir; delete it with: bash scripts/pgcluster.sh destroy $dir"
    else
        pgc_destroy "$dir" || true
    fi
    exit "$rc"
}

psql_store() { psql_db pgtrail "$@"; }

# web_config SLOT [WEB_TOML]: the cluster (started, its port in $port) and $cfg, with the web
# view on a free port ($base) and WEB_TOML as extra [web] keys.
web_config() {
    port="$PGC_PORT"
    local web_port
    web_port=$(pgc_pick_port)
    base="http://127.0.0.1:$web_port"
    cfg="$dir/pgtrail.toml"
    cat >"$cfg" <<EOF
[source]
url  = "postgres://postgres@127.0.0.1:$port/app"
slot = "$1"
[store]
url  = "postgres://postgres@127.0.0.1:$port/pgtrail"
[capture]
tables = ["public.*"]
[web]
listen = "127.0.0.1:$web_port"
${2:-}
EOF
}

drop_slots() {
    pgc_psql "$dir" -At -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
}

# web_fill ENTRIES [DAYS]: the store's schema as `pgtrail setup` makes it (its slot dropped, so
# it pins no WAL), then ENTRIES entries from examples/web_fill over DAYS days (default 365)
# ending now, through COPY into its two tables (fill_copy), and VACUUM (ANALYZE), timed into
# $dir/fill.info.
web_fill() {
    local t1 t2 n days="${2:-365}" end
    pgc_psql "$dir" -c "CREATE DATABASE app"
    # setup wants a table to capture; this one is never written.
    pgc_psql "$dir" -d app -c "CREATE TABLE public.placeholder (id int PRIMARY KEY)"
    "$pgtrail" --config "$cfg" setup >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "pgtrail setup failed"; }
    drop_slots
    say "filling the store with $1 entries over $days days (examples/web_fill, COPY)"
    # The partitions the fill's commit times go to (capture makes its own).
    end=$(date +%s)
    psql_store -c "$(fill_partitions "$days" "$end")" >/dev/null
    fill_copy "$fill" "$1" "$days" "$end"
    t1=$(now)
    say "VACUUM (ANALYZE)"
    psql_store -c "VACUUM (ANALYZE) pgtrail.entry_rows, pgtrail.transactions"
    t2=$(now)
    n=$(psql_store -At -c "SELECT count(*) FROM pgtrail.entries")
    [[ "$n" == "$1" ]] || die "the store holds $n entries, not $1"
    printf 'entries=%s\ndays=%s\nfilled_at=%s\nfill_seconds=%s\ncopy_seconds=%s\nvacuum_seconds=%s\n' "$1" "$days" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$fill_seconds" "$copy_seconds" "$(secs "$t1" "$t2")" >"$dir/fill.info"
}

# start_web: `pgtrail web` in the background ($web_pid), appending to DIR/web.log, until it answers.
start_web() {
    PGTRAIL_LOG=warn "$pgtrail" --config "$cfg" web >>"$dir/web.log" 2>&1 &
    web_pid=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$base/assets/style.css" && break
        kill -0 "$web_pid" 2>/dev/null || { cat "$dir/web.log" >&2; die "pgtrail web exited"; }
        sleep 0.1
    done
    curl -s -o /dev/null "$base/assets/style.css" || die "pgtrail web does not answer on $base"
}

# web_signed_in: an admin user `bench` (created, or given a new password, with the CLI), the
# web view started, and signed in as bench with curl, its session in the cookie jar $jar: so
# that every request pays for its session check as people's do.
web_signed_in() {
    local password csrf signed
    password="bench-password-$RANDOM$RANDOM"
    if [[ $(psql_store -At -c "SELECT count(*) FROM pgtrail.users WHERE name = 'bench'") == 0 ]]; then
        printf '%s\n' "$password" | "$pgtrail" --config "$cfg" user add bench --role admin >"$dir/user.log" 2>&1 \
            || { cat "$dir/user.log" >&2; die "pgtrail user add failed"; }
    else
        printf '%s\n' "$password" | "$pgtrail" --config "$cfg" user reset-password bench >"$dir/user.log" 2>&1 \
            || { cat "$dir/user.log" >&2; die "pgtrail user reset-password failed"; }
    fi
    : >"$dir/web.log"
    start_web
    jar="$dir/cookies"
    rm -f "$jar"
    csrf=$(curl -s -c "$jar" "$base/sign-in" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1)
    [[ -n "$csrf" ]] || die "no CSRF token on $base/sign-in"
    signed=$(curl -s -o /dev/null -w '%{http_code}' -b "$jar" -c "$jar" --data-urlencode "csrf=$csrf" \
        --data-urlencode name=bench --data-urlencode "password=$password" --data-urlencode next=/ "$base/sign-in")
    [[ "$signed" == 303 ]] || die "signing in as bench answered $signed, not 303"
}

enc() { jq -rn --arg v "$1" '$v | @uri'; }

# sample_tables: every table with entries as `/?table=…`, in random order.
sample_tables() {
    psql_store -At -c "SELECT schema_name || '.' || table_name FROM (SELECT DISTINCT schema_name, table_name FROM pgtrail.entry_rows) t ORDER BY random()" \
        | while read -r t; do echo "/?table=$(enc "$t")"; done
}

# sample_ids: 200 random entry ids.
sample_ids() {
    psql_store -At -c "SELECT lo + floor(random() * (hi - lo + 1))::bigint FROM (SELECT min(id) lo, max(id) hi FROM pgtrail.entry_rows) b, generate_series(1, 200)"
}
