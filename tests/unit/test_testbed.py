"""Host-only tests of the test bed's pure parts (no QEMU, no network, no root)."""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from tests.testbed import __main__ as cli
from tests.testbed import kernel, rootfs
from tests.testbed.aptsources import choose_mirror, parse_deb822, parse_one_line
from tests.testbed.cache import hash_tree, recipe_hash
from tests.testbed.console import console_tail
from tests.testbed.cpio import CpioWriter
from tests.testbed.guests import (
    ACCOUNTING_PACKAGES,
    CONDOR_PACKAGES,
    GUESTS,
    PACKAGES,
    SLURM_PACKAGES,
    SPANK_BUILD_PACKAGES,
)
from tests.testbed.initramfs import mask_entries
from tests.testbed.job import command_env, parse_env_pairs, render_job, render_mounts
from tests.testbed.kernel import (
    extract_vmlinux,
    host_suite,
    parse_candidate,
    parse_depends,
    whole_elf,
)
from tests.testbed.kmodules import decompressed_name, parse_show_depends
from tests.testbed.qemu import QemuConfig, Share, kernel_cmdline, qemu_argv
from tests.testbed.stream import EndMarkerScanner, new_token

# Invented names only: the repository must name no real mirror.
DEB822 = """\
Types: deb
# a comment inside a stanza
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


# --- apt sources ---------------------------------------------------------------------------


def test_deb822_parsing_keeps_uris_suites_and_components() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.invalid/debian",
        "http://mirror.invalid/debian-security",
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert sources[0].components == ("main",)


def test_mirror_is_the_first_non_security_source() -> None:
    security_first = "\n\n".join(reversed(DEB822.split("\n\n")))
    assert choose_mirror(parse_deb822(security_first)) == "http://mirror.invalid/debian"


def test_disabled_deb_src_and_folded_stanzas() -> None:
    text = (
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs:\n http://a.invalid/debian/\n http://b.invalid/debian\n"
        "Suites: trixie\n"
    )
    sources = parse_deb822(text)
    assert [s.uri for s in sources] == ["http://a.invalid/debian/", "http://b.invalid/debian"]
    assert choose_mirror(sources) == "http://a.invalid/debian"  # trailing slash dropped


def test_one_line_sources_with_options() -> None:
    text = (
        "# comment\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/x.gpg] http://one.invalid/debian bookworm main contrib\n"
    )
    (source,) = parse_one_line(text)
    assert source.uri == "http://one.invalid/debian"
    assert source.suites == ("bookworm",)
    assert source.components == ("main", "contrib")


def test_no_usable_mirror() -> None:
    only_security = parse_deb822(DEB822.split("\n\n")[1])
    assert choose_mirror(only_security) is None
    assert choose_mirror(parse_one_line("deb cdrom:[Debian]/ bookworm main\n")) is None


# --- recipes and cache keys ----------------------------------------------------------------


def test_recipe_hash_is_stable_and_ignores_key_order() -> None:
    a = recipe_hash({"suite": "trixie", "packages": ["dbus", "python3"]})
    b = recipe_hash({"packages": ["dbus", "python3"], "suite": "trixie"})
    assert a == b
    assert len(a) == 16 and int(a, 16) >= 0


def test_recipe_hash_changes_with_the_recipe() -> None:
    base = {"suite": "trixie", "packages": ["dbus"]}
    assert recipe_hash(base) != recipe_hash({**base, "packages": ["dbus", "kmod"]})
    assert recipe_hash(base) != recipe_hash({**base, "suite": "bookworm"})


def test_hash_tree_sees_content_mode_and_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one")
    first = hash_tree(tmp_path)
    assert hash_tree(tmp_path) == first
    (tmp_path / "a").write_text("two")
    second = hash_tree(tmp_path)
    assert second != first
    (tmp_path / "a").chmod(0o755)
    third = hash_tree(tmp_path)
    assert third != second
    (tmp_path / "l").symlink_to("/dev/null")
    assert hash_tree(tmp_path) != third


# --- QEMU command line ---------------------------------------------------------------------


def _config(tmp: Path, **kw: object) -> QemuConfig:
    base: dict[str, object] = {
        "kernel": tmp / "vmlinux",
        "initrd": tmp / "initrd.cpio",
        "cmdline": "console=ttyS0",
        "shares": (Share("root", tmp / "root"), Share("testbed", tmp / "out", readonly=False)),
        "scratch_disk": tmp / "scratch.img",
        "output_socket": tmp / "out.sock",
        "console_log": tmp / "console.log",
    }
    base.update(kw)
    return QemuConfig(**base)  # type: ignore[arg-type]


def test_qemu_argv_emulates_and_shares(tmp_path: Path) -> None:
    argv = qemu_argv("qemu", _config(tmp_path))
    joined = " ".join(argv)
    assert argv[0] == "qemu"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-m") + 1] == "2048" and argv[argv.index("-smp") + 1] == "2"
    assert "-no-reboot" in argv
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert fsdevs[0].endswith(",readonly=on") and "readonly" not in fsdevs[1]
    assert "mount_tag=root" in joined and "mount_tag=testbed" in joined
    assert "virtserialport,bus=vser.0,chardev=out,name=testbed.out" in joined
    assert "virtio-blk-pci,drive=scratch,serial=testbed-scratch" in joined
    assert f"file,id=console,path={tmp_path / 'console.log'},append=on" in joined


def test_qemu_argv_escapes_commas_in_paths(tmp_path: Path) -> None:
    odd = tmp_path / "a,b"
    argv = qemu_argv("qemu", _config(tmp_path, shares=(Share("project", odd),)))
    assert f"path={tmp_path}/a,,b," in argv[argv.index("-fsdev") + 1]


def test_qemu_argv_interactive_console(tmp_path: Path) -> None:
    argv = qemu_argv("qemu", _config(tmp_path, console_log=None, output_socket=None))
    assert argv[argv.index("-serial") + 1] == "mon:stdio"
    assert "virtio-serial-pci,id=vser" not in argv


def test_kernel_cmdline() -> None:
    words = kernel_cmdline("257", "testbed.target", extra="foo=1 bar").split()
    assert "systemd.unit=testbed.target" in words and "testbed.guest=257" in words
    assert "panic=-1" in words and "console=ttyS0" in words
    assert "tsc=reliable" in words  # no live clocksource switch mid-run (see qemu.py)
    assert words[-2:] == ["foo=1", "bar"]  # appended last, so it overrides
    assert "quiet" in kernel_cmdline("252", "x", quiet=True, extra="").split()


# --- job file ------------------------------------------------------------------------------


def test_env_pairs() -> None:
    assert parse_env_pairs(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("NOEQUALS", "1A=2", "A-B=3", "=x"):
        with pytest.raises(ValueError):
            parse_env_pairs([bad])


def test_command_env_defaults_and_overrides(tmp_path: Path) -> None:
    env = command_env(tmp_path, "252", {"PYTHONPATH": "/elsewhere", "X": "1"})
    # The repository is an overlay in the guest: bytecode is cached, as installed.
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPATH"] == "/elsewhere" and env["X"] == "1"
    assert env["SLOTMGR_TESTBED_GUEST"] == "252"
    assert command_env(tmp_path, "252")["PYTHONPATH"] == str(tmp_path)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to source the job file")
def test_job_file_round_trips_through_bash(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo 'quoted' \"$HOME\"; exit 7", "", "new\nline", "$(reboot)"]
    env = {"A": "x y", "B": "it's", "C": "a=b"}
    job = tmp_path / "job"
    job.write_text(render_job("257", "tok", Path("/some dir"), argv, env))
    script = (
        f'. {job}; printf \'%s\\0\' "$TESTBED_GUEST" "$TESTBED_CWD" "${{#TESTBED_ARGV[@]}}" '
        '"${TESTBED_ARGV[@]}" "${TESTBED_ENV[@]}"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    fields = out.decode().split("\0")[:-1]
    assert fields[:3] == ["257", "/some dir", str(len(argv))]
    assert fields[3 : 3 + len(argv)] == argv
    assert fields[3 + len(argv) :] == ["A=x y", "B=it's", "C=a=b"]


def test_mounts_file() -> None:
    assert render_mounts({"project": Path("/srv/x y")}) == "project /srv/x y\n"
    with pytest.raises(ValueError):
        render_mounts({"project": Path("/bad\npath")})


# --- output stream -------------------------------------------------------------------------


def test_end_marker_split_across_chunks() -> None:
    token = new_token()
    stream = b"line 1\nlast line without newline" + f"{token} 42\n".encode()
    for cut in range(1, len(stream)):
        scanner = EndMarkerScanner(token)
        out = scanner.feed(stream[:cut]) + scanner.feed(stream[cut:])
        assert out == b"line 1\nlast line without newline", cut
        assert scanner.done and scanner.status == 42


def test_partial_marker_is_held_back_then_released() -> None:
    token = "testbed-end-abc"
    scanner = EndMarkerScanner(token)
    assert scanner.feed(b"hello testbed-e") == b"hello "
    assert scanner.feed(b"xtra\n") == b"testbed-extra\n"  # not the marker after all
    assert scanner.feed(b"tail testbed-") == b"tail "
    assert scanner.flush() == b"testbed-"  # stream ended: pass it on
    assert not scanner.done and scanner.status is None


def test_data_after_the_marker_is_dropped() -> None:
    scanner = EndMarkerScanner("tok")
    assert scanner.feed(b"out\ntok 0\nlater") == b"out\n"
    assert scanner.feed(b"more") == b""
    assert scanner.status == 0


# --- kernel and initramfs helpers ----------------------------------------------------------


def test_apt_cache_parsing() -> None:
    depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-99-amd64\n  Recommends: x\n"
    assert parse_depends(depends) == "linux-image-6.1.0-99-amd64"
    assert parse_depends("foo\n  Depends: libc6\n") is None
    policy = "linux-image-6.1.0-99-amd64:\n  Installed: (none)\n  Candidate: 6.1.1-1\n"
    assert parse_candidate(policy) == "6.1.1-1"
    assert parse_candidate("x:\n  Candidate: (none)\n") is None


def test_show_depends_parsing(tmp_path: Path) -> None:
    text = (
        "builtin virtio_ring\n"
        "insmod /lib/modules/6.1/kernel/net/9p/9pnet.ko \n"
        f"insmod {tmp_path}/lib/modules/6.1/kernel/fs/9p/9p.ko.xz opt=1\n"
    )
    assert parse_show_depends(text, tmp_path) == [
        tmp_path / "lib/modules/6.1/kernel/net/9p/9pnet.ko",
        tmp_path / "lib/modules/6.1/kernel/fs/9p/9p.ko.xz",
    ]


def test_module_names_lose_their_compression_suffix() -> None:
    assert decompressed_name(Path("a/ext4.ko.xz")) == "ext4.ko"
    assert decompressed_name(Path("a/ext4.ko.zst")) == "ext4.ko"
    assert decompressed_name(Path("a/ext4.ko")) == "ext4.ko"


def test_extract_vmlinux_from_fake_bzimage() -> None:
    elf = tiny_elf()
    bzimage = b"MZ setup code" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert extract_vmlinux(bzimage) == elf
    assert extract_vmlinux(b"no compressed payload") is None


def tiny_elf(body: bytes = bytes(range(256)) * 64) -> bytes:
    """An ELF64 header and one segment that covers the whole file."""
    size = 64 + 56 + len(body)
    header = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    )
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, size, size, 0x1000)
    return header + segment + body


def test_extract_vmlinux_from_a_zstd_bzimage() -> None:
    """Debian 13's kernel (6.12) compresses its payload with zstd, not xz."""
    elf = tiny_elf()
    packed = subprocess.run(["zstd", "-c", "-q"], input=elf, capture_output=True, check=True).stdout
    assert extract_vmlinux(b"MZ setup code" + packed + b"trailer\x00\x01") == elf
    # Cut short, the ELF is not whole: the bzImage is booted instead.
    truncated = subprocess.run(
        ["zstd", "-c", "-q"], input=elf[:-100], capture_output=True, check=True
    ).stdout
    assert extract_vmlinux(b"MZ" + truncated) is None
    assert not whole_elf(elf[:-1]) and whole_elf(elf)


def test_each_guest_gets_its_own_releases_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's release through the host's apt; another release through a
    private apt state in the cache, so the host's apt is never changed."""
    monkeypatch.setenv("SLOTMGR_TESTBED_CACHE", str(tmp_path))
    monkeypatch.setenv("SLOTMGR_TESTBED_MIRROR", "http://mirror.invalid/debian")
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert host_suite(os_release) == "bookworm"
    assert {g.suite for g in GUESTS.values()} == {"bookworm", "trixie"}
    monkeypatch.setattr(kernel, "host_suite", lambda: "bookworm")
    host = kernel.Apt("bookworm")
    assert not host.private and host.argv("apt-get", "update") == [
        "apt-get",
        "-o",
        "APT::Sandbox::User=root",
        "update",
    ]
    other = kernel.Apt("trixie")
    assert other.private
    argv = other.argv("apt-cache", "policy", "x")
    assert f"Dir::State::Lists={tmp_path}/apt-trixie/lists" in argv
    assert (tmp_path / "apt-trixie" / "sources.list").read_text() == (
        "deb http://mirror.invalid/debian trixie main\n"
    )


def test_mask_entries() -> None:
    text = "# comment\n\nsystem/a.service\n  system-generators/g  \n"
    assert mask_entries(text) == ["system/a.service", "system-generators/g"]


def test_repository_masks_file_is_well_formed() -> None:
    masks = Path(__file__).resolve().parents[1] / "testbed" / "guest" / "masks"
    entries = mask_entries(masks.read_text())
    assert entries and all(e.split("/")[0] in ("system", "system-generators") for e in entries)
    assert "system/systemd-journald.service" not in entries
    assert not any("dbus" in e for e in entries)


def test_each_guest_has_its_own_package_list() -> None:
    """Plain guests install PACKAGES alone, so their images (recipe hashes)
    stay as before; a batch guest adds Slurm and gets an image of its own."""
    for name in ("252", "257"):
        guest = GUESTS[name]
        assert guest.extra_packages == ()
        assert rootfs.recipe(guest) == {
            "kind": "rootfs",
            "format": rootfs.FORMAT,
            "suite": guest.suite,
            "variant": "minbase",
            "packages": sorted(PACKAGES),
            "dpkg": list(rootfs.DPKG_OPTIONS),
        }
    assert set(SLURM_PACKAGES) == {"slurmctld", "slurmd", "slurm-client", "munge", "sudo"}
    # 257-batch alone builds the SPANK plugin (Slurm 24.11; 22.05 has no
    # spank_prepend_task_argv), so it alone has a compiler and Slurm's headers;
    # HTCondor is packaged in Debian 13 only: 257-batch has it, 252-batch not.
    assert set(SPANK_BUILD_PACKAGES) == {"gcc", "libc6-dev", "libslurm-dev"}
    assert set(CONDOR_PACKAGES) == {"condor", "minicondor"}
    # Slurm accounting (slurmdbd and its database) is 257-batch's alone too.
    assert set(ACCOUNTING_PACKAGES) == {"slurmdbd", "mariadb-server"}
    for plain, batch, extra in (
        ("252", "252-batch", set(SLURM_PACKAGES)),
        (
            "257",
            "257-batch",
            {*SLURM_PACKAGES, *SPANK_BUILD_PACKAGES, *CONDOR_PACKAGES, *ACCOUNTING_PACKAGES},
        ),
    ):
        assert GUESTS[batch].suite == GUESTS[plain].suite
        batch_recipe = rootfs.recipe(GUESTS[batch])
        assert batch_recipe["packages"] == sorted({*PACKAGES, *extra})
        assert recipe_hash(batch_recipe) != recipe_hash(rootfs.recipe(GUESTS[plain]))
        argv = rootfs.mmdebstrap_argv(GUESTS[batch], Path("/target"), "http://mirror.invalid/d")
        included = next(a for a in argv if a.startswith("--include="))
        assert set(included.removeprefix("--include=").split(",")) >= {*PACKAGES, *extra}
        plain_argv = rootfs.mmdebstrap_argv(GUESTS[plain], Path("/target"), "http://m.invalid/d")
        assert "slurmd" not in " ".join(plain_argv)
        assert "condor" not in " ".join(plain_argv)
        assert "slurmdbd" not in " ".join(plain_argv)


def test_batch_units_start_only_where_slurmd_is_installed() -> None:
    """The overlay is the same in every guest: each unit of the cluster is
    conditioned on the image having slurmd, and both boot targets want it."""
    system = Path(__file__).resolve().parents[1] / "testbed" / "guest" / "overlay"
    system = system / "etc" / "systemd" / "system"
    for unit in ("testbed-batch.target", "testbed-batch-setup.service", "slurmd@.service"):
        assert "ConditionPathExists=/usr/sbin/slurmd" in (system / unit).read_text().splitlines()
    for target in ("testbed.target", "testbed-shell.target"):
        assert "testbed-batch.target" in (system / target).read_text()
    # Debian's own units (absent from the plain images) only get ordering drop-ins.
    for dropin in (
        "munge.service.d/testbed.conf",
        "slurmctld.service.d/testbed.conf",
        "condor.service.d/testbed.conf",
    ):
        assert "[Service]" not in (system / dropin).read_text()
    # The HTCondor pool's setup runs only where the image has HTCondor.
    condor_setup = (system / "testbed-condor-setup.service").read_text().splitlines()
    assert "ConditionPathExists=/usr/sbin/condor_master" in condor_setup
    assert "testbed-condor-setup.service" in (system / "testbed-batch.target").read_text()
    # Slurm accounting's setup runs only where the image has slurmdbd.
    accounting_setup = (system / "testbed-accounting-setup.service").read_text().splitlines()
    assert "ConditionPathExists=/usr/sbin/slurmdbd" in accounting_setup
    assert "testbed-accounting-setup.service" in (system / "testbed-batch.target").read_text()


def test_cpio_newc_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.cpio"
    with open(path, "wb") as handle:
        archive = CpioWriter(handle)
        archive.directory("etc")
        archive.file("etc/x", b"hello", 0o755)
        archive.symlink("etc/l", "/dev/null")
        archive.char_device("dev-console", 5, 1)
        archive.close()
    data = path.read_bytes()
    entries = []
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        entries.append((name, mode, data[body : body + size], fields[9:11]))
        offset = body + size + (-size % 4)
        if name == "TRAILER!!!":
            break
    assert offset == len(data)
    by_name = {e[0]: e for e in entries}
    assert stat.S_ISDIR(by_name["etc"][1])
    assert by_name["etc/x"][2] == b"hello" and stat.S_IMODE(by_name["etc/x"][1]) == 0o755
    assert stat.S_ISLNK(by_name["etc/l"][1]) and by_name["etc/l"][2] == b"/dev/null"
    assert stat.S_ISCHR(by_name["dev-console"][1]) and by_name["dev-console"][3] == [5, 1]


# --- console log and command line ----------------------------------------------------------


def test_console_tail_strips_terminal_codes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    lines = [f"line {i}\r" for i in range(40)] + ["[\x1b[0;32m  OK  \x1b[0m] Started x.\x1bc"]
    log.write_text("\n".join(lines) + "\n")
    tail = console_tail(log, lines=3)
    assert tail == ["line 38", "line 39", "[  OK  ] Started x."]
    assert console_tail(tmp_path / "missing.log") == []


def test_cli_run_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--guest", "252", "--"])
    assert exc.value.code == 2
    assert "no command given" in capsys.readouterr().err


def test_cli_rejects_unknown_guest_and_bad_env() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--guest", "999", "--", "true"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--guest", "252", "--env", "NOPE", "--", "true"])
    assert exc.value.code == 2


def test_cli_testbed_failure_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.testbed import TestbedError

    def broken(*_args: object, **_kw: object) -> int:
        raise TestbedError("no boot")

    monkeypatch.setattr(cli, "run_in_guest", broken)
    assert cli.main(["run", "--guest", "257", "--", "true"]) == 3
    assert capsys.readouterr().err.strip() == "testbed: guest 257 failed: no boot"

    def crash(*_args: object, **_kw: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(cli, "run_in_guest", crash)
    assert cli.main(["run", "--guest", "252", "--", "true"]) == 3
    assert "testbed: guest 252 failed: OSError: disk full" in capsys.readouterr().err


def test_cli_passes_the_command_status_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(guest: str, argv: list[str], env: dict[str, str], timeout: float, **kw: object) -> int:
        seen.update(guest=guest, argv=argv, env=env, timeout=timeout, **kw)
        return 7

    monkeypatch.setattr(cli, "run_in_guest", fake)
    argv = ["run", "--guest", "252", "--timeout", "60", "--env", "A=1", "--", "sh", "-c", "x"]
    assert cli.main(argv) == 7
    assert seen["argv"] == ["sh", "-c", "x"] and seen["env"] == {"A": "1"}
    assert seen["timeout"] == 60.0 and seen["memory_mib"] == 2048


def test_no_host_specific_paths_in_committed_files() -> None:
    root = Path(__file__).resolve().parents[1] / "testbed"
    home = os.path.expanduser("~")
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_text(errors="replace")
            assert str(root.parents[1]) not in text, path
            assert home == "/" or f"{home}/" not in text, path
