"""What the job's owner may choose (issue 9, findings 5 and 11): the job-safe
set, value bounds, keys given twice, text that cannot reach systemd as given."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from slotmgr.systemd import values
from slotmgr.systemd.properties import (
    JOB_SAFE,
    LIMIT_OPTIONS,
    UNIT_PROPERTIES,
    Given,
    PropertyError,
    Setter,
    build_property,
    job_limits,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def slotmgr_cli(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "slotmgr", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def given(*assignments: str) -> list[Given]:
    out = []
    for text in assignments:
        key, _, raw = text.partition("=")
        out.append(Given(key, raw, f"-p {text}"))
    return out


@pytest.mark.parametrize(
    ("assignment", "who"),
    [
        ("SupplementaryGroups=root", "reserved for the node's admin"),
        ("SupplementaryGroups=disk shadow", "reserved for the node's admin"),
        ("Delegate=yes", "reserved for the node's admin"),
        ("TimeoutStopSec=1us", "set by slotmgr for every job"),
        ("CPUAccounting=no", "set by slotmgr for every job"),
        ("MemoryAccounting=no", "set by slotmgr for every job"),
        ("IOAccounting=no", "set by slotmgr for every job"),
        ("TasksAccounting=no", "set by slotmgr for every job"),
        ("IPAccounting=no", "set by slotmgr for every job"),
        ("InaccessiblePaths=/var/lib/slotmgr", "set by slotmgr for every job"),
        ("ReadOnlyPaths=/var", "set by slotmgr for every job"),
        ("ReadWritePaths=/", "set by slotmgr for every job"),
        ("KillMode=control-group", "set by slotmgr for every job"),
        ("PrivateTmp=no", "--no-private-tmp"),
        ("PrivatePIDs=no", "--no-private-pids"),
    ],
)
def test_keys_the_job_may_not_set_are_refused_naming_who_sets_them(
    assignment: str, who: str
) -> None:
    with pytest.raises(PropertyError) as info:
        job_limits(given(assignment))
    key = assignment.partition("=")[0]
    assert str(info.value).startswith(f"{key}= is ")
    assert who in str(info.value)


@pytest.mark.parametrize(
    ("assignment", "allowed"),
    [
        ("Nice=-1", "0 to 19"),
        ("Nice=-20", "0 to 19"),
        ("Nice=20", "0 to 19"),
        ("Nice=99999999999", "0 to 19"),
        ("OOMScoreAdjust=-1", "0 to 1000"),
        ("OOMScoreAdjust=-1000", "0 to 1000"),
        ("OOMScoreAdjust=1001", "0 to 1000"),
    ],
)
def test_priorities_only_downwards(assignment: str, allowed: str) -> None:
    with pytest.raises(PropertyError, match=allowed):
        job_limits(given(assignment))


def test_job_safe_values_pass() -> None:
    limits = job_limits(given("Nice=19", "OOMScoreAdjust=1000"))
    assert limits == (("Nice", "19"), ("OOMScoreAdjust", "1000"))
    assert build_property("Nice", "0", None)[0].value == 0


@pytest.mark.parametrize(
    "items",
    [
        [
            Given("RuntimeMaxSec", "12h", "--runtime-max 12h"),
            Given("RuntimeMaxSec", "infinity", "-p RuntimeMaxSec=infinity"),
        ],
        [Given("MemoryMax", "1G", "-p MemoryMax=1G"), Given("MemoryMax", "1G", "-p MemoryMax=1G")],
        [Given("MemoryMax", "1G", "--memory-max 1G"), Given("MemoryMax", "2G", "--memory-max 2G")],
    ],
)
def test_a_key_given_twice_is_refused_naming_both(items: list[Given]) -> None:
    with pytest.raises(PropertyError) as info:
        job_limits(items)
    assert str(info.value) == (
        f"{items[0].key}= given twice ({items[0].source} and {items[1].source}): give it once"
    )


def test_option_and_property_twice_on_the_command_line() -> None:
    out = slotmgr_cli("run", "--runtime-max", "12h", "-p", "RuntimeMaxSec=infinity", "true")
    assert out.returncode == 64
    assert out.stderr == (
        "slotmgr: error: RuntimeMaxSec= given twice (--runtime-max 12h and "
        "-p RuntimeMaxSec=infinity): give it once\n"
    )


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("Nice", "99999999999", "from 0 to 19"),
        ("CPUQuota", "1e23%", "not a CPU quota"),
        ("CPUQuota", "1" + "0" * 23 + "%", "too large: at most 819200%"),
        ("TasksMax", str(2**70), "too large"),
        ("TasksMax", str(2**64 - 1), "too large"),
        ("TasksMax", "9" * 5000, "too large"),
        ("MemoryMax", "16E", "too large"),
        ("MemoryMax", str(2**64), "too large"),
        ("MemoryMax", "9" * 400, "too large"),
        ("MemoryMax", "٣G", "not a size"),  # Arabic-Indic three: systemd takes ASCII digits only
        ("RuntimeMaxSec", "99999999999999999999d", "too long"),
        ("RuntimeMaxSec", "9" * 400, "too large"),
        ("RuntimeMaxSec", f"{2**64 - 1}us", "too long"),
        ("CPUWeight", "10001", "from 1 to 10000"),
        ("CPUWeight", "\uff11\uff10\uff10", "from 1 to 10000"),  # fullwidth digits
        ("AllowedCPUs", "0-" + "9" * 25, "out of range"),
        ("AllowedCPUs", "8192", "out of range"),
        ("AllowedMemoryNodes", "4096", "memory node"),
        ("MemoryHigh", "1000%", "at most 100%"),
        ("IOReadBandwidthMax", ("/", "99999E"), "too large"),
        ("OOMPolicy", "kill\n", "control character"),
        ("MemoryPressureWatch", "auto\x1b[2J", "control character"),
    ],
)
def test_values_out_of_range_never_reach_marshalling(
    key: str, raw: str | tuple[str, str], message: str
) -> None:
    with pytest.raises(PropertyError, match=re.escape(message)):
        build_property(key, raw, None)


def test_largest_values_systemd_takes_still_pass() -> None:
    assert build_property("TasksMax", str(2**64 - 2), None)[0].value == 2**64 - 2
    assert build_property("MemoryMax", str(2**64 - 1), None)[0].value == 2**64 - 1
    assert build_property("RuntimeMaxSec", f"{2**64 - 2}us", None)[0].value == 2**64 - 2
    assert build_property("CPUQuota", "819200%", None)[0].value == 8192 * 10**6
    assert values.parse_bytes("1.5K") == 1536  # exact arithmetic keeps fractions right


def test_signals_take_ascii_digits_only() -> None:
    with pytest.raises(ValueError):
        values.parse_signal("٩")
    assert values.parse_signal("9") == 9


@pytest.mark.parametrize("arg", [b"\xe9", b"caf\xe9", b"MemoryMax=1\xffG"])
def test_an_argument_that_is_not_utf8_is_named_by_position(arg: bytes) -> None:
    out = slotmgr_cli("run", "-p", arg, "--", "true")
    assert out.returncode == 64, out.stderr
    shown = arg.decode("utf-8", "backslashreplace")
    bad = next(b for b in arg if b >= 0x80)
    assert out.stderr == (
        f"slotmgr: error: argument 3 ({shown}) is not valid UTF-8 "
        f"(byte 0x{bad:02x}): systemd takes only UTF-8 text\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unit", "job.service\n"], "invalid unit name 'job.service\\n"),
        (["--job-id", "abc\n"], "invalid --job-id 'abc\\n'"),
        (["-E", "A\n=x"], "invalid --setenv 'A\\n=x'"),
        (["--slice", "a b.slice"], "invalid --slice 'a b.slice'"),
        (["--working-directory", "/tmp/\x1b"], "--working-directory '/tmp/\\x1b' holds a control"),
    ],
)
def test_control_characters_in_names_are_refused_in_one_line(args: list[str], message: str) -> None:
    out = slotmgr_cli("run", *args, "--", "true")
    assert out.returncode == 64, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


# -- the README's threat model lists the table ------------------------------------------


def readme_keys(heading: str) -> set[str]:
    """The `Key` names on the README line that starts with `heading`."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    paragraph = section.split(heading, 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([A-Z][A-Za-z]+)`", paragraph))


def test_readme_lists_exactly_the_job_safe_set() -> None:
    assert readme_keys("**The job's owner may set**") == set(JOB_SAFE)


def test_readme_lists_exactly_the_refused_keys() -> None:
    refused = {k for k, s in UNIT_PROPERTIES.items() if s.setter is not Setter.JOB}
    assert readme_keys("**Refused from the job's owner**") == refused


def test_every_limit_option_is_job_safe_and_every_refusal_says_why() -> None:
    assert all(o.key in JOB_SAFE for o in LIMIT_OPTIONS)
    for spec in UNIT_PROPERTIES.values():
        assert spec.setter is Setter.JOB or spec.why, spec.key
        assert spec.bounds is None or spec.why, spec.key


@pytest.mark.parametrize("text", ["\u00b2", "٣٤", str(2**32), "99999999999999999999", "1"])
def test_adopt_takes_ascii_pids_that_fit_the_kernel(text: str) -> None:
    from slotmgr.errors import UsageError
    from slotmgr.job.adopt import PID_MAX_LIMIT, parse_pids

    with pytest.raises(UsageError, match=f"invalid PID '{text}'.*at most {PID_MAX_LIMIT}"):
        parse_pids([text])
    assert parse_pids(["4242", str(PID_MAX_LIMIT)]) == [4242, PID_MAX_LIMIT]


@pytest.mark.parametrize(
    "args", [("history", "--limit", "\u00b2"), ("history", "--slot", "\u00b2")]
)
def test_history_counts_take_ascii_digits(args: tuple[str, str, str]) -> None:
    out = slotmgr_cli(*args)
    assert out.returncode == 64 and out.stderr.startswith("slotmgr: error: invalid --"), out
