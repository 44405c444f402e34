"""Slurm: ``sbatch`` from a login node, ``squeue`` once per server for every job,
``scontrol show job`` (or ``sacct``) for how a job ended, ``scancel``.

    SlurmLauncher(transport, board="3:ada").directives({"partition": "short", "walltime": 300})
    # ["--partition=short", "--time=0-00:05:00"]

Resources become ``sbatch`` options: partition ``--partition``, walltime ``--time``, CPUs
``--cpus-per-task``, memory ``--mem`` (MiB), GPUs ``--gres=gpu:N``, account ``--account``;
extra directives are added as they are written (``--constraint=avx2``). Works without
accounting (``sacct`` needs slurmdbd): ``scontrol`` knows a finished job for ``MinJobAge``
seconds (300 by default), ``sacct`` afterwards where there is one.
"""

from __future__ import annotations

import re

from ..resources import format_walltime, parse_directive
from .base import DONE, QUEUED, RUNNING, Ending, Run, SchedulerState
from .batch import BatchLauncher, parse_duration, submit_script

FUNCTIONS = r"""
submit() {
  sbatch --parsable --job-name="$name" --chdir="$PWD" --output=/dev/null --error=/dev/null "$@"
}
lookup() {
  { squeue -h -t all -u "$(id -un)" -n "$1" -o %i 2>/dev/null
    sacct -n -X -P --name="$1" -S now-30days -o JobID 2>/dev/null; } | head -n 1
}
"""

POLL = r"""squeue -h -t all -u "$(id -un)" -o '%i|%T|%r'"""

CANCEL = r"""scancel -- "$1" """

# How job "$1" ended: scontrol's one-line record while slurmctld remembers the job, else
# sacct's (where accounting is on), else "unknown".
DETAILS = r"""
if out=$(scontrol show job -o -- "$1" 2>/dev/null) && [ -n "$out" ]; then
  printf 'scontrol %s\n' "$out" | head -c 65536; exit 0
fi
out=$(sacct -n -X -P -j "$1" -o State,ExitCode,Timelimit,ReqMem 2>/dev/null)
if [ -n "$out" ]; then
  printf 'sacct %s\n' "$out" | head -n 1 | head -c 4096; exit 0
fi
echo unknown
"""

QUEUED_STATES = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
RUNNING_STATES = {
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "RESIZING",
}
# Long options the app sets itself, or that would break how it follows a job.
RESERVED_LONG = {
    "job-name": "the app names the job (it finds it again by its name)",
    "output": "the output goes to the run directory, where it is streamed from",
    "error": "the output goes to the run directory, where it is streamed from",
    "input": "a job reads no input",
    "chdir": "the job runs in its remote directory",
    "workdir": "the job runs in its remote directory",
    "parsable": "the app reads sbatch's answer",
    "wrap": "the job runs its program",
    "array": "one job, one run: arrays are not supported",
    "wait": "the app follows the job itself",
    "test-only": "the job must be submitted",
    "clusters": "the job must run on the cluster of this server",
    "cluster": "the job must run on the cluster of this server",
    "uid": "the job runs as the login",
    "gid": "the job runs as the login",
}
RESERVED_SHORT = {
    "J": "job-name",
    "o": "output",
    "e": "error",
    "i": "input",
    "D": "chdir",
    "a": "array",
    "W": "wait",
    "M": "clusters",
}


def _first(key: str, text: str) -> str:
    """The value of the first ``key=`` in scontrol's record: the fields we read come before
    those a job's own words can reach (its command, its directory)."""
    match = re.search(rf"(?:^|\s){re.escape(key)}=(\S*)", text)
    return match.group(1) if match else ""


class SlurmLauncher(BatchLauncher):
    name = "Slurm"
    SUBMIT = submit_script(FUNCTIONS)
    POLL = POLL
    CANCEL = CANCEL
    DETAILS = DETAILS
    ACCOUNTING_WAIT = 30.0  # a busy slurmctld may not answer scontrol at once

    def directives(self, resources: dict) -> list[str]:
        out = []
        if "partition" in resources:
            out.append(f"--partition={resources['partition']}")
        if "walltime" in resources:
            days, rest = divmod(int(resources["walltime"]), 86400)
            out.append(f"--time={days}-{format_walltime(rest)}")
        if "cpus" in resources:
            out.append(f"--cpus-per-task={resources['cpus']}")
        if "memory" in resources:
            out.append(f"--mem={resources['memory']}M")
        if resources.get("gpus"):
            out.append(f"--gres=gpu:{resources['gpus']}")
        if "account" in resources:
            out.append(f"--account={resources['account']}")
        for line in resources.get("extra", []):
            out.extend(parse_directive(line))
        return out

    @staticmethod
    def reserved(words: list[str]) -> str:
        for word in words:
            if word.startswith("--"):
                name = word[2:].split("=", 1)[0]
                if name in RESERVED_LONG:
                    return f"--{name} may not be given: {RESERVED_LONG[name]}."
            elif word.startswith("-") and len(word) > 1 and word[1] in RESERVED_SHORT:
                long = RESERVED_SHORT[word[1]]
                return f"-{word[1]} may not be given: {RESERVED_LONG[long]}."
        return ""

    def parse_states(self, text: str) -> dict[str, SchedulerState]:
        states = {}
        for line in text.splitlines():
            parts = line.strip().split("|", 2)
            if len(parts) == 3 and parts[0].isdigit():
                states[parts[0]] = _state(parts[1], parts[2])
        return states

    def ending_of(self, run: Run, text: str) -> Ending | None:
        if text.startswith("scontrol "):
            state = _first("JobState", text)
            code = _first("ExitCode", text)
            limit = _first("TimeLimit", text)
            memory = re.search(r"(?:^|[\s,=])mem=([0-9.]+[KMGT]?)", text)
            reason = _first("Reason", text)
            if _state(state, reason).phase != DONE:
                return None
        elif text.startswith("sacct "):
            fields = text[len("sacct ") :].strip().split("|")
            fields += [""] * (4 - len(fields))
            state, code, limit, mem = fields[:4]
            memory = re.match(r"([0-9.]+[KMGT]?)", mem)
            reason = ""
        else:
            return None
        return _ending(state, code, limit, memory.group(1) if memory else "", reason)


def _state(state: str, reason: str) -> SchedulerState:
    word = state.split()[0] if state.split() else state
    if word in QUEUED_STATES:
        phase = QUEUED
    elif word in RUNNING_STATES:
        phase = RUNNING
    else:
        phase = DONE
    return SchedulerState(word, reason.strip(), phase)


def _ending(state: str, code: str, limit: str, memory: str, reason: str) -> Ending:
    """``state``: COMPLETED, FAILED, TIMEOUT, ... (sacct: "CANCELLED by 0")."""
    word = state.split()[0] if state.split() else "UNKNOWN"
    exit_code, signal = None, 0
    if re.fullmatch(r"\d+:\d+", code):
        exit_code, signal = (int(p) for p in code.split(":"))
    shown = f"{state} {code}".strip()
    if word == "TIMEOUT":
        seconds = parse_duration(limit)
        shown_limit = format_walltime(seconds) if seconds is not None else limit
        return Ending(
            None,
            error=f"The scheduler stopped the job: walltime exceeded (limit {shown_limit}).",
            state=shown,
        )
    if word == "OUT_OF_MEMORY":
        within = f" (limit {memory})" if memory else ""
        return Ending(
            None,
            error=f"The scheduler stopped the job: out of memory{within}.",
            state=shown,
        )
    if word == "NODE_FAIL":
        return Ending(None, error="The node running the job failed (Slurm NODE_FAIL).", state=shown)
    if word == "CANCELLED":
        return Ending(
            None,
            cancelled=f"Cancelled on the cluster, outside this app (Slurm: {shown}).",
            state=shown,
        )
    if word in ("COMPLETED", "FAILED"):
        if signal and not exit_code:
            return Ending(None, error=f"The job was killed by signal {signal}.", state=shown)
        return Ending(exit_code, state=shown)
    why = f", {reason}" if reason and reason != "None" else ""
    return Ending(None, error=f"Slurm ended the job: {word}{why}.", state=shown)
