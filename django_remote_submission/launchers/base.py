"""The launcher contract: how the runner starts a job on a host, follows it and stops it.

    launcher = launcher_for("slurm", transport, board="hpc:22:ada")  # or "direct", "sge"
    launched, proc = launcher.launch(Spec("drs-jobs/x", "job.py", b"print(1)", run_dir,
                                          ["/usr/bin/python3", "-u"], {"walltime": 300}))
    run = Run(run_dir, launched.pid, launched.scheduler_id)
    launcher.state(run)          # SchedulerState("PENDING", "Priority", QUEUED), or None
    proc = launcher.stream(run_dir, 0, 0)        # the output from byte offsets, until the end
    launcher.ending(run, proc)   # Ending(exit_code=0) once over; None: stream again later
    launcher.kill(run, grace=5)  # Stopped(...), once the host or the scheduler confirms

``direct`` starts the program at once as a detached process; ``slurm`` and ``sge`` hand it to
a batch scheduler, where it waits (``queued``) before it runs. Every launcher keeps the job's
output in ``out`` and ``err`` of a run directory on the host and streams it the same way, from
byte offsets, so a resumed run continues exactly where the database stops.

A launch is idempotent: a second launch of the same run directory attaches to the first
(``Launched.attached``) instead of starting the program, or submitting it, twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..remote.base import Process, RemoteError, Transport

QUEUED, RUNNING, DONE = "queued", "running", "done"


class LaunchError(RemoteError):
    """The job could not be started or submitted; the message says why."""


class RunDirChanged(RemoteError):
    """The job removed or changed what the launcher keeps in its run directory."""


class SchedulerError(RemoteError):
    """The batch scheduler refused a command or answered something unreadable."""


@dataclass(frozen=True)
class Spec:
    """What to run: the program, written as ``filename`` in ``directory``, run by ``argv``
    (the interpreter), with its output in ``run_dir``; ``resources`` for a scheduler;
    ``arguments`` after the program and ``environment`` variables for it."""

    directory: str
    filename: str
    program: bytes
    run_dir: str
    argv: list[str]
    resources: dict = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        """The job's argv: interpreter, program, arguments. Variables are set by ``env``,
        each one word ``NAME=value`` (never shell text)."""
        target = f"./{self.filename}" if self.filename.startswith("-") else self.filename
        words = [*self.argv, target, *self.arguments]
        if not self.environment:
            return words
        if "=" in self.argv[0]:
            # env would take the interpreter for one more variable.
            raise LaunchError(
                f"The interpreter path {self.argv[0]!r} contains '=': it cannot be run with "
                "environment variables."
            )
        return ["env", "--", *(f"{k}={v}" for k, v in self.environment.items()), *words]


@dataclass
class Launched:
    pid: int | None
    run_dir: str
    directory: str
    attached: bool = False
    scheduler_id: str = ""  # the batch scheduler's job id (empty for direct)


@dataclass(frozen=True)
class Run:
    """A launched run, as stored on the job: its run directory, the pid of its wrapper
    (direct) and its scheduler job id (batch)."""

    run_dir: str
    pid: int | None = None
    scheduler_id: str = ""


@dataclass(frozen=True)
class SchedulerState:
    """What the scheduler says of a job: its own state and reason, and our phase of it."""

    state: str  # the scheduler's word: PENDING, RUNNING, qw, r, ...
    reason: str = ""
    phase: str = QUEUED  # QUEUED, RUNNING or DONE

    @property
    def shown(self) -> str:
        """For pages: "PENDING (Priority)"."""
        reason = self.reason if self.reason and self.reason not in ("None", "(null)") else ""
        return f"{self.state} ({reason})" if reason else self.state


@dataclass
class Ending:
    """How a run ended: its exit code (None: unknown), and, when the scheduler ended it, why
    in plain words: ``error`` (a failure: walltime, memory, node) or ``cancelled``
    (cancelled outside the app). ``state``: the scheduler's final state, for pages."""

    exit_code: int | None
    error: str = ""
    cancelled: str = ""
    state: str = ""


@dataclass
class Stopped:
    """What ``kill`` found: processes it stopped, processes left, and whether the job's
    session was identified from a trusted pid (not only from its run id)."""

    stopped: int
    left: int
    verified: bool


class Launcher(ABC):
    """How jobs are started, followed and stopped on one kind of host."""

    #: jobs wait in a scheduler's queue before they run (``queued`` between ``submitted``
    #: and ``running``), and the scheduler enforces the walltime.
    queues = False

    def __init__(self, transport: Transport, board: str = "") -> None:
        self.transport = transport
        self.board = board  # which jobs share status polls: one server and login

    @abstractmethod
    def stage(self, directory: str, filename: str, program: bytes) -> str:
        """Write the program into the directory (created if missing); its absolute path."""

    @abstractmethod
    def launch(self, spec: Spec, follow: bool = True) -> tuple[Launched, Process | None]:
        """Write the program and start (or submit) it; with ``follow``, may return a process
        streaming its output from offset 0 (else None: use ``stream``)."""

    def state(self, run: Run) -> SchedulerState | None:
        """The scheduler's view of the run (None: it does not know it). A direct run is
        running from its launch on."""
        return SchedulerState("RUNNING", phase=RUNNING)

    def next_poll_in(self) -> float:
        """Seconds until ``state`` may have something new to say."""
        return 0.0

    @abstractmethod
    def stream(
        self, run_dir: str, stdout_offset: int, stderr_offset: int, follow: bool = True
    ) -> Process:
        """The output from byte offsets (with ``follow``) until the run is over, or (without)
        only the wait for that."""

    @abstractmethod
    def ending(self, run: Run, proc: Process) -> Ending | None:
        """Once ``proc`` (from ``launch`` or ``stream``) is done: how the run ended, or None
        when it is not over (stream again after a while)."""

    def retry_in(self, proc: Process) -> float:
        """After ``ending`` said "not over": seconds to wait before streaming again."""
        return 0.0

    @abstractmethod
    def kill(self, run: Run, grace: float) -> Stopped:
        """Stop the run; return once that is confirmed, or say what is left."""

    @abstractmethod
    def listing(self, directory: str, run_dir: str, tick=None) -> tuple[bytes, bool, list[str]]:
        """(records of the entries new or modified since launch, truncated?, unreadable parts)."""

    def forget(self, run: Run) -> None:  # noqa: B027 (a hook: nothing to forget by default)
        """The run is over: stop watching it."""
