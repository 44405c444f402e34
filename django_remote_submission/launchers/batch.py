"""What Slurm and Grid Engine jobs have in common: submitted exactly once, polled in one call
per server, streamed like direct jobs.

    class SlurmLauncher(BatchLauncher):
        SUBMIT = submit_script(submit=..., lookup=...)     # fixed sh functions
        def parse_states(self, text): ...                  # {id: SchedulerState}
        def ending_of(self, run, answer): ...              # Ending from scontrol / sacct

**Exactly once.** The launch is one fixed script on the login node. It publishes the run
directory atomically (``mv -T``) with a lock (``submit.lock``) held, submits, and writes the
scheduler's id into ``jobid`` before it lets the lock go. A second launch of the same run
(a redelivered task, a second worker, a resumed run) finds the directory, waits for the lock,
and reads ``jobid``; when the first launch died before writing it, the scheduler is asked
for a job of the run's name (``drs-<run id>``, unique per submission) before anything is
submitted again.

**The batch script** (``BATCH``, the same for every job: values are its arguments) takes an
exclusive ``flock`` on ``lock``, marks ``started``, runs the program with its output appended
to ``out`` and ``err``, and writes ``exit``. The stream is ``direct.STREAM``: ``tail -F``
from byte offsets until the lock is free; before ``started`` exists it ends at once and
the runner waits for the next poll.

**Status at scale.** Every run of one server and login in a worker process shares one
``Board``: one ``squeue``/``qstat`` call per ``DRS["SCHEDULER_POLL_INTERVAL"]`` answers for
all of them. The scheduler's own account of how a job ended (``scontrol``/``sacct``,
``qacct``) is read once per job, at its end.
"""

from __future__ import annotations

import math
import threading
import time

from ..conf import drs_settings
from ..remote.base import Process
from .base import (
    DONE,
    QUEUED,
    Ending,
    Launched,
    LaunchError,
    Run,
    RunDirChanged,
    SchedulerError,
    SchedulerState,
    Spec,
    Stopped,
)
from .direct import EXIT_CODE, FIND_RECORDS, STREAM, DirectLauncher, _text, sh

# The scheduler job's script. Args: run argv... It holds the lock for its whole life (the
# stream waits on it), appends the output (a requeued job adds to what its first try wrote,
# so stored byte offsets stay valid) and exits with the program's status.
BATCH = r"""#!/bin/sh
run=$1; shift
# "drs:%b" first: every word after it is printf %b text (see encode_word), decoded here.
if [ "${1-}" = "drs:%b" ]; then
  shift; n=$#
  while [ "$n" -gt 0 ]; do x=$(printf '%bx' "$1"); set -- "$@" "${x%x}"; shift; n=$((n - 1)); done
fi
exec 9> "$run/lock" || exit 122
flock -x 9 || exit 122
: > "$run/started"
DRS_RUN_ID=${run##*/}; export DRS_RUN_ID
("$@" < /dev/null >> "$run/out" 2>> "$run/err" 9>&-)
c=$?
echo "$c" > "$run/exit"
exit "$c"
"""

# STREAM, once the job has started: until then, it waits (checking every half second, at
# most $5 times, while the command that started it is there) and exits 121 if it has not.
# Args: STREAM's, then the number of checks.
BATCH_STREAM = (
    r"""
i=0 p=$PPID
until [ -e "$1/started" ] || [ -L "$1/started" ]; do
  [ "$i" -ge "$5" ] || ! kill -0 "$p" 2>/dev/null && exit 121
  sleep 0.5; i=$((i + 1))
done
"""
    + STREAM
)
ENCODED = "drs:%b"


def encode_word(word: str) -> str:
    """``word`` as printf %b text with no control character nor backslash (octal escapes):
    for a scheduler that keeps job arguments line by line (Grid Engine cuts at a newline)."""
    return "".join(
        f"\\0{ord(c):03o}" if c == "\\" or ord(c) < 32 or ord(c) == 127 else c for c in word
    )


NOT_STARTED = 121
START_CHECKS = 120  # a stream waits at most a minute for the job to start

# Stage in and submit, once. Args: dir file run name batch nargv argv(nargv)... options...
# stdin: the program. Prints id, absolute run dir, absolute directory and "1" when it found
# the run already submitted (each NUL-terminated). ``submit`` and ``lookup`` are the
# scheduler's shell functions (see ``submit_script``).
_SUBMIT_HEAD = r"""
set -u
d=$1 f=$2 run=$3 name=$4 batch=$5 n=$6; shift 6
case $run in /*) ;; *) run=$PWD/$run ;; esac
"""
_SUBMIT_BODY = (
    r"""
command -v flock >/dev/null 2>&1 || exit 15
mkdir -p -- "$d" || exit 10
cd -- "$d" || exit 10
attached=
if [ -e "$run" ] || [ -L "$run" ]; then
  attached=1
else
  cat > "$f" || exit 11
  tmp=$run.tmp.$$
  mkdir -p -- "$tmp" || exit 13
  : > "$tmp/out"; : > "$tmp/err"
  printf '%s' "$batch" > "$tmp/batch" || exit 13
  exec 8> "$tmp/submit.lock"
  flock -x 8 || exit 13
  """
    + FIND_RECORDS
    + r""" > "$tmp/before" 2>/dev/null
  if ! mv -T -- "$tmp" "$run" 2>/dev/null; then rm -rf -- "$tmp"; attached=1; fi
fi
if [ -n "$attached" ]; then
  [ -d "$run" ] && [ ! -L "$run" ] || exit 13
  exec 8<> "$run/submit.lock" || exit 13
  flock -w 300 -x 8 || exit 16
fi
id=
if [ -f "$run/jobid" ] && [ ! -L "$run/jobid" ]; then id=$(head -c 64 "$run/jobid"); fi
case $id in *[!0-9]*) id= ;; esac
[ -n "$id" ] || [ -z "$attached" ] || id=$(lookup "$name" | head -c 64)
case $id in *[!0-9]*) id= ;; esac
if [ -z "$id" ]; then
  # "$@": argv... options...; the scheduler wants options..., the script, run dir, argv...
  k=$((n + 2))
  set -- "$run/batch" "$run" "$@"
  while [ "$k" -gt 0 ]; do set -- "$@" "$1"; shift; k=$((k - 1)); done
  out=$(submit "$@" 2> "$run/submit.err") || { head -c 4000 "$run/submit.err" >&2; exit 18; }
  id=$(printf '%s' "$out" | head -n 1 | sed 's/[;.].*//' | tr -d ' \r')
  case $id in ''|*[!0-9]*) printf '%s' "$out" | head -c 2000 >&2; exit 19 ;; esac
  attached=
fi
printf '%s\n' "$id" > "$run/jobid.tmp" && mv -f -- "$run/jobid.tmp" "$run/jobid"
printf '%s\0%s\0%s\0%s\0' "$id" "$run" "$PWD" "$attached"
"""
)


def submit_script(functions: str) -> str:
    """The submit script of a scheduler whose ``submit`` and ``lookup`` shell functions are
    ``functions`` (fixed text: they read ``$name`` and ``$PWD``, and take "$@")."""
    return _SUBMIT_HEAD + functions + _SUBMIT_BODY


# The scheduler's id of a run, as the launch recorded it on the host ("" if none). Args: run.
JOBID = r"""
f=$1/jobid
[ -f "$f" ] && [ ! -L "$f" ] || exit 0
id=$(head -c 64 -- "$f")
case $id in *[!0-9]*) ;; *) printf '%s' "$id" ;; esac
"""

# Whether the batch script started, then EXIT_CODE's word. Args: run.
RUN_STATE = (
    'if [ -e "$1/started" ] || [ -L "$1/started" ]; then echo started; else echo -; fi\n'
    + EXIT_CODE
)

SUBMIT_ERRORS = {
    10: "Cannot create or enter the remote directory {dir!r}",
    11: "Cannot write {file!r} in the remote directory {dir!r}",
    13: "Cannot create the run directory {run!r} on the host",
    15: "The host lacks flock (util-linux), needed to submit jobs exactly once",
    16: "Another submission of this run has held its lock for 5 minutes",
    18: "The scheduler refused the job",
    19: "The scheduler's answer to the submission is not a job id",
    127: "The scheduler's commands are not on the host's PATH (for non-interactive logins)",
}
HEADER_LIMIT = 64 * 1024
POLL_LIMIT = 32 << 20  # bytes of one status listing read at most
NOT_YET = SchedulerState("", phase=QUEUED)  # listed from the next poll on


class Board:
    """The scheduler's states of the jobs of one server and login, shared by the runs of a
    worker process: at most one status call per interval, whatever the number of jobs.

    A status call that fails (a busy scheduler answering with an error) changes nothing:
    the last answers stand until a call succeeds, and only a scheduler that keeps failing
    for ``FAILING_FOR`` seconds fails the runs that ask.
    """

    FAILING_FOR = 300.0

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.watched: set[str] = set()
        self.answers: dict[str, SchedulerState] = {}
        self.polled: set[str] = set()
        self.polled_at = -math.inf
        self.polling = False
        self.calls = 0
        self.failing_since: float | None = None

    def state(self, sid: str, poll, interval: float) -> SchedulerState | None:
        """The latest answer for ``sid`` (None: the scheduler did not list it), polling all
        watched jobs when the last poll is older than ``interval``; NOT_YET until a poll
        has included it."""
        with self.cond:
            self.watched.add(sid)
            while True:
                due = time.monotonic() >= self.polled_at + interval
                if not due:
                    return self.answers.get(sid) if sid in self.polled else NOT_YET
                if not self.polling:
                    break
                self.cond.wait(interval + 60)
            self.polling = True
            ids = set(self.watched)
        answers = None
        try:
            answers = poll()
            return answers.get(sid)
        except SchedulerError:
            now = time.monotonic()
            with self.cond:
                self.failing_since = self.failing_since or now
                self.polled_at = now  # the next try is one interval away
                if now - self.failing_since > self.FAILING_FOR:
                    raise
                return self.answers.get(sid) if sid in self.polled else NOT_YET
        finally:
            with self.cond:
                self.polling = False
                if answers is not None:
                    self.calls += 1
                    self.failing_since = None
                    self.answers = {k: v for k, v in answers.items() if k in ids}
                    self.polled, self.polled_at = ids, time.monotonic()
                self.cond.notify_all()

    def next_in(self, interval: float) -> float:
        """Seconds until the next poll is due."""
        with self.cond:
            return max(0.0, self.polled_at + interval - time.monotonic())

    def forget(self, sid: str) -> None:
        with self.cond:
            self.watched.discard(sid)


_boards: dict[str, Board] = {}
_boards_lock = threading.Lock()


def board(key: str) -> Board:
    """The board of one server and login in this process."""
    with _boards_lock:
        return _boards.setdefault(key, Board())


class BatchLauncher(DirectLauncher):
    """A job submitted to a batch scheduler from a login node (see the module docstring).

    Subclasses give the scheduler's commands and how to read its answers.
    """

    queues = True
    name = "batch"  # the scheduler's name in messages
    SUBMIT = ""  # submit_script(...)
    POLL = ""  # fixed script printing the states of the login's jobs
    CANCEL = ""  # fixed script cancelling job "$1"
    DETAILS = ""  # fixed script printing how job "$1" ended
    ACCOUNTING_WAIT = 0.0  # seconds the scheduler may take to record a finished job
    # The scheduler mangles control characters in job arguments: send them encoded.
    ENCODE_ARGUMENTS = False

    # --- what a scheduler gives --------------------------------------------------------------

    def directives(self, resources: dict) -> list[str]:
        """The scheduler's options for the resources (words of its command line)."""
        raise NotImplementedError

    @staticmethod
    def reserved(words: list[str]) -> str:
        """Why an extra directive may not be given (the app sets that option), or ""."""
        return ""

    def parse_states(self, text: str) -> dict[str, SchedulerState]:
        raise NotImplementedError

    def ending_of(self, run: Run, text: str) -> Ending | None:
        """The ending from DETAILS' output; None when the scheduler does not know the job."""
        raise NotImplementedError

    # --- the contract ------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return float(drs_settings.SCHEDULER_POLL_INTERVAL)

    def launch(
        self, spec: Spec, follow: bool = True, timeout: float = 120
    ) -> tuple[Launched, Process | None]:
        """Stage the program and submit it once (see the module docstring); no process: the
        output is streamed once the job runs."""
        argv = spec.command()
        if self.ENCODE_ARGUMENTS:
            argv = [ENCODED, *map(encode_word, argv)]
        name = "drs-" + spec.run_dir.rstrip("/").rsplit("/", 1)[-1]
        args = [spec.directory, spec.filename, spec.run_dir, name, BATCH, len(argv), *argv]
        res = self.transport.run(
            sh(self.SUBMIT, *args, *self.directives(spec.resources)),
            stdin=spec.program,
            timeout=timeout + 300,
            limit=HEADER_LIMIT,
        )
        fields = res.stdout.split(b"\0")
        if res.exit_code != 0 or len(fields) < 5:
            template = SUBMIT_ERRORS.get(
                res.exit_code, "Could not submit the job (exit status {code})"
            )
            message = template.format(dir=spec.directory, file=spec.filename, run=spec.run_dir)
            message = message.replace("{code}", str(res.exit_code))
            detail = " ".join(res.error_text[:2000].split())
            raise LaunchError(f"{message}: {detail}" if detail else f"{message}.")
        sid, run, cwd, attached = (_text(f) for f in fields[:4])
        return Launched(None, run, cwd, attached=attached == "1", scheduler_id=sid), None

    def state(self, run: Run) -> SchedulerState | None:
        return board(self.board).state(run.scheduler_id, self.poll, self.interval)

    def next_poll_in(self) -> float:
        return board(self.board).next_in(self.interval)

    def poll(self) -> dict[str, SchedulerState]:
        """One status call for every job of this login."""
        res = self.transport.run(sh(self.POLL), timeout=120, limit=POLL_LIMIT)
        if res.exit_code != 0:
            raise SchedulerError(
                f"{self.name} did not answer the status query: {res.error_text[:500]}"
            )
        return self.parse_states(res.text)

    def forget(self, run: Run) -> None:
        board(self.board).forget(run.scheduler_id)

    def stream(
        self, run_dir: str, stdout_offset: int, stderr_offset: int, follow: bool = True
    ) -> Process:
        mode = "follow" if follow else "wait"
        args = (run_dir, stdout_offset, stderr_offset, mode, START_CHECKS)
        return self.transport.start(sh(BATCH_STREAM, *args))

    def retry_in(self, proc: Process) -> float:
        """A stream that waited for the start is started again at once; one that ended with
        the job's script waits for the scheduler's next word on the job."""
        return 0.0 if proc.exit_code == NOT_STARTED else max(0.05, self.next_poll_in())

    def ending(self, run: Run, proc: Process) -> Ending | None:
        """Over once the scheduler says so; then how, from its own records."""
        if proc.exit_code == 120:
            raise RunDirChanged(f"The run directory {run.run_dir} disappeared from the host.")
        now = self.state(run)
        if now is not None and now.phase != DONE:
            return None
        return self.final(run)

    def final(self, run: Run) -> Ending:
        """How the job ended, as the scheduler recorded it (waiting up to ACCOUNTING_WAIT s
        for the record of a job that ran); else the exit status its batch script left."""
        give_up = None
        while True:
            res = self.transport.run(sh(self.DETAILS, run.scheduler_id), timeout=120, limit=1 << 20)
            ending = self.ending_of(run, res.text)
            if ending is not None:
                return ending
            started, code = self._run_dir_state(run)
            if not started:
                return Ending(
                    None,
                    cancelled=f"Removed from the {self.name} queue on the cluster before it "
                    "started, outside this app.",
                )
            give_up = give_up or time.monotonic() + self.ACCOUNTING_WAIT
            if time.monotonic() >= give_up:
                if code is not None:
                    return Ending(code, state="unknown to the scheduler")
                return Ending(
                    None,
                    error=f"{self.name} has no record of how job {run.scheduler_id} ended, and "
                    "it left no exit status (killed?).",
                )
            time.sleep(1.0)

    def _run_dir_state(self, run: Run) -> tuple[bool, int | None]:
        """(whether the batch script started, the exit status it left or None)."""
        res = self.transport.run(sh(RUN_STATE, run.run_dir), timeout=60, limit=4096)
        words = res.text.split()
        if len(words) != 2:
            raise RunDirChanged(f"Cannot read the run directory {run.run_dir} on the host.")
        code = int(words[1]) if words[1].isdigit() and int(words[1]) <= 255 else None
        return words[0] == "started", code

    def scheduler_id(self, run: Run) -> str:
        """The run's scheduler id: the one stored, else the one the launch left on the host."""
        if run.scheduler_id:
            return run.scheduler_id
        res = self.transport.run(sh(JOBID, run.run_dir), timeout=60, limit=4096)
        return res.text.strip()

    def kill(self, run: Run, grace: float) -> Stopped:
        """Cancel the job and return once the scheduler reports it ended (or forgot it)."""
        sid = self.scheduler_id(run)
        if not sid:
            return Stopped(0, 0, True)  # not submitted (yet): the runner cancels after submit
        if not sid.isdigit():
            raise SchedulerError(f"Not a {self.name} job id: {sid[:40]!r}")
        res = self.transport.run(sh(self.CANCEL, sid), timeout=120, limit=1 << 16)
        deadline = time.monotonic() + grace + 60
        while True:
            try:
                state = self.poll().get(sid)
            except SchedulerError:  # busy: ask again
                state = SchedulerState("?", phase=QUEUED)
            if state is None or state.phase == DONE:
                return Stopped(1, 0, True)  # (a refused cancel of an ended job is fine)
            if res.exit_code != 0:
                raise SchedulerError(
                    f"{self.name} refused to cancel job {sid}: {res.error_text[:500]}"
                )
            if time.monotonic() > deadline:
                return Stopped(1, 1, True)
            time.sleep(0.5)


def parse_duration(text: str) -> int | None:
    """Seconds of a scheduler duration: ``[D-]HH:MM:SS``, ``MM:SS``, or seconds."""
    text = text.strip()
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return days * 86400 + seconds
