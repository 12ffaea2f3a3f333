"""Which init a job gets (slotmgr.job.init), and the node's setting for it."""

from __future__ import annotations

import os

import pytest

from slotmgr.job.init import InitChoice, InitSetting, choose_init, find_catatonit
from slotmgr.job.spec import CATATONIT_PATHS
from slotmgr.node.config import ConfigError, parse_node_config

CATATONIT = "/usr/libexec/catatonit/catatonit"
NO_ABI = "kernel lacks Landlock ABI 6 (has 3); use --private-network"


def choose(
    setting: str = "auto",
    catatonit: str | None = CATATONIT,
    *,
    command: tuple[str, ...] = ("true",),
    private_pids: bool = True,
    scope: bool = False,
    landlock: tuple[bool, str] = (False, NO_ABI),
) -> InitChoice:
    return choose_init(
        InitSetting(setting),
        catatonit,
        command=command,
        private_pids=private_pids,
        scope=scope,
        landlock_scope=landlock[0],
        landlock_missing=landlock[1],
    )


def test_catatonit_where_installed() -> None:
    assert choose() == InitChoice(CATATONIT, "", False, NO_ABI)


def test_pidshim_where_it_is_missing_a_scope_or_a_landlock_scope_is_wanted() -> None:
    assert choose(catatonit=None) == InitChoice(None, "no catatonit installed", False, NO_ABI)
    assert choose(scope=True).catatonit is None
    assert choose(scope=True, landlock=(True, "")) == InitChoice(None, "scope", True, "")
    assert choose(landlock=(True, "")) == InitChoice(None, "Landlock scope", True, "")
    assert choose(command=("./a=b",)).catatonit is None  # env(1) would take it for a variable


def test_the_nodes_setting_decides_first() -> None:
    forced = choose("pidshim")
    assert forced.catatonit is None and "init = pidshim" in forced.init_why
    # catatonit, when the admin says so, even where a Landlock scope would be had.
    chosen = choose("catatonit", landlock=(True, ""))
    assert chosen.catatonit == CATATONIT and not chosen.landlock_scope
    assert "applies no Landlock scope" in chosen.landlock_missing
    with pytest.raises(ConfigError, match="catatonit is not installed") as err:
        choose("catatonit", catatonit=None)
    assert err.value.exit_code == 78


def test_no_pid_namespace_no_init() -> None:
    assert choose(private_pids=False, catatonit=CATATONIT).catatonit is None
    assert choose("catatonit", None, private_pids=False).catatonit is None


def test_find_catatonit_looks_at_rhels_path_first(monkeypatch: pytest.MonkeyPatch) -> None:

    assert CATATONIT_PATHS[0] == CATATONIT
    monkeypatch.setattr(os, "access", lambda path, _mode: path == "/usr/bin/catatonit")
    assert find_catatonit() == "/usr/bin/catatonit"
    monkeypatch.setattr(os, "access", lambda _path, _mode: False)
    assert find_catatonit() is None


def test_the_setting_in_the_nodes_file() -> None:
    assert parse_node_config("", source="f").init == "auto"
    for value in ("auto", "catatonit", "pidshim"):
        assert parse_node_config(f"[node]\ninit = {value}\n", source="f").init == value
    with pytest.raises(
        ConfigError, match="invalid init 'tini' in f: use one of auto, catatonit, pidshim"
    ):
        parse_node_config("[node]\ninit = tini\n", source="f")
