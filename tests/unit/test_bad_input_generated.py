"""Bad input, generated (issue 9, "Bad input, generated").

Over a thousand command lines built from tables with a seeded random, each
with one bad value (sizes, percentages, time spans, CPU lists, unit names,
-p keys and values, signals, unicode and control characters, bytes that are
not UTF-8, PIDs and counts of the job control commands), run against the CLI
as a subprocess the way a batch system runs it. Each must be refused before
any bus is opened: exit 64, exactly one stderr line `slotmgr: error: ...` that
names the bad value, no traceback.
On a host without systemd a line that slipped through would exit 69 instead,
so the exit code alone tells a check that is missing.

The good values of the same tables are checked in-process, so that the
generator is known to vary the value and not merely to produce garbage.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slotmgr.systemd.properties import (
    JOB_SAFE,
    UNIT_PROPERTIES,
    Kind,
    Setter,
    build_property,
    shown,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20260909
AT_LEAST = 1000
PARALLEL = 2


@dataclass(frozen=True)
class Case:
    args: tuple[str | bytes, ...]
    names: tuple[str, ...]  # each must appear in the error line (the bad value, its key...)


# -- values, good and bad, per kind ---------------------------------------------------

CONTROL = [chr(c) for c in (*range(1, 32), 127)] + ["\x85", "\x9b"]
UNICODE = ["é", "ß", "٣", "\uff11", "²", "Ⅻ", "\u202e", "\u2028", "\ufeff", "😀", "\u0301"]
SUFFIX_1024 = ["", "K", "M", "G", "T", "P", "E", "KB", "MB", "GB"]
TIME_UNITS = ["us", "ms", "s", "sec", "min", "m", "h", "hr", "d", "w", "weeks"]


def too_big(rng: random.Random) -> str:
    return str(rng.randint(2**64, 2**200))


def pick(rng: random.Random, makers: list[Callable[[], str]]) -> str:
    """One of `makers`, chosen by `rng`, called."""
    return rng.choice(makers)()


def spoil(rng: random.Random, good: str, extra: list[str] = UNICODE) -> str:
    """`good` with a control (or odd unicode) character inside it: never at an
    end, where stripping the value's whitespace could take it away."""
    if len(good) < 2:
        good *= 2
    where = rng.randint(1, len(good) - 1)
    return good[:where] + rng.choice(CONTROL + extra) + good[where:]


def good_size(rng: random.Random) -> str:
    return f"{rng.randint(1, 4096)}{rng.choice(['', 'K', 'M', 'G'])}"


def bad_size(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: too_big(rng),
            lambda: f"{rng.randint(17, 10**6)}E",
            lambda: f"{rng.randint(16385, 10**9)}P",
            lambda: f"-{good_size(rng)}",
            lambda: f"{rng.randint(1, 99)}{rng.choice(['X', 'KiB', 'Q', 'EB B', 'k b'])}",
            lambda: f"{rng.randint(1, 9)}e{rng.randint(1, 30)}",
            lambda: "9" * rng.randint(31, 600),
            lambda: spoil(rng, good_size(rng)),
            lambda: rng.choice(["infinite", "inf", "none", "max", "1.2.3G", "0x10", "G"]),
            lambda: f"{rng.randint(101, 10**9)}%",
            lambda: "0%",
        ],
    )


def good_time(rng: random.Random) -> str:
    return f"{rng.randint(1, 1000)}{rng.choice(TIME_UNITS)}"


def bad_time(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: f"{too_big(rng)}{rng.choice(['s', 'd', 'w'])}",
            lambda: f"{rng.randint(2**64 // 10**6 // 604800 + 1, 10**20)}w",
            lambda: f"{rng.randint(1, 99)} {rng.choice(['parsecs', 'fortnights', 'yrs', 'M'])}",
            lambda: f"-{good_time(rng)}",
            lambda: "0",
            lambda: "9" * rng.randint(31, 500),
            lambda: spoil(rng, good_time(rng)),
            lambda: rng.choice(["soon", "forever", "1h30x", "min", "infinity s", "5e3s"]),
        ],
    )


def good_percent(rng: random.Random) -> str:
    return f"{rng.randint(1, 800)}%"


def bad_quota(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: f"{rng.randint(819201, 10**30)}%",
            lambda: f"{too_big(rng)}%",
            lambda: "1e23%",
            lambda: f"{rng.randint(1, 500)}",
            lambda: "0%",
            lambda: f"-{good_percent(rng)}",
            lambda: f"{rng.randint(1, 99)}.{rng.randint(100, 999)}%",
            lambda: spoil(rng, good_percent(rng)),
        ],
    )


def good_cpus(rng: random.Random) -> str:
    return "0" if rng.random() < 0.5 else "0-0"


def bad_cpus(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: str(rng.randint(8192, 10**6)),
            lambda: f"0-{rng.randint(8192, 10**25)}",
            lambda: f"{rng.randint(5, 90)}-{rng.randint(0, 4)}",
            lambda: rng.choice(["a", "0-", "-3", "0,,x", "1:2", "0-3,a", ",", "0x1", " - "]),
            lambda: spoil(rng, "0-3"),
            lambda: "٣",
        ],
    )


def good_weight(rng: random.Random) -> str:
    return str(rng.randint(1, 10000))


def bad_weight(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: "0",
            lambda: str(rng.randint(10001, 10**30)),
            lambda: too_big(rng),
            lambda: f"-{good_weight(rng)}",
            lambda: "\uff11\uff10\uff10",
            lambda: spoil(rng, "500"),
            lambda: rng.choice(["high", "1.5", "1e3", ""]),
        ],
    )


def good_tasks(rng: random.Random) -> str:
    return str(rng.randint(1, 2**64 - 2)) if rng.random() < 0.5 else f"{rng.randint(1, 100)}%"


def bad_tasks(rng: random.Random) -> str:
    return pick(
        rng,
        [
            lambda: str(rng.randint(2**64 - 1, 2**90)),
            lambda: "0",
            lambda: "many",
            lambda: "9" * rng.randint(21, 5000),
            lambda: f"{rng.randint(101, 10**6)}%",
            lambda: spoil(rng, "64"),
            lambda: "٦٤",
            lambda: "-1",
        ],
    )


def good_bool(rng: random.Random) -> str:
    return rng.choice(["yes", "no", "true", "off", "1"])


def bad_bool(rng: random.Random) -> str:
    return rng.choice(["perhaps", "2", "yess", "ja", spoil(rng, "yes"), "y e s"])


def bad_choice(rng: random.Random, choices: tuple[str, ...]) -> str:
    return rng.choice(
        [rng.choice(["strict", "explode", "tmpfs", "all", "none"]), spoil(rng, rng.choice(choices))]
    )


def bad_integer(rng: random.Random, low: int, high: int) -> str:
    return pick(
        rng,
        [
            lambda: str(rng.randint(-(10**12), low - 1)),
            lambda: str(rng.randint(high + 1, 10**12)),
            lambda: too_big(rng),
            lambda: "99999999999",
            lambda: "٣",
            lambda: "1_0",
            lambda: spoil(rng, str(low)),
            lambda: "ten",
            lambda: "0x5",
        ],
    )


def good_value(rng: random.Random, key: str) -> str | tuple[str, str]:
    spec = UNIT_PROPERTIES[key]
    kind = spec.kind
    if spec.choices:
        return rng.choice(spec.choices)
    if kind is Kind.MEMORY:
        return good_size(rng) if rng.random() < 0.7 else f"{rng.randint(1, 100)}%"
    if kind is Kind.BANDWIDTH:
        return ("/", good_size(rng))
    table = {
        Kind.TIMESPAN: good_time,
        Kind.CPU_QUOTA: good_percent,
        Kind.CPU_SET: good_cpus,
        Kind.WEIGHT: good_weight,
        Kind.TASKS: good_tasks,
        Kind.BOOL: good_bool,
        Kind.YES_NO_STRING: good_bool,
    }
    if kind in table:
        return table[kind](rng)
    assert kind is Kind.INTEGER and spec.bounds, key
    return str(rng.randint(*spec.bounds))


def bad_value(rng: random.Random, key: str) -> str:
    spec = UNIT_PROPERTIES[key]
    kind = spec.kind
    if spec.choices:
        return bad_choice(rng, spec.choices)
    if kind is Kind.MEMORY:
        return bad_size(rng)
    table = {
        Kind.TIMESPAN: bad_time,
        Kind.CPU_QUOTA: bad_quota,
        Kind.CPU_SET: bad_cpus,
        Kind.WEIGHT: bad_weight,
        Kind.TASKS: bad_tasks,
        Kind.BOOL: bad_bool,
    }
    if kind in table:
        return table[kind](rng)
    assert kind is Kind.INTEGER and spec.bounds, key
    return bad_integer(rng, *spec.bounds)


def named(value: str) -> str:
    """How a message shows `value`: escaped as shown(), and as the parsers see it."""
    return shown(value.strip())


# -- command lines -------------------------------------------------------------------

FLAGS = {
    "--memory-max": "MemoryMax",
    "--memory-high": "MemoryHigh",
    "--memory-swap-max": "MemorySwapMax",
    "--cpu-quota": "CPUQuota",
    "--cpu-weight": "CPUWeight",
    "--cpus": "AllowedCPUs",
    "--io-weight": "IOWeight",
    "--tasks-max": "TasksMax",
    "--runtime-max": "RuntimeMaxSec",
}
SCALAR_JOB_KEYS = [
    k
    for k in JOB_SAFE
    if UNIT_PROPERTIES[k].kind is not Kind.BANDWIDTH and k != "AllowedMemoryNodes"
]  # its count is the host's
REFUSED_KEYS = [k for k, s in UNIT_PROPERTIES.items() if s.setter is not Setter.JOB]
BAD_SIGNALS_FIXED = [
    "0",
    "65",
    "-9",
    "SIGFOO",
    "KILLL",
    "SIG",
    "9.0",
    "TERM KILL",
    "٩",
    "\uff11\uff15",
]


def property_cases(rng: random.Random) -> Iterator[Case]:
    key = rng.choice(SCALAR_JOB_KEYS)
    value = bad_value(rng, key)
    yield Case(("run", "-p", f"{key}={value}", "--", "true"), (f"{key}=", named(value)))
    flag = rng.choice(list(FLAGS))
    value = bad_value(rng, FLAGS[flag])
    yield Case(("run", flag, value, "--", "true"), (f"{FLAGS[flag]}=", named(value)))
    device, rate = rng.choice(
        [
            ("/", bad_size(rng)),
            (f"/nonexistent{rng.randint(0, 99)}", "1M"),
            ("relative", "1M"),
            (spoil(rng, "/dev/null"), "1M"),
        ]
    )
    if rate.endswith("%") or rate.strip() != rate:
        rate = too_big(rng)  # a rate has no percentage form; keep the case bad for a reason
    flag = rng.choice(["--io-read-bandwidth-max", "--io-write-bandwidth-max"])
    bad = rate if device == "/" else device
    yield Case(("run", flag, device, rate, "--", "true"), (named(bad),))


def refused_key_cases(rng: random.Random) -> Iterator[Case]:
    key = rng.choice(REFUSED_KEYS)
    spec = UNIT_PROPERTIES[key]
    value = (
        good_value(rng, key)
        if spec.kind not in (Kind.STRING, Kind.STRING_LIST)
        else rng.choice(["root", "/var/lib/slotmgr", "disk shadow", "x"])
    )
    assert isinstance(value, str)
    yield Case(("run", "-p", f"{key}={value}", "--", "true"), (f"{key}=", "a job"))
    name = rng.choice(
        [
            "User",
            "Group",
            "AmbientCapabilities",
            "Environment",
            "ExecStart",
            "PermissionsStartOnly",
            "CapabilityBoundingSet",
            "DynamicUser",
            "Slice",
            "Type",
            "BindPaths",
            "RootDirectory",
            "memorymax",
            "Memory-Max",
            "Memory Max",
            spoil(rng, "MemoryMax"),
        ]
    )
    yield Case(
        ("run", "-p", f"{name}=1", "--", "true"),
        ("unknown or unsupported property", shown(repr(name))),
    )
    text = rng.choice(["MemoryLow", "=1G", "", " =x", spoil(rng, "NoEquals")])
    if "=" in text and text.partition("=")[0].strip():
        text = "NoEquals"
    yield Case(("run", "-p", text, "--", "true"), ("KEY=VALUE",))


def duplicate_cases(rng: random.Random) -> Iterator[Case]:
    flag = rng.choice(list(FLAGS))
    key = FLAGS[flag]
    first, second = good_value(rng, key), good_value(rng, key)
    assert isinstance(first, str) and isinstance(second, str)
    order = [("-p", f"{key}={second}"), (flag, first)]
    rng.shuffle(order)
    args = [part for pair in order for part in pair]
    yield Case(
        ("run", *args, "--", "true"),
        (f"{key}= given twice", shown(f"{flag} {first}"), shown(f"-p {key}={second}")),
    )
    key = rng.choice(SCALAR_JOB_KEYS)
    one, two = good_value(rng, key), good_value(rng, key)
    assert isinstance(one, str) and isinstance(two, str)
    yield Case(
        ("run", "-p", f"{key}={one}", "-p", f"{key}={two}", "--", "true"),
        (f"{key}= given twice", shown(f"-p {key}={one}"), shown(f"-p {key}={two}")),
    )


def name_cases(rng: random.Random) -> Iterator[Case]:
    stem = rng.choice(["job", "a.b", "x-1", "slotmgr-abc"])
    unit = rng.choice(
        [
            f"{stem} {rng.randint(0, 9)}.service",
            f"{stem}/x.service",
            f"{stem}.timer",
            f"{stem}.service\n",
            spoil(rng, f"{stem}.service"),
            f"{'a' * 260}.service",
            f"{stem}$.service",
            f"{stem}.scope",
            f"{rng.choice(UNICODE)}.service",
            ".service",
        ]
    )
    yield Case(("run", "--unit", unit, "--", "true"), (shown(unit) if len(unit) < 200 else "aaaa",))
    slice_ = rng.choice(
        [
            f"{stem}",
            f"{stem} x.slice",
            spoil(rng, f"{stem}.slice"),
            f"{stem}/.slice",
            f"{stem}.slice\n",
        ]
    )
    yield Case(("run", "--slice", slice_, "--", "true"), ("--slice", shown(slice_)))
    job_id = rng.choice(
        [
            f"{stem}/{rng.randint(0, 9)}",
            f"{stem} x",
            "a" * 65,
            "",
            spoil(rng, stem),
            f"{stem}\n",
            f"{stem}$",
        ]
    )
    yield Case(("run", "--job-id", job_id, "--", "true"), ("--job-id", shown(job_id)))
    env = rng.choice(
        [f"1{stem}=x", f"{stem}-x=1", "NO EQUALS", "A\n=x", "=x", f"{spoil(rng, 'NAME')}=x"]
    )
    yield Case(("run", "-E", env, "--", "true"), ("--setenv", shown(env)))
    # Any other character is a valid path: only control characters are refused.
    wd = spoil(rng, rng.choice(["/var/tmp", "relative/dir", "/srv/a b"]), extra=[])
    yield Case(("run", "--working-directory", wd, "--", "true"), ("--working-directory", shown(wd)))


def signal_cases(rng: random.Random) -> Iterator[Case]:
    value = pick(
        rng,
        [
            lambda: str(rng.randint(65, 10**30)),
            lambda: too_big(rng),
            lambda: rng.choice(BAD_SIGNALS_FIXED),
            lambda: spoil(rng, "TERM"),
            lambda: "SIG" + rng.choice(["TERMM", "KIL", "FOO", "RTMIN+1", "1"]),
        ],
    )
    yield Case(("kill", "-s", value, "somejob"), ("--signal", named(value)))


def control_cases(rng: random.Random) -> Iterator[Case]:
    """The job control commands' own numbers, checked before they open a bus."""
    pid = pick(
        rng,
        [
            lambda: str(rng.randint(4 * 1024 * 1024 + 1, 2**64)),
            lambda: too_big(rng),
            lambda: rng.choice(["0", "1", "\u00b2", "٣٤", "12a", "0x10", "1.5", ""]),
            lambda: spoil(rng, str(rng.randint(100, 99999))),
        ],
    )
    yield Case(("adopt", "somejob", "4242", pid), ("invalid PID", named(pid)))
    limit = rng.choice(["0", "-1", "\u00b2", "٣", "ten", spoil(rng, "10")])
    yield Case(("history", "--limit", limit), ("--limit", shown(limit)))


def bytes_cases(rng: random.Random) -> Iterator[Case]:
    """Arguments that are not UTF-8: Python gives them as surrogate escapes."""
    bad = bytes([rng.choice([0xE9, 0xFF, 0xC3, 0x80, 0xFE, 0xED])])
    word = rng.choice([b"caf", b"x", b"", b"/tmp/"]) + bad + rng.choice([b"", b"e", b"1"])
    slot = rng.choice(
        [
            (("run", "--", word), 3),
            (("run", "--", "echo", word), 4),
            (("run", "-p", b"MemoryMax=" + word), 3),
            (("run", "-E", b"A=" + word), 3),
            (("run", "--unit", word + b".service"), 3),
            (("run", "--working-directory", b"/" + word), 3),
            (("run", "--job-id", word), 3),
            (("kill", "-s", word, "job"), 3),
        ]
    )
    args, position = slot
    if args[0] == "run" and "--" not in args:
        args = (*args, "--", "true")
    yield Case(tuple(args), (f"argument {position} ", f"byte 0x{bad[0]:02x}"))


GENERATORS = (
    property_cases,
    property_cases,
    refused_key_cases,
    duplicate_cases,
    name_cases,
    signal_cases,
    control_cases,
    bytes_cases,
)


def generated_cases() -> list[Case]:
    """At least AT_LEAST different command lines, the same ones every run."""
    rng = random.Random(SEED)
    cases: dict[tuple[str | bytes, ...], Case] = {}
    while len(cases) < AT_LEAST:
        for generator in GENERATORS:
            for case in generator(rng):
                cases.setdefault(case.args, case)
    return list(cases.values())


# -- the tests -----------------------------------------------------------------------


def run_line(case: Case) -> tuple[Case, subprocess.CompletedProcess[bytes]]:
    env = dict(os.environ, PYTHONPATH=REPO, LC_ALL="C.UTF-8")
    out = subprocess.run(
        [sys.executable, "-m", "slotmgr", *case.args], capture_output=True, env=env, timeout=60
    )
    return case, out


def judge(case: Case, out: subprocess.CompletedProcess[bytes]) -> str | None:
    """What is wrong with how the CLI answered `case`, or None."""
    err = out.stderr.decode("utf-8", "backslashreplace")
    if "Traceback" in err:
        return "traceback"
    if out.returncode != 64:
        return f"exit {out.returncode}"
    if err.count("\n") != 1 or not err.endswith("\n") or "\r" in err:
        return "not exactly one line"
    if not err.startswith("slotmgr: error: "):
        return "not a slotmgr error line"
    missing = [n for n in case.names if n not in err]
    if missing:
        return f"does not name {missing}"
    if out.stdout:
        return "wrote to stdout"
    return None


def test_generated_bad_command_lines_are_refused_in_one_line_with_exit_64() -> None:
    cases = generated_cases()
    assert len(cases) >= AT_LEAST
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(lambda c: run_line(c), cases))
    failures = []
    for case, out in results:
        problem = judge(case, out)
        if problem:
            failures.append(
                f"{problem}: {case.args!r} -> {out.returncode} "
                f"{out.stderr.decode('utf-8', 'backslashreplace')[:300]!r}"
            )
    assert not failures, f"{len(failures)} of {len(cases)} lines:\n" + "\n".join(failures[:25])


def test_generation_is_deterministic() -> None:
    assert generated_cases() == generated_cases()


def test_the_good_values_of_the_same_tables_are_taken() -> None:
    rng = random.Random(SEED)
    for _ in range(500):
        key = rng.choice([k for k in JOB_SAFE if k != "AllowedMemoryNodes"])
        value = good_value(rng, key)
        build_property(key, value, None)  # raises if refused
