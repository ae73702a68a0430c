#!/usr/bin/env bash
# Installs what the web view's heavier tests need, and nothing already there.
# Safe to run again.
#
#   bash scripts/install-web-test-tools.sh [schemathesis] [browser]
#
# schemathesis: the API fuzzer, from PyPI (pinned), in a virtualenv at
#   target/tools/venv (so the system Python is left alone); needs python3.
# browser: Debian's chromium and chromium-driver (/usr/bin/chromium,
#   /usr/bin/chromedriver) for the headless browser test and screenshots.
# With no argument, both.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/target/tools/venv"
SCHEMATHESIS_VERSION=4.32.5

die() { echo "install-web-test-tools: $*" >&2; exit 1; }

# apt_install PACKAGE...: with apt-get, as root (sudo when not root).
apt_install() {
    local -a as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    echo "install-web-test-tools: installing $*"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null
}

want_st=0
want_browser=0
[[ $# -eq 0 ]] && set -- schemathesis browser
for what in "$@"; do
    case "$what" in
        schemathesis) want_st=1 ;;
        browser) want_browser=1 ;;
        *) die "unknown tool '$what': use schemathesis and/or browser" ;;
    esac
done

if [[ $want_st -eq 1 ]]; then
    if [[ -x "$venv/bin/schemathesis" ]] && "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        echo "install-web-test-tools: schemathesis $SCHEMATHESIS_VERSION present"
    else
        # A bare Debian 12 has neither python3 nor its venv module (ensurepip).
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            apt_install python3 python3-venv
        fi
        echo "install-web-test-tools: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
        "$venv/bin/pip" install -q --disable-pip-version-check \
            -c "$repo/scripts/schemathesis-constraints.txt" "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
        "$venv/bin/schemathesis" --version >/dev/null || die "schemathesis does not run after installing it"
    fi
fi

if [[ $want_browser -eq 1 ]]; then
    missing=()
    for pkg in chromium chromium-driver; do
        [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" == installed ]] || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "install-web-test-tools: chromium and chromium-driver present"
    else
        apt_install "${missing[@]}"
    fi
fi
