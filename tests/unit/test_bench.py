"""The benchmarks' pure parts on the host: medians, ratios, the goals' verdicts,
what they read from systemd and the history, and the 50-at-once bookkeeping
against a stand-in slotmgr. The figures themselves come from the guests."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
from benchlib import AtOnce, Slotmgr, Throughput  # noqa: E402


def load_script(name: str) -> types.ModuleType:
    """An extensionless bench script as a module (its main() does not run)."""
    loader = importlib.machinery.SourceFileLoader(f"bench_{name}", str(BENCH / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_median_of_odd_and_even_counts_and_of_nothing() -> None:
    assert benchlib.median([3.0, 1.0, 2.0]) == 2.0
    assert benchlib.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        benchlib.median([])


def test_overhead_is_counted_in_bare_interpreter_starts() -> None:
    # The 252 figures: 2154 ms against 219 ms, a bare start of 440 ms.
    assert benchlib.overhead_in_bare_starts(2.154, 0.219, 0.440) == pytest.approx(4.398, abs=1e-3)
    assert benchlib.overhead_in_bare_starts(0.2, 0.3, 0.1) == pytest.approx(-1.0)
    assert benchlib.overhead_in_bare_starts(1.0, 0.5, 0.0) is None
    assert benchlib.ratio(8.0, 10.0) == 0.8
    assert benchlib.ratio(1.0, 0.0) is None


def test_goal_verdicts() -> None:
    assert benchlib.goal("<= 2", True) == "(goal <= 2: met)"
    assert benchlib.goal("<= 2", False) == "(goal <= 2: NOT met)"
    assert benchlib.goal("<= 2", None) == "(goal <= 2: not measured)"
    assert benchlib.at_most(2.0, 2.0) is True
    assert benchlib.at_most(2.01, 2.0) is False
    assert benchlib.at_most(None, 2.0) is None
    assert benchlib.at_least(0.79, 0.8) is False


def test_figures_are_printed_in_their_units_or_as_not_available() -> None:
    assert benchlib.ms(0.2194) == "219 ms"
    assert benchlib.ms(None) == "n/a"
    assert benchlib.mib(7.5 * 1024 * 1024) == "7.50 MiB"
    assert benchlib.mib(None) == "n/a"


def test_systemctl_show_values_that_systemd_has_not() -> None:
    props = benchlib.parse_show(
        "CPUUsageNSec=165001000\nMemoryPeak=[not set]\n"
        "MemoryCurrent=18446744073709551615\nControlGroup=\n"
    )
    assert benchlib.show_int(props, "CPUUsageNSec") == 165_001_000
    assert benchlib.show_int(props, "MemoryPeak") is None
    assert benchlib.show_int(props, "MemoryCurrent") is None  # uint64 infinity
    assert benchlib.show_int(props, "ControlGroup") is None
    assert benchlib.show_int(props, "IOReadBytes") is None  # absent: 252 lacks MemoryPeak
    assert benchlib.parse_show("Description=a=b")["Description"] == "a=b"


def test_records_are_counted_by_run_and_job_id_prefix() -> None:
    records = [
        {"job_id": "bench-1a-0", "run_id": "r1"},
        {"job_id": "bench-1a-1", "run_id": "r2"},
        {"job_id": "bench-1a-1", "run_id": "r2"},  # the same run twice counts once
        {"job_id": "bench-2b-0", "run_id": "r3"},
        {"job_id": "x", "run_id": "r4"},
    ]
    assert benchlib.count_records(records, "bench-1a-") == 2
    assert benchlib.count_records(records, "bench-") == 3
    assert benchlib.count_records([], "bench-") == 0


def test_interpreter_of_an_installed_script(tmp_path: Path) -> None:
    direct = tmp_path / "direct"
    direct.write_text("#!/opt/venv/bin/python3 -sP\nimport x\n")
    via_env = tmp_path / "via_env"
    via_env.write_text("#!/usr/bin/env python3.11\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\x02")
    assert benchlib.interpreter_of(str(direct)) == "/opt/venv/bin/python3"
    assert benchlib.interpreter_of(str(via_env)) == "python3.11"
    assert benchlib.interpreter_of(str(binary)) is None
    assert benchlib.interpreter_of(str(tmp_path / "missing")) is None
    assert Slotmgr.choose(str(direct)).interpreter == "/opt/venv/bin/python3"
    assert "PYTHONPATH" not in Slotmgr.choose(str(direct)).env
    with pytest.raises(SystemExit, match="not a '#!' script"):
        Slotmgr.choose(str(binary))


def test_the_repositorys_slotmgr_runs_on_this_interpreter() -> None:
    slotmgr = Slotmgr.choose(None)
    assert slotmgr.run("--quiet", "true") == [
        sys.executable,
        "-m",
        "slotmgr",
        "run",
        "--quiet",
        "true",
    ]
    assert slotmgr.env["PYTHONPATH"] == str(REPO)
    landlock_off = Slotmgr.choose(None, ["--no-landlock"])
    assert landlock_off.run("--quiet", "true")[-4:] == ["run", "--no-landlock", "--quiet", "true"]


def test_throughput_verdict_needs_the_ratio_no_failure_and_no_lost_record() -> None:
    ref = Throughput(jobs=20, seconds=10.0, failed=0)
    assert ref.rate == 2.0
    met = benchlib.throughput_line(20, ref, Throughput(20, 12.0, 0, lost_records=0))
    assert "0.83" in met and met.endswith("(goal ratio >= 0.80, 0 failed, 0 lost: met)")
    slow = benchlib.throughput_line(20, ref, Throughput(20, 100.0, 0, lost_records=0))
    assert "0.10" in slow and slow.endswith("NOT met)")
    assert benchlib.throughput_line(20, ref, Throughput(20, 10.0, 0, 1)).endswith("NOT met)")
    assert benchlib.throughput_line(20, ref, Throughput(20, 10.0, 1, 0)).endswith("NOT met)")
    assert Throughput(1, 0.0, 0).rate == 0.0


def test_failures_are_summed_up_by_exit_status_and_last_line() -> None:
    failures = [
        (70, "Traceback...\nslotmgr: error: internal\n"),
        (75, "slotmgr: error: full\n"),
        (70, "slotmgr: error: internal"),
        (1, ""),
        (2, "b"),
        (3, "c"),
    ]
    assert benchlib.failure_lines(failures) == [
        "    2 x exit 70: slotmgr: error: internal",
        "    1 x exit 75: slotmgr: error: full",
        "    1 x exit 1: (no stderr)",
        "    ... and 2 other kinds of failure",
    ]
    assert benchlib.failure_lines([]) == []


def test_at_once_verdicts() -> None:
    done = AtOnce(durations=(10.0, 30.5, 119.0), failed=0, records=3)
    assert (done.ended_in_time, done.slowest) == (3, 119.0)
    assert done.line() == (
        "3 jobs started at once: 3 of 3 ended within 120 s each, "
        "slowest 119.0 s, failed 0, records 3 of 3   "
        "(goal 3 of 3 within 120 s, 3 records: met)"
    )
    late = AtOnce(durations=(10.0, None, 121.0), failed=0, records=3)
    assert (late.ended_in_time, late.slowest) == (1, None)
    assert "1 of 3 ended within 120 s" in late.line()
    assert "not ended after 120 s" in late.line() and late.line().endswith("NOT met)")
    assert AtOnce((1.0, 2.0), failed=0, records=1).line().endswith("NOT met)")
    assert AtOnce((1.0, 2.0), failed=1, records=2).line().endswith("NOT met)")


def test_measure_reads_wall_time_cpu_and_output() -> None:
    launch = load_script("launch")
    got = launch.measure([sys.executable, "-c", "print('out'); sum(range(10**6))"])
    assert got.stdout == "out\n"
    assert 0 < got.cpu_s <= got.wall_s + 0.5
    with pytest.raises(launch.BenchError, match="exit 3"):
        launch.measure([sys.executable, "-c", "raise SystemExit(3)"])


def test_peak_rss_is_the_programs_own_not_its_forking_parents() -> None:
    launch = load_script("launch")
    ballast = bytearray(64 * 1024 * 1024)  # this process: > 64 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = launch.peak_rss(["sleep", "0.5"])
    big = launch.peak_rss(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(40 << 20); "
            "b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)",
        ]
    )
    # wait4's ru_maxrss would say more than 64 MiB for both.
    assert 0 < small < 8 * 1024 * 1024
    assert 40 * 1024 * 1024 < big < 60 * 1024 * 1024
    del ballast
    with pytest.raises(launch.BenchError, match="exit 1"):
        launch.peak_rss(["false"])


def test_vm_hwm_of_proc_status() -> None:
    assert (
        benchlib.parse_vm_hwm("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1536 kB\n") == 1536 * 1024
    )
    assert benchlib.parse_vm_hwm("Name:\tzombie\nState:\tZ (zombie)\n") == 0
    assert benchlib.vm_hwm_bytes(os.getpid()) > 1024 * 1024
    assert benchlib.vm_hwm_bytes(2**22 + 1) == 0  # past PID_MAX_LIMIT: no such process


FAKE_SLOTMGR = textwrap.dedent("""
    import json, os, sys, time
    where = os.environ["FAKE_DIR"]
    if sys.argv[1] == "run":
        job = sys.argv[sys.argv.index("--job-id") + 1]
        if job.endswith("-slow"):
            time.sleep(60)
        with open(os.path.join(where, job), "w") as f:
            json.dump({"job_id": job, "run_id": "run-" + job}, f)
        if job.endswith("-fail"):
            sys.exit("slotmgr: error: the stand-in fails " + job)
    if sys.argv[1:] == ["history", "--since", "2h", "--json"]:
        print(json.dumps([json.load(open(os.path.join(where, n))) for n in os.listdir(where)]))
""")


def test_at_once_times_each_launcher_stops_the_late_and_counts_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    throughput = load_script("throughput")
    fake = tmp_path / "fake_slotmgr.py"
    fake.write_text(FAKE_SLOTMGR)
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setattr(throughput, "RECORD_GRACE_S", 0.0)
    monkeypatch.setattr(throughput, "STOP_GRACE_S", 5.0)
    # Job ids are PREFIX + a name: the stand-in never ends 'slow' and fails 'fail'.
    monkeypatch.setattr(
        throughput,
        "slotmgr_run",
        lambda slotmgr, prefix: (
            lambda i: slotmgr.run(
                "--job-id", prefix + ["0", "1", "slow", "fail"][i], "--quiet", "true"
            )
        ),
    )
    slotmgr = Slotmgr(
        (sys.executable, str(fake)), sys.executable, dict(os.environ, FAKE_DIR=str(records))
    )
    result, failures = throughput.at_once(slotmgr, 4, limit_s=5.0)
    assert result.started == 4
    assert result.ended_in_time == 3 and result.slowest is None
    assert result.failed == 1
    assert failures == [(1, f"slotmgr: error: the stand-in fails {failures[0][1].split()[-1]}\n")]
    assert failures[0][1].split()[-1].endswith("-fail")
    assert result.records == 3  # the stopped one never wrote its record
    assert result.line().endswith("NOT met)")


@pytest.mark.parametrize("script", ["launch", "throughput"])
def test_scripts_explain_themselves_and_refuse_without_systemd(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, check=True
    )
    assert "goal" in shown.stdout
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert benchlib.refuse_without_systemd(script) is True
    assert f"bench/{script}: needs root on a host whose PID 1 is systemd" in capsys.readouterr().err


def test_history_records_reads_the_json_of_slotmgr_history(tmp_path: Path) -> None:
    fake = tmp_path / "fake_slotmgr.py"
    fake.write_text(FAKE_SLOTMGR)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "bench-x-0").write_text(json.dumps({"job_id": "bench-x-0", "run_id": "a"}))
    slotmgr = Slotmgr(
        (sys.executable, str(fake)), sys.executable, dict(os.environ, FAKE_DIR=str(tmp_path / "r"))
    )
    assert benchlib.wait_for_records(slotmgr, "bench-x-", 1, grace_s=0) == 1
    broken = Slotmgr((sys.executable, "-c", "raise SystemExit(70)"), sys.executable, os.environ)
    assert benchlib.history_records(broken) == []


def test_ci_runs_both_benchmarks_small_in_both_guests_and_lints_them() -> None:
    from tests import check

    stages = {s.name: s for s in check.stages([])}
    for guest in check.GUESTS:
        command = stages[f"guest-{guest}"].argv[-1]
        assert "python3 bench/launch --rounds 3" in command
        assert "python3 bench/throughput --sizes 20 --at-once 50" in command
    # One benchmark failing does not skip the other.
    assert (
        "bench/launch --rounds 3 --job-rounds 2 || s=1; python3 bench/throughput"
        in check.BENCHMARKS
    )
    lint = stages["lint"].argv[-1]
    for tool in ("ruff check", "ruff format --check"):
        assert (
            f"{tool} slotmgr tests bench packaging examples bench/launch bench/throughput" in lint
        )
    assert "mypy --scripts-are-modules bench/benchlib.py bench/launch bench/throughput" in lint
