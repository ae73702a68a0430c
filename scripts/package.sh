#!/usr/bin/env bash
# Builds pgtrail's Debian package and prints the path of the .deb (docs/packaging.md).
#
#   bash scripts/package.sh [--no-build]
#
# Installs cargo-deb first when it is missing (`cargo install cargo-deb --locked`, about 2
# minutes on two cores). Then: `cargo build --release` (skipped with --no-build, which packages the
# target/release/pgtrail already there, as the package test does inside `cargo test --release`),
# the man pages and completions that `pgtrail generate-files` writes from the command line's own
# definition, the systemd units with the package's paths, and `cargo deb --no-build --strip` (which
# prints the path).
# Honours CARGO_TARGET_DIR. Progress goes to stderr; stdout is only the .deb's path.
set -euo pipefail

die() { echo "package: $*" >&2; exit 1; }

build=yes
case "${1:-}" in
    "") ;;
    --no-build) build=no ;;
    *) die "unknown argument $1 (usage: bash scripts/package.sh [--no-build])" ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package: installing cargo-deb (cargo install cargo-deb --locked)" >&2
    # Its own temporary target dir: CARGO_TARGET_DIR may be the one `cargo test` is holding.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked >&2
fi

target=${CARGO_TARGET_DIR:-$repo/target}
if [[ $build == yes ]]; then
    cargo build --release --locked --bin pgtrail >&2
fi
binary="$target/release/pgtrail"
[[ -x $binary ]] || die "$binary is missing: run without --no-build, or cargo build --release first"

# The paths Cargo.toml's [package.metadata.deb] assets name as target/release/package/...
out="$target/release/package"
rm -rf "$out"
"$binary" generate-files "$out" >/dev/null
gzip -9n "$out"/man1/*.1
mkdir -p "$out/systemd"
for unit in pgtrail.service pgtrail@.service; do
    # The package's binary is /usr/bin/pgtrail and its documentation under /usr/share/doc; the
    # files in systemd/ name /usr/local for an install by hand, in their "Install by hand"
    # comment (up to its closing "#" line), which the package's copy replaces.
    sed -e '/^# Install by hand/,/^#$/c\
# Installed by the pgtrail Debian package, with the binary at /usr/bin/pgtrail\
# (docs/packaging.md).\
#' \
        -e 's|^ExecStart=/usr/local/bin/pgtrail |ExecStart=/usr/bin/pgtrail |' \
        -e 's|^Documentation=.*|Documentation=man:pgtrail(1) file:///usr/share/doc/pgtrail/README.md|' \
        "systemd/$unit" >"$out/systemd/$unit"
    if grep -q '/usr/local' "$out/systemd/$unit"; then
        die "systemd/$unit still names /usr/local after the rewrite (its comments included)"
    fi
done

# --strip: the release profile keeps line tables (debug = 1), which would make the binary 150 MB.
cargo deb --no-build --locked --strip
