#!/usr/bin/env bash
# Private PostgreSQL clusters for the demo and the benchmark: one directory, one
# server on 127.0.0.1 and a free port, wal_level=logical, never Debian's 15/main.
#
# As a command:
#   scripts/pgcluster.sh start   DIR [name=value...]  start (initdb first if needed); prints the port
#   scripts/pgcluster.sh stop    DIR                  fast shutdown; keeps the data
#   scripts/pgcluster.sh destroy DIR                  stop, then delete DIR
#   scripts/pgcluster.sh status  DIR                  exit 0 and print the port if running
#   scripts/pgcluster.sh psql    DIR [psql args...]   psql as the superuser (database postgres unless -d)
#   scripts/pgcluster.sh url     DIR [DB]             postgres:// URL of database DB (default postgres)
# As a library (`source scripts/pgcluster.sh`): the same as functions pgc_start,
# pgc_stop, pgc_destroy, pgc_status, pgc_psql, pgc_url, pgc_conninfo; pgc_start sets
# PGC_PORT, and PGC_BIN is the server's bin directory.
#
# Layout of DIR: data/ (PGDATA) and postgres.log. Settings given to start are
# written to data/pgtrail-extra.conf, so they last across restarts; a cluster that
# is already running is reused as it is (its settings are not changed).
#
# Authentication is `trust` for the superuser `postgres`, on 127.0.0.1 only, and
# there is no Unix socket: fine for a throwaway development cluster, never for data
# that matters.
#
# PostgreSQL refuses to run as root, so when uid is 0 the server programs run as
# the `postgres` OS user (created by Debian's postgresql-common) through runuser,
# and DIR is handed to that user. If that user cannot reach DIR (a parent directory
# closed to others, like /root), the data lives under /var/tmp/pgtrail-clusters/
# instead and DIR holds symbolic links to it.
#
# Environment: PGC_BIN overrides the bin directory (default: the newest
# /usr/lib/postgresql/N/bin that has initdb, preferring 15).

# Base settings of every private cluster. wal_level=logical and the slot and
# sender limits are what pgtrail needs; the rest keeps the cluster quiet.
PGC_BASE_SETTINGS=(
    "listen_addresses = '127.0.0.1'"
    "unix_socket_directories = ''"
    "wal_level = logical"
    "max_replication_slots = 16"
    "max_wal_senders = 16"
    "max_connections = 100"
    "logging_collector = off"
    "log_min_messages = warning"
    "log_line_prefix = '%m [%p] %q%u@%d '"
    "timezone = 'UTC'"
)

pgc_die() { echo "pgcluster: $*" >&2; return 1; }

pgc_find_bin() {
    if [[ -n "${PGC_BIN:-}" ]]; then
        [[ -x "$PGC_BIN/initdb" ]] || pgc_die "PGC_BIN=$PGC_BIN has no initdb" || return 1
        return 0
    fi
    local d
    local -a dirs=(/usr/lib/postgresql/15/bin)
    mapfile -t -O 1 dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5nr)
    for d in "${dirs[@]}"; do
        if [[ -x "$d/initdb" ]]; then
            PGC_BIN="$d"
            return 0
        fi
    done
    pgc_die "no PostgreSQL server found under /usr/lib/postgresql: run scripts/install-deps.sh" || return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
pgc_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pgc_ensure_os_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    id postgres >/dev/null 2>&1 && return 0
    echo "pgcluster: creating system user postgres" >&2
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres \
        || pgc_die "could not create the postgres OS user" || return 1
}

# Absolute path of DIR, without requiring it to exist.
pgc_abspath() {
    local p="$1"
    [[ "$p" == /* ]] || p="$PWD/$p"
    printf '%s\n' "$p"
}

pgc_datadir() { readlink -f "$(pgc_abspath "$1")/data"; }

# Prints the port of the server running in DIR; fails if none is.
pgc_status() {
    local dir data
    dir=$(pgc_abspath "${1:?usage: pgc_status DIR}")
    [[ -e "$dir/data/PG_VERSION" ]] || return 1
    pgc_find_bin || return 1
    data=$(pgc_datadir "$dir")
    pgc_as_owner "$PGC_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1 || return 1
    # Line 4 of postmaster.pid is the port.
    sed -n 4p "$data/postmaster.pid"
}

pgc_port_free() {
    # Something accepting on the port means it is taken.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pgc_pick_port() {
    local p i
    for i in $(seq 1 50); do
        # Below the kernel's ephemeral range (32768 up, by default), which
        # outgoing connections take ports from until the server binds it.
        p=$(( 20000 + (RANDOM * 32768 + RANDOM + i) % 12000 ))
        if pgc_port_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    pgc_die "no free port found on 127.0.0.1" || return 1
}

pgc_init() {
    local dir="$1" home data
    pgc_ensure_os_user || return 1
    mkdir -p "$dir" || return 1
    home="$dir"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir" || return 1
        if ! runuser -u postgres -- test -w "$dir" -a -x "$dir" 2>/dev/null; then
            home="/var/tmp/pgtrail-clusters/$(printf '%s' "$dir" | md5sum | cut -c1-16)"
            echo "pgcluster: user postgres cannot reach $dir; keeping the data in $home" >&2
            mkdir -p "$home" && chown postgres: /var/tmp/pgtrail-clusters "$home" || return 1
            chmod 755 /var/tmp/pgtrail-clusters || return 1
            ln -sfn "$home/data" "$dir/data" && ln -sfn "$home/postgres.log" "$dir/postgres.log" || return 1
        fi
    fi
    data="$home/data"
    echo "pgcluster: initdb $data" >&2
    pgc_as_owner "$PGC_BIN/initdb" -D "$data" -U postgres --auth=trust --no-locale -E UTF8 --no-sync \
        >"$home/initdb.log" 2>&1 \
        || { cat "$home/initdb.log" >&2; pgc_die "initdb failed (log above)"; return 1; }
    {
        echo
        echo "# Added by pgtrail's scripts/pgcluster.sh"
        printf '%s\n' "${PGC_BASE_SETTINGS[@]}"
        echo "include_if_exists = 'pgtrail-extra.conf'"
    } >>"$data/postgresql.conf" || return 1
    pgc_as_owner touch "$home/postgres.log" || return 1
}

# pgc_start DIR [name=value...]: starts the cluster in DIR (creating it if needed)
# and sets PGC_PORT. A given port=N is used as is; otherwise the previous port is
# tried first, then random free ports.
pgc_start() {
    local dir="${1:?usage: pgc_start DIR [name=value...]}"
    shift
    dir=$(pgc_abspath "$dir")
    pgc_find_bin || return 1
    if PGC_PORT=$(pgc_status "$dir"); then
        echo "pgcluster: reusing the cluster running in $dir on port $PGC_PORT" >&2
        return 0
    fi
    [[ -e "$dir/data/PG_VERSION" ]] || pgc_init "$dir" || return 1

    local data log extra fixed_port="" prev_port="" kv port attempt
    data=$(pgc_datadir "$dir")
    log=$(readlink -f "$dir/postgres.log")
    extra="$data/pgtrail-extra.conf"
    for kv in "$@"; do
        [[ "$kv" == *=* ]] || { pgc_die "setting '$kv' is not name=value"; return 1; }
        [[ "${kv%%=*}" == port ]] && fixed_port="${kv#*=}"
    done
    if [[ -f "$extra" ]]; then
        prev_port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$extra" | tail -n1)
    fi

    for attempt in 1 2 3 4 5; do
        if [[ -n "$fixed_port" ]]; then
            port="$fixed_port"
        elif [[ -n "$prev_port" && $attempt -eq 1 ]] && pgc_port_free "$prev_port"; then
            port="$prev_port"
        else
            port=$(pgc_pick_port) || return 1
        fi
        {
            echo "# Written by scripts/pgcluster.sh at each start"
            echo "port = $port"
            for kv in "$@"; do
                [[ "${kv%%=*}" == port ]] && continue
                echo "${kv%%=*} = ${kv#*=}"
            done
        } >"$extra" || return 1
        [[ $(id -u) -ne 0 ]] || chown postgres: "$extra" || return 1

        local out
        if out=$(pgc_as_owner "$PGC_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start 2>&1); then
            PGC_PORT="$port"
            echo "pgcluster: started $dir on 127.0.0.1:$port" >&2
            return 0
        fi
        if [[ -z "$fixed_port" ]] && tail -n 20 "$log" | grep -q 'could not bind\|Address already in use'; then
            echo "pgcluster: port $port was taken, trying another" >&2
            continue
        fi
        printf '%s\n' "$out" >&2
        tail -n 20 "$log" >&2
        pgc_die "the server in $dir did not start (pg_ctl's output and the end of $log above)"
        return 1
    done
    pgc_die "gave up finding a free port for $dir"
}

pgc_stop() {
    local dir data
    dir=$(pgc_abspath "${1:?usage: pgc_stop DIR}")
    [[ -e "$dir/data/PG_VERSION" ]] || return 0
    pgc_find_bin || return 1
    pgc_status "$dir" >/dev/null || return 0
    data=$(pgc_datadir "$dir")
    pgc_as_owner "$PGC_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null \
        || pgc_die "could not stop the server in $dir" || return 1
    echo "pgcluster: stopped $dir" >&2
}

pgc_destroy() {
    local dir home
    dir=$(pgc_abspath "${1:?usage: pgc_destroy DIR}")
    [[ -e "$dir" ]] || return 0
    pgc_stop "$dir" || return 1
    # Data kept elsewhere because postgres could not reach DIR.
    if [[ -L "$dir/data" ]]; then
        home=$(dirname "$(readlink "$dir/data")")
        [[ "$home" == /var/tmp/pgtrail-clusters/* ]] && rm -rf "$home"
    fi
    rm -rf "$dir"
}

pgc_conninfo() {
    local dir port
    dir=$(pgc_abspath "${1:?usage: pgc_conninfo DIR [DB]}")
    port=$(pgc_status "$dir") || { pgc_die "no server running in $dir"; return 1; }
    echo "host=127.0.0.1 port=$port user=postgres dbname=${2:-postgres}"
}

pgc_url() {
    local dir port
    dir=$(pgc_abspath "${1:?usage: pgc_url DIR [DB]}")
    port=$(pgc_status "$dir") || { pgc_die "no server running in $dir"; return 1; }
    echo "postgres://postgres@127.0.0.1:$port/${2:-postgres}"
}

# pgc_psql DIR [psql args...]: psql as superuser, stopping at the first error,
# without reading ~/.psqlrc.
pgc_psql() {
    local dir port
    dir=$(pgc_abspath "${1:?usage: pgc_psql DIR [psql args...]}")
    shift
    port=$(pgc_status "$dir") || { pgc_die "no server running in $dir"; return 1; }
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
    [[ $# -ge 2 ]] || usage
    cmd="$1"
    shift
    case "$cmd" in
        start) pgc_start "$@"; echo "$PGC_PORT" ;;
        stop) pgc_stop "$@" ;;
        destroy) pgc_destroy "$@" ;;
        status) pgc_status "$@" ;;
        psql) pgc_psql "$@" ;;
        url) pgc_url "$@" ;;
        conninfo) pgc_conninfo "$@" ;;
        *) usage ;;
    esac
fi
