"""The node's own settings: /etc/slotmgr/slotmgr.conf, set by the node's admin.

Read only from that root-owned file, never from the caller's environment:
slotmgr runs as root on a user's behalf, and where root creates and removes
directories must not be the user's choice. A missing file means the
defaults. configparser is imported only when the file exists.

    [node]
    scratch_base = /var/lib/slotmgr/scratch
    init = auto          # or catatonit, or pidshim (slotmgr.job.init)
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from slotmgr.errors import ExitCode, SlotmgrError

DEFAULT_CONF = "/etc/slotmgr/slotmgr.conf"
DEFAULT_SCRATCH_BASE = "/var/lib/slotmgr/scratch"
INIT_VALUES = ("auto", "catatonit", "pidshim")
KNOWN_KEYS = ("scratch_base", "init")


@dataclass(frozen=True)
class NodeConfig:
    scratch_base: str = DEFAULT_SCRATCH_BASE
    init: str = "auto"  # one of INIT_VALUES: the jobs' PID-namespace init


class ConfigError(SlotmgrError):
    exit_code = ExitCode.CONFIG


def check_scratch_base(value: str, *, source: str) -> str:
    """An absolute, normalised path other than /: root makes directories in it."""
    if not os.path.isabs(value) or os.path.normpath(value) != value or value == "/":
        raise ConfigError(
            f"invalid scratch_base {value!r} in {source}: use an absolute, normalised "
            "path other than / (such as /var/lib/slotmgr/scratch)"
        )
    return value


def load_node_config(path: str = DEFAULT_CONF) -> NodeConfig:
    """The node's settings; the defaults if the file does not exist.

    The file must be a regular file owned by root and writable by root only:
    anything else may have been written by someone other than the admin.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return NodeConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise ConfigError(
                f"{path} is not a regular file owned by root and writable by root only: "
                "ignored is not safe, so nothing runs",
                hint=f"chown root: {path}; chmod 0644 {path}",
            )
        text = handle.read()
    return parse_node_config(text, source=path)


def parse_node_config(text: str, *, source: str) -> NodeConfig:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse {source}: {first}") from None
    unknown = [s for s in parser.sections() if s != "node"]
    if "node" in parser:
        unknown += [f"node.{key}" for key in parser["node"] if key not in KNOWN_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} in {source}: known are "
            + ", ".join(f"[node] {key}" for key in KNOWN_KEYS)
        )
    base = parser.get("node", "scratch_base", fallback=DEFAULT_SCRATCH_BASE).strip()
    init = parser.get("node", "init", fallback="auto").strip()
    if init not in INIT_VALUES:
        raise ConfigError(f"invalid init {init!r} in {source}: use one of {', '.join(INIT_VALUES)}")
    return NodeConfig(scratch_base=check_scratch_base(base, source=source), init=init)
