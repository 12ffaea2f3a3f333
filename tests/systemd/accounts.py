"""Second users for the permission tests, and a user manager for one of them.

The test bed's image has no pam_systemd (which sets XDG_RUNTIME_DIR for a
login), so user@UID.service gets the variable from a runtime drop-in; that
is the only difference from a user manager a login would start.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def start_user_manager(user: pwd.struct_passwd) -> str:
    """Start user@UID.service; return the user's runtime directory."""
    uid = user.pw_uid
    runtime = f"/run/user/{uid}"
    dropin = Path(f"/run/systemd/system/user@{uid}.service.d/slotmgr-tests.conf")
    if not dropin.exists():
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(f"[Service]\nEnvironment=XDG_RUNTIME_DIR={runtime}\n")
        subprocess.run(["systemctl", "daemon-reload"], check=True)
    subprocess.run(["systemctl", "start", f"user@{uid}.service"], check=True, timeout=120)
    deadline = time.monotonic() + 60
    while not os.path.exists(f"{runtime}/systemd/private"):
        if time.monotonic() > deadline:
            raise AssertionError(f"user@{uid}.service made no {runtime}/systemd/private")
        time.sleep(0.2)
    return runtime


def user_env(user: pwd.struct_passwd, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}",
    }
    env.update(extra)
    return env


def as_user(user: pwd.struct_passwd, argv: list[str], **kw: Any) -> dict[str, Any]:
    """subprocess keyword arguments that run `argv` as `user`, no root groups."""
    return dict(
        args=argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env=kw.pop("env", user_env(user)),
        cwd="/",
        **kw,
    )


def slotmgr_as(
    user: pwd.struct_passwd, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        **as_user(user, [sys.executable, "-m", "slotmgr", *args], env=env or user_env(user)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_slotmgr_as(user: pwd.struct_passwd, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        **as_user(user, [sys.executable, "-m", "slotmgr", *args]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
