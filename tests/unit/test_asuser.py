"""What a root-run launcher looks at and opens for a job's user, as that user."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

import pytest

from slotmgr.errors import ExitCode, SlotmgrError, UsageError
from slotmgr.job import asuser
from slotmgr.job.asuser import (
    Identity,
    acting_as,
    check_install_reachable,
    check_working_directory,
    open_output,
)
from slotmgr.job.spec import JobSpec

NOBODY = Identity.of("nobody")


@pytest.fixture(autouse=True)
def _as_root() -> None:
    assert os.geteuid() == 0, "these tests take a user's ids from root"


def spec(**kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        command=("true",),
        job_id="ab12",
        unit="slotmgr-ab12.service",
        user="nobody",
        python="/usr/bin/python3",
        working_directory="/",
    )
    base.update(kw)
    return JobSpec(**base)


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A fresh directory that user nobody can reach (pytest's tmp_path is
    under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="slotmgr-asuser-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def shared(reachable: Path) -> Path:
    """A directory nobody may write in, as a user's own directory would be."""
    reachable.chmod(0o777)
    return reachable


def test_acting_as_takes_the_users_ids_and_gives_them_back() -> None:
    groups = os.getgroups()
    with acting_as(NOBODY):
        assert (os.geteuid(), os.getegid()) == (NOBODY.uid, NOBODY.gid)
        assert not os.access("/root", os.X_OK, effective_ids=True)
    assert (os.geteuid(), os.getegid(), os.getgroups()) == (0, 0, groups)


def test_a_symlink_is_never_followed(shared: Path) -> None:
    target = shared / "victim"
    target.write_text("precious")
    (shared / "out.json").symlink_to(target)
    for who in (None, NOBODY):  # neither as root nor as the user
        with acting_as(who), pytest.raises(UsageError, match="symbolic link"):
            open_output(str(shared / "out.json"), append=False, what="--json")
    assert target.read_text() == "precious"


def test_a_file_of_someone_else_is_not_truncated(shared: Path) -> None:
    theirs = shared / "theirs"
    theirs.write_text("precious")  # root's, writable by all, where the user may write
    theirs.chmod(0o666)
    with acting_as(NOBODY), pytest.raises(UsageError, match="not the job user's own"):
        open_output(str(theirs), append=False, what="--output")
    assert theirs.read_text() == "precious"


def test_the_users_file_is_made_by_the_user_truncated_or_appended(shared: Path) -> None:
    path = shared / "out"
    with acting_as(NOBODY):
        fd = open_output(str(path), append=False, what="--output")
    os.write(fd, b"one\n")
    os.close(fd)
    assert path.stat().st_uid == NOBODY.uid
    with acting_as(NOBODY):
        fd = open_output(str(path), append=True, what="--output")
    os.write(fd, b"two\n")
    os.close(fd)
    assert path.read_text() == "one\ntwo\n"
    with acting_as(NOBODY):
        os.close(open_output(str(path), append=False, what="--output"))
    assert path.read_text() == ""


def test_a_device_is_written_as_it_is() -> None:
    with acting_as(NOBODY):
        fd = open_output("/dev/null", append=False, what="--output")
    os.close(fd)


def test_the_user_cannot_write_where_root_could(reachable: Path) -> None:
    with acting_as(NOBODY), pytest.raises(UsageError, match="Permission denied"):
        open_output(str(reachable / "out"), append=False, what="--output")
    assert not (reachable / "out").exists()


def test_working_directory_is_checked_as_the_user(reachable: Path) -> None:
    private = reachable / "private"
    private.mkdir(mode=0o700)
    with acting_as(NOBODY), pytest.raises(UsageError, match="not accessible to nobody"):
        check_working_directory(spec(working_directory=str(private), private_tmp=False))
    with acting_as(NOBODY), pytest.raises(UsageError, match="not a directory"):
        check_working_directory(spec(working_directory=str(reachable / "x"), private_tmp=False))
    check_working_directory(spec(working_directory="/"))


def test_a_working_directory_under_a_private_tmp_is_refused() -> None:
    with pytest.raises(UsageError, match="under /var/tmp"):
        check_working_directory(spec(working_directory="/var/tmp/run1"))
    check_working_directory(spec(working_directory="/tmp", private_tmp=False))


def test_an_install_under_tmp_is_refused_with_exit_78() -> None:
    with pytest.raises(SlotmgrError, match="under /tmp") as info:
        check_install_reachable(spec(python="/tmp/venv/bin/python3"))
    assert info.value.exit_code == ExitCode.CONFIG
    assert "install slotmgr where" in info.value.one_line()


def test_an_install_the_user_cannot_reach_is_refused_with_exit_78(
    reachable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = reachable
    hidden = tmp_path / "venv"
    hidden.mkdir(mode=0o700)
    python = hidden / "python3"
    python.symlink_to("/usr/bin/python3")
    with acting_as(NOBODY), pytest.raises(SlotmgrError, match="cannot execute") as info:
        check_install_reachable(spec(python=str(python), private_tmp=False))
    assert info.value.exit_code == ExitCode.CONFIG
    shim = tmp_path / "pidshim.py"
    shim.write_text("")
    shim.chmod(0o600)
    monkeypatch.setattr(asuser, "PIDSHIM", str(shim))
    with acting_as(NOBODY), pytest.raises(SlotmgrError, match="cannot read"):
        check_install_reachable(spec(private_tmp=False))
    # Without the shim the job's user runs nothing of slotmgr's.
    with acting_as(NOBODY):
        check_install_reachable(spec(private_pids=False, private_tmp=False, python=str(python)))


def test_identity_takes_group_and_supplementary_groups() -> None:
    root = Identity.of("root", 5)
    assert (root.uid, root.gid) == (0, 5) and 5 in root.groups
    assert dataclasses.is_dataclass(root)


def test_output_and_error_naming_one_file_share_one_descriptor(shared: Path) -> None:
    from slotmgr.job.runner import OutputFiles, OutputStreams

    path = str(shared / "both")
    outputs = OutputStreams(
        OutputFiles(stdout=path, stderr=path, json=str(shared / "r.json")), NOBODY
    )
    stdin, stdout, stderr = outputs.open()
    try:
        assert stdin == 0 and stdout == stderr > 2
        assert outputs.json_out is not None and (shared / "r.json").stat().st_uid == NOBODY.uid
    finally:
        outputs.close()
        cast(TextIO, outputs.json_out).close()  # not None: asserted above
    assert OutputStreams(OutputFiles(), None).open() == (0, 1, 2)
