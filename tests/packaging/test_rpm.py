"""Build slotmgr's RPM with `make rpm`, as the README says, and check what it ships.

Runs on the host (no systemd needed), in a few seconds; marked `slow` all the
same since it runs rpmbuild.  Needs what scripts/setup installs: rpmbuild, rpm,
rpmlint, rpm2cpio, cpio, groff and the project's .venv, which the build uses
(the system python3 has neither click nor jeepney).  Without rpmbuild the
module is skipped, except under CI (CI=true) where it fails.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "rpm" / "slotmgr.spec"
RPMLINT_CONFIG = REPO / "packaging" / "rpm" / "rpmlint.toml"
RPMLINTRC = REPO / "packaging" / "rpm" / "slotmgr.rpmlintrc"
TOOLS = ("rpmbuild", "rpm", "rpmlint", "rpm2cpio", "cpio", "groff")
APT_HINT = "apt-get install rpm rpmlint rpm2cpio cpio groff-base python3-packaging"
# `make rpm` as root runs it on a machine set up by scripts/setup: a plain
# PATH, whose python3 is the system's (no click, no jeepney).
MAKE_ENV = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
BUILT_WITH = re.compile(r"^build\.sh: building with (\S+) ", re.MULTILINE)

# Everything the package installs outside site-packages, exactly.
EXPECTED_FILES = {
    "/etc/slotmgr",
    "/etc/slotmgr/slots.conf",
    "/usr/bin/slotmgr",
    "/usr/lib/systemd/system/slotmgr.slice",
    "/usr/lib/systemd/system/slotmgr-ingest.service",
    "/usr/lib/systemd/system/slotmgr-ingest.timer",
    "/usr/lib/systemd/system-preset/50-slotmgr.preset",
    "/usr/share/bash-completion/completions/slotmgr",
    "/usr/share/licenses/slotmgr",
    "/usr/share/licenses/slotmgr/LICENSE",
    "/usr/share/man/man1/slotmgr.1.gz",
    "/var/lib/slotmgr",
}
SITELIB_RE = re.compile(r"^/usr/lib/python(3\.\d+)/site-packages/")

# `rpm -qp --requires`, rpmlib(...) features left out (they depend on the rpm
# that builds).  {py} is the build's python3 X.Y, {evr} the package's V-R.
EXPECTED_REQUIRES = {
    "/bin/sh",  # interpreter of the %post/%preun/%postun scriptlets
    "/usr/bin/python3",  # shebang of /usr/bin/slotmgr (rpm's script.req)
    "config(slotmgr) = {evr}",  # %config(noreplace) /etc/slotmgr/slots.conf
    "python(abi) = {py}",  # files under /usr/lib/python{py}/
    "python3 >= 3.9",  # explicit, from here on what RHEL 9 / EPEL 9 ship
    "python3-click",
    "python3-jeepney",
    "python{py}dist(click) >= 7.1",  # generated from setup.cfg install_requires
    "python{py}dist(jeepney) >= 0.7",
    "systemd >= 252",
    "catatonit",  # the jobs' PID-namespace init (RHEL 9/10 AppStream)
    "util-linux",  # unshare and setpriv, catatonit's namespace on systemd 252
}

# rpmlint warnings that are kept (not filtered in packaging/rpm/slotmgr.rpmlintrc,
# which explains each filter), and why.  Any other warning, and any error, fails.
KEPT_RPMLINT_WARNINGS = {
    # slotmgr has no public home page yet.  Add URL: to the spec when it has
    # one, then drop this entry.
    "no-url-tag",
}


def _tools_or_skip() -> None:
    if shutil.which("rpmbuild") is None:
        if os.environ.get("CI"):
            pytest.fail(f"rpmbuild is missing on CI: {APT_HINT}")
        pytest.skip(f"rpmbuild is not installed ({APT_HINT})")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: {APT_HINT}")


def _run(*cmd: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def _source_version() -> str:
    text = (REPO / "slotmgr" / "__init__.py").read_text()
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    assert match, "no __version__ in slotmgr/__init__.py"
    return match.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _tools_or_skip()
    topdir = tmp_path_factory.mktemp("rpmbuild")
    proc = _run("make", "rpm", f"RPM_TOPDIR={topdir}", cwd=REPO, env=MAKE_ENV)
    log = topdir / "build.log"
    log.write_text(proc.stdout + proc.stderr)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"make rpm failed (log: {log}):\n{output[-6000:]}"
    rpms = sorted((topdir / "RPMS" / "noarch").glob("slotmgr-[0-9]*.noarch.rpm"))
    batch = sorted((topdir / "RPMS" / "noarch").glob("slotmgr-batch-*.noarch.rpm"))
    condor = sorted((topdir / "RPMS" / "noarch").glob("slotmgr-htcondor-*.noarch.rpm"))
    srpms = sorted((topdir / "SRPMS").glob("slotmgr-*.src.rpm"))
    assert len(rpms) == len(batch) == len(condor) == len(srpms) == 1, (
        f"expected one of each: {rpms} {batch} {condor} {srpms}"
    )
    python = BUILT_WITH.search(output)
    assert python, f"build.sh did not say which python3 it built with:\n{output[-3000:]}"
    return {
        "rpm": rpms[0],
        "batch": batch[0],
        "htcondor": condor[0],
        "srpm": srpms[0],
        "topdir": topdir,
        "python": Path(python.group(1)),
    }


def test_make_rpm_builds_with_the_project_venv(built: dict[str, Path]) -> None:
    # The README's `make rpm` on a machine set up by scripts/setup: the system
    # python3 lacks click and jeepney, the .venv has them.
    assert built["python"] == REPO / ".venv" / "bin" / "python3"


def _query(rpm: Path, *args: str) -> str:
    proc = _run("rpm", "-qp", *args, rpm)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _file_list(rpm: Path) -> list[str]:
    return _query(rpm, "-l").split()


def _python_version(rpm: Path) -> str:
    versions = {m.group(1) for path in _file_list(rpm) if (m := SITELIB_RE.match(path))}
    assert len(versions) == 1, f"site-packages of exactly one python3.X expected, got {versions}"
    return versions.pop()


def test_version_matches_source(built: dict[str, Path]) -> None:
    version = _query(built["rpm"], "--qf", "%{VERSION}")
    assert version == _source_version()
    assert built["rpm"].name == f"slotmgr-{version}-1.noarch.rpm"
    assert _query(built["srpm"], "--qf", "%{VERSION}") == version


def test_file_list(built: dict[str, Path]) -> None:
    files = _file_list(built["rpm"])
    assert len(files) == len(set(files))
    other = {f for f in files if not SITELIB_RE.match(f)}
    assert other == EXPECTED_FILES

    py = _python_version(built["rpm"])
    sitelib = f"/usr/lib/python{py}/site-packages"
    version = _source_version()
    for path in (
        "slotmgr",
        "slotmgr/__init__.py",
        "slotmgr/cli/main.py",
        "slotmgr/errors.py",
        "slotmgr/stophook.sh",  # the jobs' ExecStopPost= hook, package data
        f"slotmgr-{version}.dist-info/METADATA",
        f"slotmgr-{version}.dist-info/entry_points.txt",
    ):
        assert f"{sitelib}/{path}" in files, path
    # Byte-compiled for that python, as brp-python-bytecompile does on RHEL.
    tag = "cpython-" + py.replace(".", "")
    assert f"{sitelib}/slotmgr/cli/__pycache__/main.{tag}.pyc" in files
    # Every module of every layer (a sub-package left out of the wheel would
    # break only the installed slotmgr, not the checkout's).
    for module in sorted(Path(REPO, "slotmgr").rglob("*.py")):
        if "__pycache__" not in module.parts:
            assert f"{sitelib}/{module.relative_to(REPO)}" in files, module
    # Only the slotmgr package and its dist-info; no pip leftovers.
    for f in files:
        if f.startswith(sitelib + "/"):
            top = f[len(sitelib) + 1 :].split("/")[0]
            assert top in ("slotmgr", f"slotmgr-{version}.dist-info"), f
    assert not [f for f in files if f.endswith(("/RECORD", "/REQUESTED", "/direct_url.json"))]


def test_requires(built: dict[str, Path]) -> None:
    py = _python_version(built["rpm"])
    evr = _query(built["rpm"], "--qf", "%{VERSION}-%{RELEASE}")
    requires = set(_query(built["rpm"], "--requires").splitlines())
    rpmlib = {r for r in requires if r.startswith("rpmlib(")}
    expected = {r.format(py=py, evr=evr) for r in EXPECTED_REQUIRES}
    assert requires - rpmlib == expected


def test_file_attributes(built: dict[str, Path]) -> None:
    out = _query(
        built["rpm"],
        "--qf",
        "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
    )
    attrs = {}
    for line in out.splitlines():
        perms, owner, flags, path = line.split(" ", 3)
        attrs[path] = (perms, owner, flags)
        assert owner == "root:root", line
        assert perms[8] != "w", f"world-writable: {line}"
    assert attrs["/var/lib/slotmgr"][0] in ("drwxr-xr-x", "drwxr-x---")
    assert attrs["/etc/slotmgr"][0] == "drwxr-xr-x"
    assert attrs["/etc/slotmgr/slots.conf"][0] == "-rw-r--r--"
    assert set(attrs["/etc/slotmgr/slots.conf"][2]) >= {"c", "n"}  # %config(noreplace)
    assert attrs["/usr/bin/slotmgr"][0] == "-rwxr-xr-x"
    assert "l" in attrs["/usr/share/licenses/slotmgr/LICENSE"][2]  # %license


def test_the_batch_subpackage_holds_the_sudo_entry_and_its_rule_only(
    built: dict[str, Path],
) -> None:
    out = _query(
        built["batch"],
        "--qf",
        "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
    )
    attrs = {line.split(" ", 3)[3]: line.split(" ", 3)[:3] for line in out.splitlines()}
    assert set(attrs) == {
        "/usr/libexec/slotmgr",
        "/usr/libexec/slotmgr/batch-run",
        "/etc/sudoers.d/slotmgr",
    }, attrs
    assert attrs["/usr/libexec/slotmgr/batch-run"][:2] == ["-rwxr-xr-x", "root:root"]
    # sudo ignores a rule file others may write, and visudo wants 0440.
    assert attrs["/etc/sudoers.d/slotmgr"][:2] == ["-r--r-----", "root:root"]
    assert set(attrs["/etc/sudoers.d/slotmgr"][2]) >= {"c", "n"}
    requires = _query(built["batch"], "--requires")
    assert "sudo" in requires.split() and "slotmgr = 0.1.0-1" in requires, requires


def test_the_htcondor_subpackage_holds_the_wrapper_and_its_configuration(
    built: dict[str, Path],
) -> None:
    files = set(_file_list(built["htcondor"]))
    assert files == {
        "/usr/libexec/slotmgr/htcondor-wrapper",
        "/etc/condor",
        "/etc/condor/config.d",
        "/etc/condor/config.d/50-slotmgr.conf",
    }, files
    config = (REPO / "packaging" / "htcondor" / "50-slotmgr.conf").read_text()
    assert "USER_JOB_WRAPPER = /usr/libexec/slotmgr/htcondor-wrapper" in config
    assert "slotmgr-batch = 0.1.0-1" in _query(built["htcondor"], "--requires")


def test_scriptlets_never_restart_the_slice(built: dict[str, Path]) -> None:
    scripts = _query(built["rpm"], "--scripts")
    for section in ("postinstall", "preuninstall", "postuninstall"):
        assert f"{section} scriptlet" in scripts
    assert "slotmgr.slice" in scripts
    assert "restart" not in scripts  # restarting a slice stops every job in it


def test_rpmlint(built: dict[str, Path]) -> None:
    # The RPM, the SRPM and the spec in one run: rpmlint reports a filter of the
    # rpmlintrc that matched nothing as an error, so unused filters fail too.
    proc = _run("rpmlint", "-c", RPMLINT_CONFIG, "-r", RPMLINTRC, built["rpm"], built["srpm"], SPEC)
    report = proc.stdout + proc.stderr
    findings = re.findall(r"^slotmgr(?:\.noarch|\.src|\.spec): ([EW]): (\S+)", report, re.MULTILINE)
    errors = [name for kind, name in findings if kind == "E"]
    warnings = {name for kind, name in findings if kind == "W"}
    assert not errors, report
    assert warnings <= KEPT_RPMLINT_WARNINGS, report
    assert re.search(r"\b0 errors\b", report), report
    assert proc.returncode == 0, report


@pytest.fixture(scope="module")
def installed_root(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    proc = _run("rpm", "--root", root, "--initdb")
    assert proc.returncode == 0, proc.stderr
    # --nodeps: the empty root has no python3, click, jeepney, systemd or
    # /bin/sh, so none of the Requires can be met there (test_requires checks
    # them instead).  --noscripts: rpm runs the scriptlets chrooted into the
    # root, where there is no /bin/sh to run them; they only call systemctl,
    # which the real-systemd test (tests/packaging/guest_install_check.sh)
    # covers.
    proc = _run("rpm", "--root", root, "-ivh", "--nodeps", "--noscripts", built["rpm"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr
    return root


def test_installed_slotmgr_runs(built: dict[str, Path], installed_root: Path) -> None:
    py = _python_version(built["rpm"])
    python = str(built["python"])  # the python3 that build.sh built with
    proc = _run(
        python,
        "-c",
        "import sys, os, click, jeepney; print('%d.%d' % sys.version_info[:2]);"
        "print(os.path.dirname(os.path.dirname(click.__file__)));"
        "print(os.path.dirname(os.path.dirname(jeepney.__file__)))",
    )
    assert proc.returncode == 0, proc.stderr
    host_py, click_dir, jeepney_dir = proc.stdout.split("\n")[:3]
    assert host_py == py, f"{python} is python{host_py}, the RPM was built for python{py}"

    root_sitelib = installed_root / f"usr/lib/python{py}/site-packages"
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=os.pathsep.join([str(root_sitelib), click_dir, jeepney_dir]),
    )
    script = installed_root / "usr/bin/slotmgr"
    assert script.read_text().splitlines()[0] == "#!/usr/bin/python3 -s"

    proc = _run(
        python,
        "-s",
        "-c",
        "import slotmgr.cli.main; print(slotmgr.cli.main.__file__)",
        env=env,
        cwd=installed_root,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(root_sitelib)), "imported slotmgr from elsewhere"

    proc = _run(python, "-s", script, "--version", env=env, cwd=installed_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _source_version() in proc.stdout

    # Every top-level command of the installed CLI has its section in the man page.
    proc = _run(python, "-s", script, "--help", env=env, cwd=installed_root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = re.findall(r"^  (\S+)", proc.stdout.split("Commands:", 1)[-1], re.MULTILINE)
    page = gzip.decompress((installed_root / "usr/share/man/man1/slotmgr.1.gz").read_bytes())
    for name in commands:
        assert f'.SS "slotmgr {name}"'.encode() in page, name


def test_installed_man_page(installed_root: Path) -> None:
    page = gzip.decompress((installed_root / "usr/share/man/man1/slotmgr.1.gz").read_bytes())
    text = page.decode()
    assert text.startswith('.\\"') and "\n.TH SLOTMGR 1 " in text
    for section in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        '"EXIT STATUS"',
        "FILES",
        '"SEE ALSO"',
    ):
        assert f"\n.SH {section}\n" in text, section
    for ref in ("systemd-run (1)", "systemctl (1)", "systemd.resource-control (5)"):
        assert f".BR {ref}" in text, ref
    assert "\\fB64\\fR (USAGE)" in text  # from slotmgr.errors.ExitCode
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()


def test_installed_bash_completion(installed_root: Path) -> None:
    completion = installed_root / "usr/share/bash-completion/completions/slotmgr"
    assert "_SLOTMGR_COMPLETE" in completion.read_text()
    proc = _run("bash", "--norc", "-c", f'source "{completion}" && complete -p slotmgr')
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^complete .*-F _slotmgr_completion.* slotmgr$", proc.stdout.strip())


def test_installed_config_and_units(installed_root: Path) -> None:
    conf = (installed_root / "etc/slotmgr/slots.conf").read_text()
    assert conf == (REPO / "packaging" / "slots.conf.example").read_text()
    assert all(not line.strip() or line.startswith("#") for line in conf.splitlines())
    for word in ("[slot1]", "MemoryMax=", "AllowedCPUs=", "IOWeight=", "TasksMax="):
        assert word in conf, word
    for unit in (REPO / "units").iterdir():
        installed = installed_root / "usr/lib/systemd/system" / unit.name
        assert installed.read_bytes() == unit.read_bytes(), unit.name
    state = installed_root / "var/lib/slotmgr"
    assert state.is_dir() and not any(state.iterdir())


def test_slurm_subpackage_only_with_slurm() -> None:
    """slotmgr-slurm (the SPANK plugin, packaging/slurm/) is built only by
    `rpmbuild --with slurm`, which needs slurm-devel and makes the build
    arch-specific; the default build stays noarch, without it."""
    _tools_or_skip()
    default = _run("rpmspec", "-q", "--qf", "%{NAME} %{ARCH}\n", SPEC, check=True).stdout
    assert "slotmgr-slurm" not in default, default
    with_slurm = _run(
        "rpmspec", "-q", "--with", "slurm", "--qf", "%{NAME}\n", SPEC, check=True
    ).stdout.split()
    assert with_slurm == ["slotmgr", "slotmgr-batch", "slotmgr-htcondor", "slotmgr-slurm"]
    arch = _run("rpmspec", "-q", "--srpm", "--qf", "%{ARCH}", SPEC, check=True).stdout
    slurm_arch = _run(
        "rpmspec", "-q", "--srpm", "--with", "slurm", "--qf", "%{ARCH}", SPEC, check=True
    ).stdout
    assert arch == "noarch" and slurm_arch != "noarch", (arch, slurm_arch)
    requires = _run(
        "rpmspec", "-q", "--with", "slurm", "--buildrequires", SPEC, check=True
    ).stdout.splitlines()
    assert "slurm-devel >= 23.11" in requires, requires
