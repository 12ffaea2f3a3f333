"""What makes a unit a slotmgr job, declared once: job ids, default unit
names, and the marker slotmgr puts on every job unit it makes.

A job is known by its marker, not by its name (`--unit` may name it
anything):

- a service carries `LogExtraFields=SLOTMGR_JOB=<id>`, which also tags every
  line of its log (`journalctl SLOTMGR_JOB=<id>`);
- a scope has no exec context, so no LogExtraFields=: it carries its
  Description, `slotmgr job <id>: <command>`.

Neither can be set with `-p` (slotmgr.systemd.properties does not offer them), and on
the system manager only root makes units, so a unit there with a marker is one
slotmgr made. A user's own `systemd-run --user` unit lives in their user
manager, which `slotmgr --user` alone looks at, acting with the user's own
rights. Pure: imported on the `run` path, so standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

UNIT_PREFIX = "slotmgr-"
JOB_ID_RULE = "1-64 letters, digits and '_.:-'"
MARKER_FIELD = "SLOTMGR_JOB"
BATCH_ID_FIELD = "SLOTMGR_BATCH_ID"  # a service job's batch system id, beside its marker
DESCRIPTION_PREFIX = "slotmgr job "
UNIT_SUFFIXES = (".service", ".scope")
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


def unit_name_for(job_id: str, *, scope: bool = False) -> str:
    """The unit a job gets when `--unit` does not name it."""
    return f"{UNIT_PREFIX}{job_id}.{'scope' if scope else 'service'}"


def launcher_unit_for(run_id: str) -> str:
    """The unit of the watcher that binds a run's job to its launcher
    (slotmgr.job.binding): named by the run id, which nobody can guess or
    reuse, so no job's name can take it first. It carries no marker: it is
    no job."""
    return f"{UNIT_PREFIX}launcher-{run_id}.service"


def description_for(job_id: str, command_text: str) -> str:
    return f"{DESCRIPTION_PREFIX}{job_id}: {command_text}"


def marker_field(job_id: str) -> bytes:
    """The LogExtraFields= entry of a service job."""
    return f"{MARKER_FIELD}={job_id}".encode()


def job_id_of_description(description: str) -> str | None:
    """'slotmgr job ab:c: sleep 1' -> 'ab:c' (an id has no space; the ':' after
    it is the description's own); None for any other text."""
    if not description.startswith(DESCRIPTION_PREFIX):
        return None
    head = description[len(DESCRIPTION_PREFIX) :].split(" ", 1)[0]
    if not head.endswith(":") or not is_job_id(head[:-1]):
        return None
    return head[:-1]


def job_id_of_fields(fields: Sequence[Any]) -> str | None:
    """The job id in a service's LogExtraFields= (a list of byte strings), if
    exactly one entry is slotmgr's marker and it holds a valid id."""
    prefix = f"{MARKER_FIELD}=".encode()
    found = [bytes(f)[len(prefix) :] for f in fields if bytes(f).startswith(prefix)]
    if len(found) != 1:
        return None
    try:
        text = found[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if is_job_id(text) else None


def batch_id_of_fields(fields: Sequence[Any]) -> str | None:
    """The batch system's id a service job was started with (--batch-id), if any."""
    prefix = f"{BATCH_ID_FIELD}=".encode()
    for entry in fields:
        if bytes(entry).startswith(prefix):
            return bytes(entry)[len(prefix) :].decode("ascii", "replace")
    return None


def job_id_of_unit(unit: str, props: Mapping[str, Any]) -> str | None:
    """The job id slotmgr marked a unit with (its properties from GetAll), or
    None: not a slotmgr job, whatever it is named."""
    if unit.endswith(".service"):
        return job_id_of_fields(props.get("LogExtraFields") or [])
    if unit.endswith(".scope"):
        return job_id_of_description(str(props.get("Description") or ""))
    return None
