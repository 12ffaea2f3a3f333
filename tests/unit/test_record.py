"""Job records: building, schema, summary, the history database."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from slotmgr.history import store as history
from slotmgr.history.accounting import build_record, how_main_ended
from slotmgr.history.record import SCHEMA, JobRecord, exit_status_from, summary_lines, validate
from slotmgr.job.spec import command_of_unit

PROPS = {
    "ExecMainStartTimestamp": 1_700_000_000_000_000,
    "ExecMainExitTimestamp": 1_700_000_002_500_000,
    "Slice": "slotmgr.slice",
    "User": "",
    "CPUUsageNSec": 9_000_000_000,
    "IPIngressBytes": 2**64 - 1,
    "IPEgressBytes": 42,
    "MemoryPeak": 99,
    "ExecStart": [
        (
            "/usr/bin/python3",
            ["/usr/bin/python3", "-I", "-S", "/x/pidshim.py", "--unshare", "--", "sleep", "2"],
            False,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        )
    ],
}
COUNTERS = {
    "memory_peak": 5_000_000,
    "usage_usec": 2_400_000,
    "user_usec": 2_000_000,
    "system_usec": 400_000,
    "io_read": 4096,
    "io_write": 8192,
    "own_usec": 100_000,
    "own_user_usec": 80_000,
    "own_system_usec": 20_000,
}


def make(**kw: Any) -> JobRecord:
    args: dict[str, Any] = dict(
        job_id="ab12",
        unit="slotmgr-ab12.service",
        slot=None,
        props=PROPS,
        counters=COUNTERS,
        result="success",
        exit_status=0,
        end_time=1_700_000_003.0,
        systemd_version="252.38-1",
    )
    args.update(kw)
    args.setdefault("run_id", f"run-{args['job_id']}")
    # The command as the launcher knows it: the unit's ExecStart= without the init.
    args.setdefault("command", command_of_unit(args["props"]))
    return build_record(**args)


def test_cgroup_counters_win_and_the_recorder_own_cpu_is_subtracted() -> None:
    rec = make()
    assert rec.cpu_usage_usec == 2_300_000
    assert (rec.cpu_user_usec, rec.cpu_system_usec) == (1_920_000, 380_000)
    assert rec.memory_peak_bytes == 5_000_000 and rec.memory_peak_source == "cgroup memory.peak"
    assert rec.wall_time_usec == 2_500_000
    assert rec.command == ["sleep", "2"]
    assert rec.ip_ingress_bytes is None and rec.ip_egress_bytes == 42
    assert (rec.io_read_bytes, rec.io_write_bytes) == (4096, 8192)


def test_systemd_figures_are_the_fallback() -> None:
    rec = make(counters={})
    assert rec.cpu_usage_usec == 9_000_000
    assert rec.memory_peak_source == "systemd MemoryPeak" and rec.memory_peak_bytes == 99
    rec = make(counters={}, props={k: v for k, v in PROPS.items() if k != "MemoryPeak"})
    assert rec.memory_peak_source == "unavailable" and rec.memory_peak_bytes is None


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("exited", "0", 0),
        ("exited", "3", 3),
        ("killed", "TERM", 143),
        ("killed", "KILL", 137),
        ("dumped", "SEGV", 139),
        ("", "", 0),
        ("exited", "junk", 255),
    ],
)
def test_exit_status_from_systemd_environment(code: str, status: str, expected: int) -> None:
    assert exit_status_from(code, status) == expected


def test_record_validates_against_schema_and_the_validator_catches_errors() -> None:
    data = json.loads(make().to_json())
    assert validate(data) == []
    assert set(SCHEMA["required"]) == set(data)
    bad = dict(data, exit_status=300, result="great", extra=1)
    del bad["uid"]
    problems = validate(bad)
    assert any("exit_status" in p for p in problems)
    assert any("result" in p for p in problems)
    assert "unexpected field 'extra'" in problems and "missing field 'uid'" in problems
    assert validate(dict(data, cpu_usage_usec=True)) != []  # a bool is not an integer


def test_summary_names_every_figure() -> None:
    text = "\n".join(summary_lines(make()))
    for word in (
        "ab12",
        "success",
        "exit status 0",
        "Wall time",
        "2.500s",
        "CPU time",
        "2.300s",
        "Memory peak",
        "cgroup memory.peak",
        "IO",
        "Tasks peak",
        "IP",
        "n/a",
    ):
        assert word in text


def test_history_insert_is_idempotent_and_queryable(tmp_path: Path) -> None:
    db = str(tmp_path / "sub" / "history.db")
    with history.open_db(db) as conn:
        assert history.insert(conn, make()) is True
        assert history.insert(conn, make()) is False
        history.insert(conn, make(job_id="cd34", slot="2", end_time=1_800_000_000.0))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert history.get(conn, "ab12") == make()
        assert [r.job_id for r in history.query(conn, since=1_750_000_000.0)] == ["cd34"]
        assert [r.job_id for r in history.query(conn, slot="2")] == ["cd34"]
        assert len(history.query(conn, user="root")) + len(history.query(conn, user="nobody")) <= 2
    assert (tmp_path / "sub").stat().st_mode & 0o002 == 0


def test_history_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "history.db")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with history.open_db(db) as conn:
                for i in range(25):
                    history.insert(conn, make(job_id=f"w{n}-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with history.open_db(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM jobs").fetchone() == (
            200,
            200,
        )


def test_from_dict_ignores_unknown_fields() -> None:
    data = json.loads(make().to_json())
    data["future_field"] = 1
    assert JobRecord.from_dict(data) == make()


@pytest.mark.parametrize(
    ("env", "props", "expected"),
    [
        # What systemd normally passes to ExecStopPost=.
        (
            {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "143"},
            {"ExecMainCode": 1, "ExecMainStatus": 143, "Result": "exit-code"},
            ("exit-code", 143),
        ),
        (
            {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"},
            {},
            ("signal", 137),
        ),
        # Seen on 257: a stop at the job's start runs the hook before systemd has
        # taken the main process's end in; the unit's properties have it.
        (
            {"SERVICE_RESULT": "success"},
            {"ExecMainCode": 2, "ExecMainStatus": 9, "Result": "signal"},
            ("signal", 137),
        ),
        (
            {"SERVICE_RESULT": "success"},
            {"ExecMainCode": 1, "ExecMainStatus": 3, "Result": "exit-code"},
            ("exit-code", 3),
        ),
        ({"SERVICE_RESULT": "success"}, {"ExecMainCode": 0}, ("unknown", 70)),
    ],
)
def test_how_the_main_process_ended(
    env: dict[str, str], props: dict[str, int | str], expected: tuple[str, int]
) -> None:
    assert how_main_ended(env, props) == expected
