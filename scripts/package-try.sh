#!/usr/bin/env bash
# Installs a pgtrail .deb for real, with dpkg -i, into a throwaway copy of this system, and checks
# what the maintainer scripts do (docs/packaging.md): the `pgtrail` user and group, /etc/pgtrail's
# owner and modes, a second install and a second postinst run changing nothing, remove keeping the
# config, purge dropping it and the statoverrides, and an install after a purge.
#
#   bash scripts/package-try.sh [DEB]       (as root; DEB defaults to what scripts/package.sh builds)
#
# The copy: a private mount namespace (unshare -m) with overlays over /etc, /usr, /lib and
# /var/lib/dpkg, all dropped when the script ends; the host's files and users are not changed. It
# needs CAP_SYS_ADMIN (a VM, or a privileged container), which is why it is not part of the tests.
set -euo pipefail

die() { echo "package-try: $*" >&2; exit 1; }

if [[ ${PGTRAIL_TRY_INSIDE:-} != 1 ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root (it mounts overlays in a private namespace)"
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    deb=${1:-$(bash "$repo/scripts/package.sh" | tail -n 1)}
    [[ -f $deb ]] || die "no package at $deb"
    exec env PGTRAIL_TRY_INSIDE=1 unshare --mount --propagation private \
        bash "${BASH_SOURCE[0]}" "$(realpath "$deb")"
fi

deb=$1
scratch=$(mktemp -d)
trap 'umount -l /var/lib/dpkg /lib /usr /etc; rm -rf "$scratch"' EXIT
for dir in etc usr lib var/lib/dpkg; do
    name=${dir//\//_}
    mkdir -p "$scratch/$name.up" "$scratch/$name.work"
    mount -t overlay overlay \
        -o "lowerdir=/$dir,upperdir=$scratch/$name.up,workdir=$scratch/$name.work" "/$dir"
done

check() { # DESCRIPTION COMMAND...: dies unless COMMAND succeeds
    local what=$1
    shift
    "$@" >/dev/null 2>&1 || die "not so: $what ($*)"
    echo "ok: $what"
}
owner_mode() { [[ $(stat -c '%U:%G %a' "$1") == "$2" ]]; }
installed_as_expected() {
    check "user pgtrail, no login" bash -c 'getent passwd pgtrail | grep -q ":/nonexistent:/usr/sbin/nologin$"'
    check "group pgtrail" getent group pgtrail
    check "/etc/pgtrail root:pgtrail 750" owner_mode /etc/pgtrail "root:pgtrail 750"
    check "the config root:pgtrail 640" owner_mode /etc/pgtrail/pgtrail.toml "root:pgtrail 640"
    check "user pgtrail reads the config" su -s /bin/sh pgtrail -c 'test -r /etc/pgtrail/pgtrail.toml'
    check "pgtrail --version" /usr/bin/pgtrail --version
    check "man finds pgtrail(1)" man -w pgtrail
}

# --force-depends: only when this system lacks a dependency (all are in Debian 12's base).
dpkg -i --force-depends "$deb" >/dev/null
installed_as_expected
uid=$(id -u pgtrail)
dpkg -i --force-depends "$deb" >/dev/null
/var/lib/dpkg/info/pgtrail.postinst configure "$(dpkg-query -W -f '${Version}' pgtrail)"
check "a second install and postinst keep the user" test "$(id -u pgtrail)" = "$uid"
check "and one statoverride each" test "$(dpkg-statoverride --list | grep -c ' pgtrail ')" = 2
installed_as_expected

dpkg -r pgtrail >/dev/null
check "remove takes the binary" test ! -e /usr/bin/pgtrail
check "remove keeps the config" test -f /etc/pgtrail/pgtrail.toml
dpkg -P pgtrail >/dev/null
check "purge takes the config" test ! -e /etc/pgtrail
check "purge drops the statoverrides" bash -c '! dpkg-statoverride --list | grep -q pgtrail'
check "purge keeps the user" getent passwd pgtrail

dpkg -i --force-depends "$deb" >/dev/null
installed_as_expected
echo "package-try: all checks passed for $deb (nothing on this system was changed)"
