#!/bin/sh
# guest_install_check.sh RPM — install slotmgr's RPM the crude way inside a
# throwaway test-bed guest, and check that the install works.
#
# Contract:
#  - Runs as root INSIDE a disposable guest (VM or container) with systemd as
#    PID 1, and refuses to run unless SLOTMGR_GUEST=1 is set: it writes into /.
#  - RPM is the noarch package built by packaging/rpm/build.sh (a path the
#    guest can read).  The guest needs rpm2cpio, cpio and /usr/bin/python3 with
#    click and jeepney importable (Debian: rpm2cpio cpio python3-click
#    python3-jeepney); it needs no rpm database.
#  - It extracts the payload into / with `rpm2cpio RPM | cpio -idmu` (files,
#    modes, mtimes; no scriptlets, no dependency checks), makes the RPM's
#    /usr/lib/python3.X/site-packages importable by /usr/bin/python3 when that
#    interpreter does not look there (Debian: through a .pth file in its
#    dist-packages), then does what the RPM's %post does: systemctl daemon-reload.
#  - It checks that `slotmgr --version` prints the RPM's version and that
#    systemd has loaded slotmgr.slice from /usr/lib/systemd/system.
#  - Exit status 0 when all of that holds; otherwise non-zero, with the reason
#    on stderr.  Afterwards the caller runs jobs with the installed
#    /usr/bin/slotmgr and slotmgr.slice.
set -eu

fail() { echo "guest_install_check: $*" >&2; exit 1; }

[ $# -eq 1 ] || fail "usage: SLOTMGR_GUEST=1 $0 RPM"
[ "${SLOTMGR_GUEST:-}" = 1 ] || fail "writes into /: run it only in a throwaway guest, with SLOTMGR_GUEST=1"
[ "$(id -u)" = 0 ] || fail "must run as root"
rpm=$1
[ -f "$rpm" ] || fail "no such file: $rpm"
case "$(basename "$rpm")" in
    slotmgr-*.noarch.rpm) ;;
    *) fail "not slotmgr's noarch RPM: $rpm" ;;
esac
version=$(basename "$rpm" .noarch.rpm | sed 's/^slotmgr-\(.*\)-[^-]*$/\1/')

rpm=$(cd "$(dirname "$rpm")" && pwd)/$(basename "$rpm")
(cd / && rpm2cpio "$rpm" | cpio -idmu --quiet) || fail "could not extract $rpm into /"

sitelib=
for dir in /usr/lib/python3.*/site-packages; do
    [ -f "$dir/slotmgr/__init__.py" ] && sitelib=$dir
done
[ -n "$sitelib" ] || fail "no slotmgr package under /usr/lib/python3.*/site-packages after extraction"
/usr/bin/python3 - "$sitelib" <<'EOF' || fail "could not make $sitelib importable"
import os, site, sys
sitelib = sys.argv[1]
if sitelib not in sys.path:
    target = [d for d in site.getsitepackages() if os.path.isdir(d)][0]
    with open(os.path.join(target, "slotmgr-rpm.pth"), "w") as f:
        f.write(sitelib + "\n")
EOF

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || fail "systemctl daemon-reload failed"
else
    fail "systemd is not running in this guest"
fi

out=$(/usr/bin/slotmgr --version 2>&1) || fail "slotmgr --version failed: $out"
case "$out" in
    *"$version"*) ;;
    *) fail "slotmgr --version printed '$out', expected version $version" ;;
esac

state=$(systemctl show --value -p LoadState slotmgr.slice)
[ "$state" = loaded ] || fail "slotmgr.slice LoadState=$state, expected loaded"
path=$(systemctl show --value -p FragmentPath slotmgr.slice)
# Debian 12 reports the merged-/usr path through its /lib symlink: the same file.
[ "$(readlink -f "$path")" = /usr/lib/systemd/system/slotmgr.slice ] \
    || fail "slotmgr.slice loaded from '$path'"

echo "guest_install_check: slotmgr $version installed from $(basename "$rpm")"
