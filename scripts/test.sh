#!/usr/bin/env bash
# All of pgtrail's tests: the unit tests and the integration test binary
# (`--test integration`, which runs real PostgreSQL servers), in release mode.
#
#   bash scripts/test.sh [cargo test arguments...]
#
# e.g. `bash scripts/test.sh --test integration -- replication` runs the
# integration tests whose names contain "replication". Installs PostgreSQL 15
# and wal2json first if they are missing. Exits non-zero if any test fails.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=pgcluster.sh
source "$repo/scripts/pgcluster.sh"

bash "$repo/scripts/install-deps.sh"
# The web view's API fuzzer (schemathesis) and headless Chromium for the browser test.
bash "$repo/scripts/install-web-test-tools.sh"

# Debian keeps initdb, pg_ctl and postgres out of PATH; the tests find them here.
pgc_find_bin
export PATH="$PGC_BIN:$PATH"

cd "$repo"
echo "test: cargo test --release $*" >&2
exec cargo test --release "$@"
