#!/bin/bash
# Build slotmgr's source RPM and noarch RPM:  packaging/rpm/build.sh [TOPDIR]
#
# TOPDIR (default: rpmbuild/ at the top of the work tree) becomes rpmbuild's
# %_topdir: the results land in TOPDIR/SRPMS/ and TOPDIR/RPMS/noarch/, and the
# paths of both are printed last, one a line.
#
# The source tarball holds the files git tracks or would track (tracked plus
# untracked-but-not-ignored, as they are in the work tree now), so uncommitted
# work is packaged too.  The version is slotmgr/__init__.py's and must equal
# the spec's Version.
#
# On a host whose rpm database does not know rpm itself (Debian's `rpm`
# package), the BuildRequires cannot be checked, so rpmbuild gets --nodeps.
# Without the Fedora/RHEL Python macros the spec builds with python3 on PATH:
# the project's .venv (made by scripts/setup, with pip, setuptools, wheel,
# click and jeepney) goes first on PATH when there is one.
# Extra rpmbuild options can be passed in RPMBUILD_OPTS.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
topdir=${1:-$top/rpmbuild}
mkdir -p "$topdir"
topdir=$(cd "$topdir" && pwd)
cd "$top"
spec=packaging/rpm/slotmgr.spec

version=$(sed -n "s/^__version__ *= *[\"']\([^\"']*\)[\"'].*/\1/p" slotmgr/__init__.py)
spec_version=$(rpmspec -q --srpm --qf '%{VERSION}\n' "$spec")
if [ -z "$version" ] || [ "$version" != "$spec_version" ]; then
    echo "build.sh: slotmgr/__init__.py has version '$version' but $spec has '$spec_version':" \
         "update Version (and %changelog) in the spec" >&2
    exit 1
fi

rm -rf "$topdir"/{BUILD,BUILDROOT,RPMS,SRPMS,SOURCES,SPECS}
mkdir -p "$topdir"/{BUILD,BUILDROOT,RPMS,SRPMS,SOURCES,SPECS}

# The tarball: slotmgr-VERSION/<every file git tracks or would track>.
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --create --null --files-from=- --sort=name \
          --owner=0 --group=0 --numeric-owner --mode=go-w \
          --transform="s,^,slotmgr-$version/," \
    | gzip -n > "$topdir/SOURCES/slotmgr-$version.tar.gz"
cp "$spec" "$topdir/SPECS/"

nodeps=()
if ! rpm -q rpm >/dev/null 2>&1; then
    nodeps=(--nodeps)
fi

# Without the Fedora/RHEL macros the spec builds with the python3 on PATH.
if [ -z "$(rpm --eval '%{?pyproject_wheel:1}')" ]; then
    if [ -x "$top/.venv/bin/python3" ]; then
        PATH="$top/.venv/bin:$PATH"
    fi
    echo "build.sh: building with $(command -v python3) ($(python3 --version 2>&1))" >&2
    missing=$(python3 -c '
from importlib.metadata import PackageNotFoundError, version
def have(dist):
    try:
        return version(dist)
    except PackageNotFoundError:
        return None
missing = [d for d in ("pip", "setuptools", "click", "jeepney") if not have(d)]
setuptools = have("setuptools")
if setuptools and not have("wheel"):
    major_minor = tuple(int(x) for x in setuptools.split(".")[:2] if x.isdigit())
    if major_minor < (70, 1):  # older setuptools build wheels with the wheel package
        missing.append("wheel")
print(" ".join(missing))')
    if [ -n "$missing" ]; then
        echo "build.sh: $(command -v python3) lacks $missing (run scripts/setup, which makes" \
             ".venv with them, or pip install $missing)" >&2
        exit 1
    fi
fi

# rpm's Python dependency generator (python3.Xdist(...) Requires) fails
# quietly when it cannot run, and the package then lacks those Requires.
pydist=$(rpm --eval '%{?__pythondist_requires}')
if [ -n "$pydist" ] && ! $pydist </dev/null >/dev/null 2>&1; then
    echo "build.sh: rpm's dependency generator '$pydist' does not run" \
         "(on Debian: apt-get install python3-packaging)" >&2
    exit 1
fi

# shellcheck disable=SC2086  # RPMBUILD_OPTS is split on purpose
rpmbuild -ba "${nodeps[@]}" --define "_topdir $topdir" ${RPMBUILD_OPTS:-} \
    "$topdir/SPECS/slotmgr.spec"

find "$topdir/SRPMS" "$topdir/RPMS" -name '*.rpm' | sort
