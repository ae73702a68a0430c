#!/usr/bin/env bash
# Installs what pgtrail's scripts and tests need on Debian 12, from Debian's own
# repositories, and nothing that is already there. Safe to run again.
#
#   bash scripts/install-deps.sh [EXTRA_PACKAGE...]
#
# Always: postgresql-15 (server, initdb, pg_ctl; pgbench ships in it),
# postgresql-client-15 (psql, pg_recvlogical), postgresql-15-wal2json, openssl (the
# TLS test makes a self-signed certificate with it), prometheus (the metrics test
# starts its own server, on a free port, that scrapes the daemon), man-db (the
# package test reads the man pages with `man -l`), and a
# C compiler and linker (gcc, libc6-dev) when `cc` is missing: cargo links with it, and the
# zstd crate (archive files) compiles its bundled libzstd with it.
# EXTRA_PACKAGE names are added to that list (the benchmark has none today).
#
# It never starts or stops a PostgreSQL cluster itself. If the postgresql-15
# package creates and starts Debian's default cluster 15/main, that cluster is
# left alone: pgtrail's scripts and tests run their own private clusters.
set -euo pipefail

die() { echo "install-deps: $*" >&2; exit 1; }

wanted=(postgresql-15 postgresql-client-15 postgresql-15-wal2json openssl prometheus man-db)
if ! command -v cc >/dev/null 2>&1; then
    wanted+=(gcc libc6-dev)
fi
wanted+=("$@")

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian 12 (bookworm)"

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

missing=()
for pkg in "${wanted[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all present (${wanted[*]})"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    die "need root to install ${missing[*]}: run as root or install sudo"
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null

for pkg in "${missing[@]}"; do
    is_installed "$pkg" || die "$pkg is still not installed after apt-get install"
done
echo "install-deps: done"
