"""Grid Engine (Son of Grid Engine, Univa/Altair GE): ``qsub`` from a login node, ``qstat``
once per server for every job, ``qacct`` for how a job ended, ``qdel``.

    SGELauncher(transport, board="4:ada").directives({"partition": "all.q", "walltime": 300})
    # ["-q", "all.q", "-l", "h_rt=300"]

Resources become ``qsub`` options: partition the queue ``-q``, walltime ``-l h_rt`` (s),
CPUs ``-pe smp N`` (add ``-pe <name> N`` as an extra directive where the parallel
environment has another name), memory ``-l h_vmem`` (MiB per slot), GPUs ``-l gpu=N``,
account ``-A``; extra directives as written (``-l arch=lx-amd64``). A finished job leaves
``qstat`` at once; ``qacct`` knows it once the qmaster has flushed its accounting file
(``reporting_params flush_time``, 15 s by default).
"""

from __future__ import annotations

import re

from ..resources import format_memory, format_walltime, parse_directive
from .base import QUEUED, RUNNING, Ending, Run, SchedulerState
from .batch import BatchLauncher, submit_script

FUNCTIONS = r"""
submit() {
  qsub -terse -N "$name" -wd "$PWD" -o /dev/null -e /dev/null -S /bin/sh -b n "$@"
}
lookup() {
  { qstat -j "$1" 2>/dev/null | sed -n 's/^job_number: *//p'
    qacct -j "$1" 2>/dev/null | sed -n 's/^jobnumber *//p'; } | tr -d ' ' | head -n 1
}
"""

POLL = r"""qstat -u "$(id -un)" """
CANCEL = r"""qdel "$1" """  # qdel takes no "--" (a job id is digits)
DETAILS = r"""qacct -j "$1" 2>/dev/null | head -c 65536"""

# Options the app sets itself, or that would break how it follows a job.
RESERVED = {
    "-N": "the app names the job (it finds it again by its name)",
    "-o": "the output goes to the run directory, where it is streamed from",
    "-e": "the output goes to the run directory, where it is streamed from",
    "-j": "the output goes to the run directory, where it is streamed from",
    "-i": "a job reads no input",
    "-wd": "the job runs in its remote directory",
    "-cwd": "the job runs in its remote directory",
    "-S": "the job's script is a POSIX sh script",
    "-b": "the job's script is a POSIX sh script",
    "-terse": "the app reads qsub's answer",
    "-sync": "the app follows the job itself",
    "-t": "one job, one run: arrays are not supported",
    "-@": "options come from the job, not from a file",
    "-C": "the job's script has no directives",
    "-verify": "the job must be submitted",
}
STATE_WORDS = {
    "qw": "pending",
    "hqw": "on hold",
    "hRwq": "on hold",
    "r": "running",
    "t": "starting",
    "Rr": "running, restarted",
    "Rt": "starting, restarted",
    "s": "suspended",
    "S": "suspended by the queue",
    "T": "suspended at a threshold",
    "dr": "being deleted",
    "dt": "being deleted",
    "Eqw": "error: the job cannot start; see qstat -j",
}


class SGELauncher(BatchLauncher):
    name = "Grid Engine"
    SUBMIT = submit_script(FUNCTIONS)
    POLL = POLL
    CANCEL = CANCEL
    DETAILS = DETAILS
    ACCOUNTING_WAIT = 60.0
    ENCODE_ARGUMENTS = True  # qsub keeps a job's arguments line by line

    def directives(self, resources: dict) -> list[str]:
        out = []
        if "partition" in resources:
            out += ["-q", resources["partition"]]
        if "walltime" in resources:
            out += ["-l", f"h_rt={int(resources['walltime'])}"]
        if resources.get("cpus", 1) > 1:
            out += ["-pe", "smp", str(resources["cpus"])]
        if "memory" in resources:
            out += ["-l", f"h_vmem={resources['memory']}M"]
        if resources.get("gpus"):
            out += ["-l", f"gpu={resources['gpus']}"]
        if "account" in resources:
            out += ["-A", resources["account"]]
        for line in resources.get("extra", []):
            out += parse_directive(line)
        return out

    @staticmethod
    def reserved(words: list[str]) -> str:
        for word in words:
            if word in RESERVED:
                return f"{word} may not be given: {RESERVED[word]}."
        return ""

    def parse_states(self, text: str) -> dict[str, SchedulerState]:
        """qstat's table: columns found from its header (a job name may hold anything)."""
        lines = text.splitlines()
        header = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("job-ID")), None)
        if header is None:
            return {}
        start = lines[header].find("state")
        states = {}
        for line in lines[header + 1 :]:
            words = line.split()
            if not words or not words[0].isdigit() or start < 0:
                continue
            rest = line[start:].split()
            if rest:
                states[words[0]] = _state(rest[0])
        return states

    def ending_of(self, run: Run, text: str) -> Ending | None:
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key and key not in fields:
                fields[key] = value.strip()
        if "exit_status" not in fields:
            return None
        failed = fields.get("failed", "0")
        code = fields["exit_status"].split()[0] if fields["exit_status"].split() else ""
        number = failed.split()[0] if failed.split() else "0"
        shown = f"failed {failed}, exit_status {fields['exit_status']}"
        if number == "0":
            return Ending(int(code) if code.isdigit() else None, state=shown)
        if number == "37":  # the qmaster enforced h_rt, h_cpu or h_vmem
            return Ending(None, error=self._limit(fields), state=shown)
        if number == "100":  # the job script was killed: qdel, or a signal from outside
            return Ending(
                None,
                cancelled=f"Deleted on the cluster, outside this app (Grid Engine: {shown}).",
                state=shown,
            )
        return Ending(None, error=f"Grid Engine could not run the job ({shown}).", state=shown)

    @staticmethod
    def _limit(fields: dict) -> str:
        category = fields.get("category", "")
        h_rt = re.search(r"h_rt=(\d+)", category)
        wall = re.match(r"([0-9.]+)s?", fields.get("ru_wallclock", ""))
        if h_rt and (not wall or float(wall.group(1)) >= int(h_rt.group(1))):
            limit = format_walltime(int(h_rt.group(1)))
            return f"The scheduler stopped the job: walltime exceeded (limit {limit})."
        h_vmem = re.search(r"h_vmem=(\d+)M", category)
        if h_vmem:
            limit = format_memory(int(h_vmem.group(1)))
            return f"The scheduler stopped the job: out of memory (limit {limit})."
        return "The scheduler stopped the job: a limit (h_rt, h_cpu or h_vmem) was exceeded."


def _state(word: str) -> SchedulerState:
    if "E" in word:
        phase = QUEUED  # stays in the queue until someone clears or deletes it
    elif any(c in word for c in "rtsST"):
        phase = RUNNING
    else:
        phase = QUEUED
    return SchedulerState(word, STATE_WORDS.get(word, ""), phase)
