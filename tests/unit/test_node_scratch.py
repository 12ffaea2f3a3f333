"""The node's config file and the per-job scratch directory (no systemd)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slotmgr.errors import SlotmgrError, UsageError
from slotmgr.job import scratch
from slotmgr.node import config
from slotmgr.node.config import ConfigError, load_node_config, parse_node_config


def test_missing_file_means_the_default(tmp_path: Path) -> None:
    assert load_node_config(str(tmp_path / "none.conf")).scratch_base == "/var/lib/slotmgr/scratch"


def test_scratch_base_from_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "slotmgr.conf"
    conf.write_text("[node]\nscratch_base = /srv/scratch\n")
    conf.chmod(0o644)
    if os.geteuid() == 0:
        assert load_node_config(str(conf)).scratch_base == "/srv/scratch"
    else:
        with pytest.raises(ConfigError, match="owned by root"):
            load_node_config(str(conf))


def test_the_environment_does_not_choose_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLOTMGR_CONF", "SLOTMGR_NODE_CONF", "SLOTMGR_SCRATCH_BASE"):
        monkeypatch.setenv(name, str(tmp_path))
    assert config.load_node_config.__defaults__ == (config.DEFAULT_CONF,)
    assert load_node_config(str(tmp_path / "none.conf")).scratch_base == config.DEFAULT_SCRATCH_BASE


def test_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "slotmgr.conf"
    conf.write_text("[node]\nscratch_base = /srv/scratch\n")
    conf.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by root only") as err:
        load_node_config(str(conf))
    assert err.value.exit_code == 78
    link = tmp_path / "link.conf"
    link.symlink_to(conf)
    with pytest.raises(ConfigError, match="cannot read"):
        load_node_config(str(link))


@pytest.mark.parametrize(
    "text, match",
    [
        ("[node]\nscratch_base = relative/dir\n", "absolute"),
        ("[node]\nscratch_base = /srv/../etc\n", "normalised"),
        ("[node]\nscratch_base = /\n", "other than /"),
        ("[node]\nscratch_bass = /srv\n", "unknown setting 'node.scratch_bass'"),
        ("[nodes]\n", "unknown setting 'nodes'"),
        ("scratch_base = /srv\n", "cannot parse"),
    ],
)
def test_bad_settings_are_named(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_node_config(text, source="slotmgr.conf")


def test_scratch_dir_is_the_users_and_private(tmp_path: Path) -> None:
    base = tmp_path / "scratch"
    path = scratch.make_scratch_dir(str(base), "ab12", 4321, 4322)
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o700)
    base_st = os.stat(base)
    assert base_st.st_uid == 0 and stat.S_IMODE(base_st.st_mode) == 0o711
    with pytest.raises(UsageError, match="exists already"):
        scratch.make_scratch_dir(str(base), "ab12", 4321, 4322)
    scratch.remove_scratch_dir(path)
    assert not os.path.exists(path)


def test_scratch_never_follows_a_symlink(tmp_path: Path) -> None:
    base = tmp_path / "scratch"
    base.mkdir(mode=0o711)
    target = tmp_path / "victim"
    target.mkdir()
    (base / "ab12").symlink_to(target)
    with pytest.raises(UsageError, match="exists already"):
        scratch.make_scratch_dir(str(base), "ab12", 4321, 4321)
    assert os.stat(target).st_uid == 0
    linked_base = tmp_path / "linked"
    linked_base.symlink_to(target)
    with pytest.raises(SlotmgrError, match="cannot make the scratch base"):
        scratch.make_scratch_dir(str(linked_base), "cd34", 4321, 4321)


def test_a_base_others_may_write_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "scratch"
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(SlotmgrError, match="writable by others") as err:
        scratch.make_scratch_dir(str(base), "ab12", 4321, 4321)
    assert err.value.exit_code == 78 and os.listdir(base) == []


@pytest.mark.parametrize("job_id", [".", ".."])
def test_dot_job_ids_get_no_scratch(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(UsageError, match=r"not \. or \.\."):
        scratch.make_scratch_dir(str(tmp_path), job_id, 0, 0)


def test_the_packaged_example_is_valid_and_says_the_default() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "packaging" / "slotmgr.conf.example"
    parsed = parse_node_config(example.read_text(), source=str(example))
    assert parsed.scratch_base == config.DEFAULT_SCRATCH_BASE
