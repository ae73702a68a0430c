#!/usr/bin/env bash
# pgtrail end to end on this machine, with nothing to set up by hand.
#
#   bash scripts/demo.sh          install dependencies, build, start a private PostgreSQL
#                                 and the daemon, make some changes, show what was captured
#   bash scripts/demo.sh stop     stop the daemon and the demo's PostgreSQL (data is kept)
#   bash scripts/demo.sh clean    stop both and delete target/demo
#
# Everything lives in target/demo/: the cluster (pg/), the config (pgtrail.toml),
# the daemon's log (pgtrail.log) and pid file (pgtrail.pid). Running it again
# reuses the cluster and the daemon if they are still running and adds a new
# round of changes.
#
# The web view listens on 127.0.0.1: PGTRAIL_DEMO_PORT if set, else the port
# of the last run while its web view still answers, else the first free port
# from 8080 (metrics likewise from 9847). The URL is printed only once it answers.
#
# The demo database `shop` has customers, orders and order_items, each with a
# primary key, a numeric and a jsonb column, and REPLICA IDENTITY FULL (so UPDATE
# and DELETE entries carry the whole old row). The audit store is the database
# `pgtrail` on the same server, pgtrail's default.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pgcluster.sh
source "$repo/scripts/pgcluster.sh"

demo="$repo/target/demo"
cluster="$demo/pg"
cfg="$demo/pgtrail.toml"
log="$demo/pgtrail.log"
pidfile="$demo/pgtrail.pid"
# Where cargo builds: CARGO_TARGET_DIR when set (relative to the repository, where it runs).
target_dir=${CARGO_TARGET_DIR:-$repo/target}
[[ "$target_dir" = /* ]] || target_dir="$repo/$target_dir"
bin="$target_dir/release/pgtrail"
# Row changes made by one round of activity below (the rolled-back transaction makes none).
changes_per_round=17

die() { echo "demo: $*" >&2; exit 1; }
say() { echo "demo: $*" >&2; }

daemon_pid() {
    local pid
    [[ -f "$pidfile" ]] || return 1
    pid=$(cat "$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Not some other process that got the same pid. After a rebuild the link
    # reads "... (deleted)": still our daemon, running the old binary.
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$bin")"* ]] || return 1
    echo "$pid"
}

# Whether something accepts connections on 127.0.0.1:$1.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first port from $1 on (100 tried) that nothing listens on.
free_port() {
    local p
    for p in $(seq "$1" $(( $1 + 100 ))); do
        port_taken "$p" || { echo "$p"; return 0; }
    done
    return 1
}

# Whether pgtrail's web view answers on 127.0.0.1:$1: its sign-in page, not
# just any server that happens to hold the port.
web_answers() {
    local reply
    reply=$( { exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
               printf 'GET /sign-in HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
               timeout 5 cat <&3; } 2>/dev/null ) || return 1
    [[ "$reply" =~ ^HTTP/1\.[01]\ 200 && "$reply" == *pgtrail* ]]
}

# The value of `listen = "127.0.0.1:PORT"` in section [$1] of the last run's config.
config_port() {
    [[ -f "$cfg" ]] || return 1
    sed -n "/^\[$1\]/,/^\[/s/^listen *= *\"127\.0\.0\.1:\([0-9]*\)\"/\1/p" "$cfg" | head -n 1 | grep .
}

stop_daemon() {
    local pid i
    if pid=$(daemon_pid); then
        say "stopping pgtrail (pid $pid)"
        kill -TERM "$pid"
        for i in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            die "pgtrail (pid $pid) did not stop within 30 s of SIGTERM; see $log"
        fi
    fi
    rm -f "$pidfile"
}

case "${1:-start}" in
    stop)
        stop_daemon
        pgc_stop "$cluster"
        exit 0
        ;;
    clean)
        stop_daemon
        pgc_destroy "$cluster"
        rm -rf "$demo"
        say "removed $demo"
        exit 0
        ;;
    start) ;;
    *) die "usage: bash scripts/demo.sh [start|stop|clean]" ;;
esac

bash "$repo/scripts/install-deps.sh"
say "cargo build --release"
(cd "$repo" && cargo build --release)
[[ -x "$bin" ]] || die "cargo build did not produce $bin"

mkdir -p "$demo"
pgc_start "$cluster"
port="$PGC_PORT"
sql() { pgc_psql "$cluster" "$@"; }

# The store database `pgtrail` is created by `pgtrail setup`.
if [[ -z "$(sql -At -c "SELECT 1 FROM pg_database WHERE datname = 'shop'")" ]]; then
    sql -c "CREATE DATABASE shop"
fi

sql -d shop <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS customers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL,
    credit_limit numeric(12,2) NOT NULL DEFAULT 0,
    profile      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status      text NOT NULL DEFAULT 'new',
    total       numeric(12,2) NOT NULL DEFAULT 0,
    details     jsonb NOT NULL DEFAULT '{}',
    placed_at   timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id   bigint NOT NULL REFERENCES orders (id),
    line_no    integer NOT NULL,
    sku        text NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    attributes jsonb,
    PRIMARY KEY (order_id, line_no)
);
ALTER TABLE customers REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE order_items REPLICA IDENTITY FULL;
SQL

# The config. [web] only once the binary has the web view: the config is read
# strictly, so a section it does not know would be an error.
has_web=0
if "$bin" --help 2>/dev/null | grep -qE '^[[:space:]]+web([[:space:]]|$)'; then
    has_web=1
fi
# Ports: kept while the daemon serves them, else free ones (another program on
# 8080 must not leave the demo printing a dead URL).
web_port=""
if [[ -n "${PGTRAIL_DEMO_PORT:-}" ]]; then
    [[ "$PGTRAIL_DEMO_PORT" =~ ^[0-9]+$ ]] && (( PGTRAIL_DEMO_PORT > 0 && PGTRAIL_DEMO_PORT < 65536 )) ||
        die "PGTRAIL_DEMO_PORT=$PGTRAIL_DEMO_PORT is not a port number (1-65535)"
    web_port="$PGTRAIL_DEMO_PORT"
    if port_taken "$web_port" && ! { daemon_pid >/dev/null && [[ "$(config_port web || true)" == "$web_port" ]]; }; then
        die "port $web_port (PGTRAIL_DEMO_PORT) is taken by another program; choose another port or unset it"
    fi
elif daemon_pid >/dev/null && old=$(config_port web) && web_answers "$old"; then
    web_port="$old"
else
    web_port=$(free_port 8080) || die "no free port from 8080 to 8180 for the web view; set PGTRAIL_DEMO_PORT"
fi
metrics_port=""
if daemon_pid >/dev/null && old=$(config_port metrics) && port_taken "$old"; then
    metrics_port="$old"
else
    metrics_port=$(free_port 9847) || die "no free port from 9847 to 9947 for /metrics"
fi
web_listen="127.0.0.1:$web_port"
{
    echo "# Written by scripts/demo.sh; see config/pgtrail.example.toml for every key."
    echo "[source]"
    echo "url  = \"postgres://postgres@127.0.0.1:$port/shop\""
    echo "slot = \"pgtrail\""
    echo "[store]"
    echo "url  = \"postgres://postgres@127.0.0.1:$port/pgtrail\""
    echo "[capture]"
    echo "tables  = [\"public.*\"]"
    echo "exclude = []"
    if [[ $has_web -eq 1 ]]; then
        echo "[web]"
        echo "listen = \"$web_listen\""
    fi
    echo "[metrics]"
    echo "listen = \"127.0.0.1:$metrics_port\""
} >"$cfg.new"
if pid=$(daemon_pid); then
    if ! cmp -s "$cfg.new" "$cfg"; then
        # The cluster came back on another port, or the binary's features changed.
        say "config changed: restarting the daemon"
        stop_daemon
    elif [[ "$(readlink "/proc/$pid/exe")" == *" (deleted)" ]]; then
        say "the binary was rebuilt: restarting the daemon"
        stop_daemon
    elif [[ $has_web -eq 1 ]] && ! web_answers "$web_port"; then
        say "the running daemon's web view does not answer on $web_listen: restarting the daemon"
        stop_daemon
    fi
fi
mv "$cfg.new" "$cfg"
pt() { "$bin" --config "$cfg" "$@"; }

say "pgtrail setup"
pt setup

if pid=$(daemon_pid); then
    say "reusing the running daemon (pid $pid)"
else
    say "starting pgtrail run (log: $log)"
    # NO_COLOR: plain text in the log file.
    NO_COLOR=1 PGTRAIL_LOG="${PGTRAIL_LOG:-info}" nohup "$bin" --config "$cfg" run </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    sleep 1
    pid=$(daemon_pid) || { tail -n 20 "$log" >&2; die "pgtrail run exited at once (end of $log above)"; }
fi

# The exact count of captured changes (status gives an estimate, which is what a big store can afford).
stored() { sql -d pgtrail -At -c "SELECT count(*) FROM pgtrail.entries WHERE action <> 'EVENT'" 2>/dev/null; }
pt status --json >/dev/null || die "pgtrail status --json failed"
before=$(stored)
[[ "$before" =~ ^[0-9]+$ ]] || die "could not count the entries in the store database pgtrail"

say "making changes in shop: 6 transactions, one of them rolled back"
PGAPPNAME=pgtrail-demo sql -d shop <<'SQL'
-- 1: three customers
BEGIN;
INSERT INTO customers (name, email, credit_limit, profile)
    VALUES ('Ada Lovelace', 'ada@example.com', 1000.00, '{"tier": "gold", "tags": ["early"]}')
    RETURNING id AS ada \gset
INSERT INTO customers (name, email, credit_limit, profile)
    VALUES ('Grace Hopper', 'grace@example.com', 2500.50, '{"tier": "silver"}')
    RETURNING id AS grace \gset
INSERT INTO customers (name, email, profile)
    VALUES ('Alan Turing', 'alan@example.com', '{}')
    RETURNING id AS alan \gset
COMMIT;

-- 2: two orders with four lines, then their totals
BEGIN;
INSERT INTO orders (customer_id, details) VALUES (:ada, '{"channel": "web"}') RETURNING id AS o1 \gset
INSERT INTO orders (customer_id, details) VALUES (:grace, '{"channel": "phone", "gift": true}') RETURNING id AS o2 \gset
INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price, attributes) VALUES
    (:o1, 1, 'BOOK-001', 2, 12.50, '{"format": "hardcover"}'),
    (:o1, 2, 'PEN-010', 10, 1.20, NULL),
    (:o2, 1, 'LAMP-7', 1, 39.90, '{"color": "brass"}'),
    (:o2, 2, 'BULB-2', 3, 4.35, NULL);
UPDATE orders SET total = (SELECT sum(quantity * unit_price) FROM order_items WHERE order_id = orders.id)
    WHERE id IN (:o1, :o2);
COMMIT;

-- 3: the first order is paid
BEGIN;
UPDATE orders SET status = 'paid', paid_at = now() WHERE id = :o1;
UPDATE customers SET credit_limit = credit_limit - 37.00 WHERE id = :ada;
COMMIT;

-- 4: rolled back, so never audited
BEGIN;
INSERT INTO customers (name, email) VALUES ('Nobody', 'nobody@example.com');
UPDATE orders SET status = 'cancelled' WHERE id = :o2;
ROLLBACK;

-- 5: a line removed from the second order
BEGIN;
DELETE FROM order_items WHERE order_id = :o2 AND line_no = 2;
UPDATE orders SET total = 39.90 WHERE id = :o2;
COMMIT;

-- 6: a jsonb change, and an UPDATE that changes nothing
BEGIN;
UPDATE customers SET profile = jsonb_set(profile, '{tier}', '"platinum"') WHERE id = :grace;
UPDATE customers SET name = name WHERE id = :alan;
COMMIT;
SQL

want=$(( before + changes_per_round ))
say "waiting for $changes_per_round new entries"
entries="$before"
for _ in $(seq 1 300); do
    daemon_pid >/dev/null || { tail -n 20 "$log" >&2; die "pgtrail run stopped (end of $log above)"; }
    entries=$(stored || true)
    [[ "$entries" =~ ^[0-9]+$ ]] && (( entries >= want )) && break
    sleep 0.2
done
if ! [[ "$entries" =~ ^[0-9]+$ ]] || (( entries < want )); then
    tail -n 20 "$log" >&2
    die "after 60 s the store has ${entries:-?} entries, expected $want (end of $log above)"
fi

echo
echo "== pgtrail status =="
pt status
echo
if [[ $has_web -eq 1 ]]; then
    # A demo user to sign in with (the web view shows nothing until a user exists).
    has_users=0
    if "$bin" --help 2>/dev/null | grep -qE '^[[:space:]]+user([[:space:]]|$)'; then
        has_users=1
        if ! pt user list 2>/dev/null | grep -q '^demo[[:space:]]'; then
            printf '%s\n' "demo-password" | pt user add demo --role admin >/dev/null || say "could not add the demo user"
        fi
    fi
    say "waiting for the web view on $web_listen"
    for _ in $(seq 1 100); do
        web_answers "$web_port" && break
        daemon_pid >/dev/null || break
        sleep 0.1
    done
    if ! web_answers "$web_port"; then
        tail -n 20 "$log" >&2
        die "the web view does not answer on http://$web_listen/ (end of $log above)"
    fi
    echo "Web view: http://$web_listen/"
    if [[ $has_users -eq 1 ]]; then
        echo "Sign in as demo, password demo-password (an admin; add users with: $bin --config $cfg user add NAME --role viewer)"
    fi
else
    echo "The last entries (export as JSON lines):"
    pt export --format jsonl | tail -n 3 || say "export failed"
    echo
    echo "All entries:  $bin --config $cfg export --format jsonl | head"
fi
echo "Make more changes: psql postgres://postgres@127.0.0.1:$port/shop"
echo "Metrics:           http://127.0.0.1:$metrics_port/metrics"
echo "Daemon log:        $log"
echo "Stop everything:   bash scripts/demo.sh stop"
