"""slotmgr's SPANK plugin (packaging/slurm/): every task of a Slurm job runs
as a slotmgr unit, on the guest's real Slurm 24.11 (257-batch).

The module installs what an admin would (README, "With Slurm"): the plugin,
built here from packaging/slurm/spank_slotmgr.c against the guest's
libslurm-dev, its plugstack line, the Epilog and the sudo entry
(`batch_entry`), then submits jobs as the unprivileged test user. It needs
Slurm >= 23.11 (spank_prepend_task_argv): conftest deselects it on 22.05
(252-batch) and says so; where it is collected, a plugin that does not build
fails every test.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    EPILOG,
    JOB_DEADLINE,
    REPO,
    SLURM_SRC,
    WORK_ROOT,
    install_epilog,
    job_info,
    output_of,
    run,
    sbatch,
    slotmgr_argv,
    slurm_config,
    wait_for_cluster,
    wait_for_end,
    wait_for_state,
    wait_until,
    write_script,
)
from .test_batch_run import RANK

SNIPPET_DIR = Path("/etc/slurm/plugstack.conf.d")
STOP_DEADLINE = 30.0  # scancel -> the unit gone: SIGTERM, then KillWait=5 s at most
UNIT_DEADLINE = 90.0  # sbatch -> the task's unit active, under emulation
# A task that waits for the test: until the file `go` is in its directory (at most 5 min).
WAIT_FOR_GO = 'i=0; while [ ! -e go ] && [ "$i" -lt 300 ]; do sleep 1; i=$((i+1)); done\n'


@pytest.fixture(scope="module", autouse=True)
def spank_plugin(batch_entry: Path) -> Iterator[Path]:
    """The plugin built and installed, its plugstack line, and the Epilog in
    slurm.conf. The plugstack line goes at the end (later tests of the session
    run without the plugin); the Epilog stays, as harmless to other jobs."""
    build = WORK_ROOT / "spank-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    so = build / "spank_slotmgr.so"
    cc = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(so),
         str(SLURM_SRC / "spank_slotmgr.c")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if cc.returncode != 0:
        pytest.fail(
            f"spank_slotmgr.c did not build (gcc exited {cc.returncode}):\n{cc.stderr}",
            pytrace=False,
        )
    undefined = run(["nm", "-D", "--undefined-only", str(so)]).stdout
    assert "spank_prepend_task_argv" in undefined, undefined
    config = slurm_config()
    plugin_dir = Path(config["PluginDir"].split(":")[0])
    installed = plugin_dir / "spank_slotmgr.so"
    run(["install", "-o", "root", "-g", "root", "-m", "0755", str(so), str(installed)])
    # plugstack.conf: include the snippet directory, as a packaged install would.
    # (24.11 shows PlugStackConfig as "(null)" when slurm.conf leaves the default.)
    named = config.get("PlugStackConfig", "(null)")
    plugstack = Path("/etc/slurm/plugstack.conf" if named == "(null)" else named)
    include = f"include {SNIPPET_DIR}/*.conf"
    lines = plugstack.read_text().splitlines() if plugstack.exists() else []
    if include not in lines:
        plugstack.write_text("\n".join([*lines, include]) + "\n")
    SNIPPET_DIR.mkdir(parents=True, exist_ok=True)
    snippet = SNIPPET_DIR / "slotmgr.conf"
    shutil.copyfile(SLURM_SRC / "plugstack.conf.d" / "slotmgr.conf", snippet)
    install_epilog()
    print(f"\nspank: {installed} ({plugstack}: {include}; Epilog={EPILOG})")
    yield installed
    snippet.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def nodes_idle() -> None:
    """Each test starts with both nodes idle: on a loaded host a node may
    miss SlurmdTimeout and be DOWN for a while (ReturnToService=2 brings it
    back), and a drained node (an Epilog that failed) fails here, naming why."""
    wait_for_cluster()


def node_reasons() -> str:
    return run(["sinfo", "-R", "-N", "-o", "%N %T %E %H"], check=False).stdout


def slotmgr_units() -> dict[str, dict[str, str]]:
    """Every loaded slotmgr job service: unit -> its properties (launchers left out)."""
    listed = run(
        ["systemctl", "list-units", "--type=service", "--plain", "--no-legend", "slotmgr-*"]
    ).stdout
    units = {}
    for line in listed.splitlines():
        unit = line.split()[0] if line.split() else ""
        if not unit or unit.startswith("slotmgr-launcher-"):
            continue
        out = run(
            ["systemctl", "show", unit, "--property=Id,User,LogExtraFields,MemoryMax,"
             "ActiveState,ControlGroup,MainPID"],
            check=False,
        ).stdout  # fmt: skip
        units[unit] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return units


def batch_id(props: dict[str, str]) -> str | None:
    found = re.search(r"(?:^| )SLOTMGR_BATCH_ID=(\S+)", props.get("LogExtraFields", ""))
    return found[1] if found else None


def units_of_job(job_id: str) -> dict[str, dict[str, str]]:
    """The job's running slotmgr units, by unit name."""
    found = {}
    for unit, props in slotmgr_units().items():
        bid = batch_id(props)
        if bid is not None and bid.startswith(f"{job_id}.") and props["ActiveState"] == "active":
            found[unit] = props
    return found


def batch_ids(units: dict[str, dict[str, str]]) -> list[str | None]:
    """The units' batch ids, sorted: JOB.batch, and JOB.STEP once per node of the step."""
    return sorted((batch_id(props) for props in units.values()), key=str)


def wait_for_units(job_id: str, count: int) -> dict[str, dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}

    def enough() -> bool:
        seen.clear()
        seen.update(units_of_job(job_id))
        return len(seen) >= count

    wait_for_state(job_id, ("RUNNING",))
    try:
        wait_until(enough, UNIT_DEADLINE, f"{count} slotmgr units of job {job_id}", interval=1)
    except AssertionError as err:
        raise AssertionError(
            f"{err}: found {sorted(seen)}; job: {job_info(job_id)}\n"
            f"units: {slotmgr_units()}\nnodes down or drained: {node_reasons()}"
        ) from None
    return dict(seen)


def go(workdir: Path) -> None:
    (workdir / "go").touch()


def report(what: str, job_id: str) -> dict[str, str]:
    info = wait_for_end(job_id)
    print(f"{what}: job {job_id}: JobState={info['JobState']} ExitCode={info['ExitCode']} "
          f"Reason={info.get('Reason')}")  # fmt: skip
    return info


def test_the_batch_script_runs_as_a_slotmgr_unit_and_scancel_stops_it(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir, "plain.sh", 'echo "batch $SLURM_JOB_ID in $(cat /proc/self/cgroup)"\nsleep 300\n',
        test_user,
    )  # fmt: skip
    job_id = sbatch(script, "--job-name=plain", "--time=5", user=test_user.pw_name)
    units = wait_for_units(job_id, 1)
    print(f"units of {job_id}: {units}")
    assert batch_ids(units) == [f"{job_id}.batch"], units
    (props,) = units.values()
    assert props["User"] == test_user.pw_name, props
    assert props["ControlGroup"].startswith("/slotmgr.slice/"), props
    main_pid = int(props["MainPID"])
    assert job_info(job_id)["JobState"] == "RUNNING"
    # The unit is active once its init runs; the script's first line comes after.
    started = f"batch {job_id} in 0::/slotmgr.slice/{props['Id']}\n"
    out_file = workdir / f"slurm-{job_id}.out"

    def script_started() -> bool:
        return out_file.exists() and started in out_file.read_text()

    wait_until(script_started, UNIT_DEADLINE, f"{started.strip()!r} in {out_file}")

    run(["scancel", job_id], user=test_user.pw_name)

    def unit_gone() -> bool:
        state = run(["systemctl", "show", props["Id"], "--property=ActiveState", "--value"])
        return state.stdout.strip() not in ("active", "activating", "deactivating", "reloading")

    wait_until(unit_gone, STOP_DEADLINE, f"{props['Id']} to stop after scancel {job_id}")
    assert not os.path.exists(f"/proc/{main_pid}"), f"the task's process {main_pid} still runs"
    info = report("scancel", job_id)
    assert info["JobState"] == "CANCELLED", info
    out = output_of(workdir, job_id)
    print(out)
    assert out.startswith(started), out


def test_srun_in_the_batch_script_is_a_step_of_the_job_and_a_slotmgr_unit(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir,
        "step.sh",
        'echo "batch $SLURM_JOB_ID step ${SLURM_STEP_ID-unset}"\n'
        "srun -n1 sh -c 'echo \"task $SLURM_JOB_ID.$SLURM_STEP_ID.$SLURM_PROCID "
        'node ${SLURMD_NODENAME-unset} $(cat /proc/self/cgroup)"; ' + WAIT_FOR_GO.strip() + "'\n",
        test_user,
    )
    job_id = sbatch(script, "--job-name=step", "--time=5", user=test_user.pw_name)
    units = wait_for_units(job_id, 2)
    print(f"units of {job_id}: {units}")
    # The step's task is a task of the step's one unit on its node (slotmgr.job.step).
    assert batch_ids(units) == [f"{job_id}.0", f"{job_id}.batch"], units
    assert all(props["User"] == test_user.pw_name for props in units.values()), units
    go(workdir)
    info = report("srun in sbatch", job_id)
    out = output_of(workdir, job_id)
    print(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    assert f"task {job_id}.0.0 " in out, out
    assert run(["squeue", "-h", "-o", "%i"]).stdout.split().count(job_id) == 0


def test_srun_on_two_nodes_runs_a_slotmgr_unit_on_each(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir,
        "two.sh",
        "srun -N2 -l sh -c 'echo \"$SLURM_JOB_ID.$SLURM_STEP_ID.$SLURM_PROCID "
        "node=${SLURM_TOPOLOGY_ADDR-unset} nodeid=$SLURM_NODEID "
        'nodename=${SLURMD_NODENAME-unset}"; ' + WAIT_FOR_GO.strip() + "'\n",
        test_user,
    )
    job_id = sbatch(script, "--job-name=two", "-N2", "--time=5", user=test_user.pw_name)
    units = wait_for_units(job_id, 3)
    print(f"units of {job_id}: {units}")
    # One unit of the step on each node, and the batch script's.
    assert batch_ids(units) == [f"{job_id}.0", f"{job_id}.0", f"{job_id}.batch"], units
    go(workdir)
    info = report("srun -N2", job_id)
    out = output_of(workdir, job_id)
    print(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    lines = sorted(out.splitlines())
    assert [line.split()[:2] for line in lines] == [
        ["0:", f"{job_id}.0.0"],
        ["1:", f"{job_id}.0.1"],
    ], out
    assert {line.split()[2] for line in lines} == {"node=n1", "node=n2"}, out
    # SLURMD_NODENAME is not SLURM_*: it reaches each task by sudoers' env_keep
    # and the plugin's --pass-env SLURMD_*.
    for line in lines:
        words = line.split()
        assert words[4] == "nodename=" + words[2].removeprefix("node="), out


def test_two_ranks_on_a_node_share_their_steps_unit_under_the_plugin(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    """What MPI's shared-memory transport needs of two ranks on a node, with
    every task prepended by the plugin: one unit for the step there, one
    /dev/shm, one PID namespace (RANK: test_batch_run's two-rank check)."""
    rank = write_script(workdir, "rank.py", RANK, test_user)
    script = write_script(workdir, "ranks.sh", f"srun -N1 -n2 python3 {rank}\n", test_user)
    job_id = sbatch(script, "--job-name=ranks", "-N1", "-n2", "--time=5", user=test_user.pw_name)
    info = report("two ranks on a node", job_id)
    out = output_of(workdir, job_id)
    print(out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    seen = [
        dict(word.split("=", 1) for word in line.split())
        for line in sorted(out.splitlines())
        if line.startswith("rank=")
    ]
    assert [s["peer-visible"] for s in seen] == ["True", "True"], out
    assert seen[0]["pid"] == seen[1]["peer"] and seen[1]["pid"] == seen[0]["peer"], out


def test_a_job_over_its_mem_is_oom_killed_in_its_unit(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(
        workdir,
        "hog.sh",
        WAIT_FOR_GO + "exec python3 -c 'x = bytearray(b\"x\" * (200 << 20)); print(len(x))'\n",
        test_user,
    )
    job_id = sbatch(script, "--job-name=hog", "--mem=64M", "--time=5", user=test_user.pw_name)
    units = wait_for_units(job_id, 1)
    (props,) = units.values()
    assert batch_id(props) == f"{job_id}.batch", props
    print(f"unit of {job_id}: {props}")
    assert props["MemoryMax"] == str(64 << 20), props
    go(workdir)
    info = report("--mem=64M, 200 MiB", job_id)
    out = output_of(workdir, job_id)
    print(out)
    # The OOM kill happens in the unit, outside Slurm's cgroup: Slurm sees
    # slotmgr's exit status 125 (the job was killed by the OOM killer), not
    # an OUT_OF_MEMORY of its own.
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "125:0"), (info, out)
    assert "209715200" not in out, out


def test_the_epilog_stops_a_unit_of_the_job_left_running(
    workdir: Path, test_user: pwd.struct_passwd
) -> None:
    script = write_script(workdir, "short.sh", WAIT_FOR_GO, test_user)
    job_id = sbatch(script, "--job-name=short", "--time=5", user=test_user.pw_name)
    wait_for_state(job_id, ("RUNNING",))
    # A unit of the job that no task launched: root's, outside Slurm's cgroups.
    stray = f"{job_id}.x"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    launcher = subprocess.Popen(
        [*slotmgr_argv(), "run", "--quiet", "--uid", test_user.pw_name, "--batch-id", stray,
         "--", "sleep", "600"],
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        units = wait_for_units(job_id, 2)
        assert batch_ids(units) == [f"{job_id}.batch", stray], units
        (unit,) = [name for name, props in units.items() if batch_id(props) == stray]
        go(workdir)
        info = report("Epilog backstop", job_id)
        assert info["JobState"] == "COMPLETED", info

        def stray_gone() -> bool:
            return unit not in units_of_job(job_id)

        wait_until(stray_gone, JOB_DEADLINE, f"the Epilog to stop {unit} ({stray})")
        code = launcher.wait(timeout=60)
        out, err = launcher.communicate(timeout=10)
        print(f"root's launcher of {stray} exited {code}: {err.strip()}")
        journal = run(["journalctl", "-t", "slotmgr-epilog", "--no-pager", "-o", "cat"]).stdout
        print(journal)
        assert f"job {job_id}: stopping {unit} (batch id {stray})" in journal, journal
        assert code != 0, (code, out, err)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=60)
