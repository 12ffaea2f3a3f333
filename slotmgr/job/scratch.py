"""The job's scratch directory: made by root, owned by the job's user.

`<scratch_base>/<job id>`, mode 0700. The base (the node admin's choice,
slotmgr.node.config) is made root-owned 0711 if missing and must be root's and
writable by root only; the job's directory is made in it through a file
descriptor of the base, never by following a symlink, then handed to the
user with fchown on its own descriptor. The unit removes it at its end
(spec.scratch_removal_argv), so its removal does not need the launcher.
"""

from __future__ import annotations

import os
import stat

from slotmgr.errors import ExitCode, SlotmgrError, UsageError

BASE_MODE = 0o711  # others may pass through to their own directory, not list the jobs
JOB_DIR_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_base(base: str) -> int:
    """The base directory's fd, made (as root, 0711) if missing."""
    try:
        # Missing parents get 0755, the base 0711 (an existing one is the admin's).
        os.makedirs(base, mode=BASE_MODE, exist_ok=True)
        fd = os.open(base, _DIR_FLAGS)
    except OSError as exc:
        raise SlotmgrError(
            f"cannot make the scratch base {base}: {exc.strerror}",
            hint="set [node] scratch_base in /etc/slotmgr/slotmgr.conf, or run with --no-scratch",
            exit_code=ExitCode.CONFIG,
        ) from None
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise SlotmgrError(
            f"the scratch base {base} is not root's or is writable by others: not used",
            hint=f"chown root: {base}; chmod 0711 {base}",
            exit_code=ExitCode.CONFIG,
        )
    return fd


def make_scratch_dir(base: str, job_id: str, uid: int, gid: int) -> str:
    """Make `base/job_id` for the job's user; return its path."""
    if job_id in (".", "..") or "/" in job_id:
        raise UsageError(f"invalid --job-id {job_id!r} for a scratch directory: not . or ..")
    base_fd = _open_base(base)
    try:
        try:
            os.mkdir(job_id, JOB_DIR_MODE, dir_fd=base_fd)
        except FileExistsError:
            raise UsageError(
                f"scratch directory {base}/{job_id} exists already (kept by an earlier job "
                "with this id?): remove it, or give another --job-id"
            ) from None
        fd = os.open(job_id, _DIR_FLAGS, dir_fd=base_fd)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise SlotmgrError(f"{base}/{job_id} is not a directory")
            os.fchown(fd, uid, gid)
            os.fchmod(fd, JOB_DIR_MODE)  # whatever the umask took away
        finally:
            os.close(fd)
    finally:
        os.close(base_fd)
    return f"{base}/{job_id}"


def remove_scratch_dir(path: str) -> None:
    """Remove a scratch directory whose unit never ran (its own hook does otherwise)."""
    import shutil

    # rmtree works through file descriptors and never follows a symlink.
    shutil.rmtree(path, ignore_errors=True)
