"""One run of one job, from wherever it stands to a final state (``JobRun``).

stage in -> launch -> stream the output -> wait (exit, timeout, cancel) -> stage out ->
final state; a lost connection is re-established and the stream resumes from the stored
byte offsets.
"""

from __future__ import annotations

import logging
import shlex
import time
from datetime import timedelta

from django.utils import timezone

from .. import db, inputs, metrics
from .. import resources as resources_
from ..conf import drs_settings
from ..connections import connect
from ..launchers import launcher_for
from ..launchers.base import DONE as SCHEDULER_DONE
from ..launchers.base import RUNNING as SCHEDULER_RUNNING
from ..launchers.base import Ending, Run, RunDirChanged, Spec, Stopped
from ..limits import human_size
from ..logs import LeaseLost, LogPolicy, LogWriter, write_notice
from ..models import (
    FINAL_STATES,
    Job,
    Result,
    Status,
)
from ..remote import ConnectionLost, Credentials, Process, RemoteError
from ..results import collect, parse_records
from ..shutdown import draining
from .state import HandedOver, StateChanged, move, note_scheduler_state

logger = logging.getLogger(__name__)

RECONNECT_FOR = 300.0  # seconds a run keeps trying to reach a host it lost


def _seconds(timeout) -> float | None:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if seconds <= 0:
        raise ValueError("timeout must be positive")
    return seconds


def _directory(path: str) -> str:
    """``~/x`` means x under the login's home, where relative paths already point."""
    if path in ("~", "~/"):
        return "."
    return path[2:] if path.startswith("~/") else path


def _argv(job: Job) -> list[str]:
    return shlex.split(job.interpreter.path) + [str(a) for a in job.interpreter.arguments or []]


def _is_remote(job: Job) -> bool:
    return bool((job.options or {}).get("remote", True)) and not job.server.local


class JobRun:
    """One run of one job, from wherever it stands to a final state."""

    def __init__(self, job: Job, creds: Credentials | None) -> None:
        self.job = job
        self.creds = creds
        self.options = job.options
        self.remote = _is_remote(job)
        self.timed_out = False
        self.cancelled = False
        self.stopped: Stopped | None = None  # what the last stop of its processes found
        self.problem = ""  # what the job did to its run directory, if anything
        self.noted_full = False
        self.started: Process | None = None  # the launch's own output stream, when it just launched
        self.next_beat = time.monotonic() + float(drs_settings.HEARTBEAT_INTERVAL)
        self.next_tick = 0.0  # when to ask the scheduler again (batch jobs)
        self.over_at: float | None = None  # when the scheduler said the run ended

    @property
    def credentials(self) -> Credentials:
        """The login of a run that reaches the host (not of one that only fails a job)."""
        assert self.creds is not None, "this run was made to fail its job, not to connect"
        return self.creds

    def run(self) -> dict[str, int]:
        job = self.job
        try:
            transport = connect(job.server, self.credentials, self.remote)
            board = f"{job.server_id}:{self.credentials.username}"
            self.launcher = launcher_for(job.server.scheduler, transport, board)
            try:
                writer = LogWriter(job, self.options.get("log_policy", LogPolicy.LOG_LIVE))
                if job.status == Status.submitted:
                    # After a lost connection the launch is tried again: it attaches to the
                    # run if the first attempt started (or submitted) it.
                    self._retrying(lambda: self._launch(follow=_follows(writer)))
                ending = self._follow(writer)
                # Still this run's job: only one run stages out. A heartbeat written less than
                # an interval ago (the lease, the last beat) proves it: no one takes a job
                # before its heartbeat is STALE_BEATS intervals old.
                self._beat_if_due()
                self._finish(ending, self._retrying(self._stage_out))
            finally:
                self.launcher.forget(self._run())
                self.launcher.transport.close()
        except StateChanged as exc:
            logger.info("%s Leaving it to whoever changed it.", exc)
        except (LeaseLost, HandedOver) as exc:
            logger.warning("%s", exc)  # another worker follows the job now
        except RemoteError as exc:
            logger.warning("Job %s failed: %s", job.pk, exc)
            self._fail(str(exc))
        except Exception as exc:  # the worker must keep running whatever happens
            logger.exception("Job %s failed", job.pk)
            self._fail(f"Internal error: {type(exc).__name__}: {exc}")
        return {r.remote_filename: r.pk for r in job.results.all()}

    def _run(self) -> Run:
        return Run(self.job.run_dir, self.job.pid, self.job.scheduler_id)

    def _resources(self) -> dict:
        """What the scheduler is asked for: the server's and the interpreter's defaults, then
        the submission's own resources; its timeout is the walltime when none is set."""
        if not self.launcher.queues:
            return {}
        job = self.job
        return resources_.effective(
            job.server.resources,
            job.interpreter.resources,
            self.options.get("resources"),
            timeout=self.options.get("timeout"),
        )

    def _launch(self, follow: bool) -> None:
        job = self.job
        sent = timezone.now()  # a timeout counts from here, as 2.1.0's timeout(1) command did
        spec = Spec(
            _directory(job.remote_directory),
            job.remote_filename,
            job.program.encode(),
            job.run_dir,
            _argv(job),
            self._resources(),
            arguments=list(job.arguments or []),
            environment=dict(job.environment or {}),
        )
        transport, beat = self.launcher.transport, self._beat_if_due
        rows = list(job.inputs.all())
        if inputs.stage(transport, spec.directory, job.run_dir, rows, tick=beat):
            metrics.transferred(job, "input").inc(sum(row.size for row in rows))
        launched, self.started = self.launcher.launch(spec, follow=follow)
        now = timezone.now()
        timeout = self.options.get("timeout")
        options = {**self.options, "directory": launched.directory}
        if launched.attached:
            options["directory"] = self.options.get("directory", launched.directory)
        login = "" if not self.remote else self.credentials.username
        if self.launcher.queues:
            # The scheduler enforces the walltime (the timeout, unless one is set).
            moved = move(
                job,
                Status.queued,
                login=login,
                scheduler_id=launched.scheduler_id,
                run_dir=launched.run_dir,
                options=options,
                heartbeat=now,
            )
            if not moved:
                raise StateChanged(f"Job {job.pk} changed state while it was being submitted.")
            self.options = options
            self._beat()  # a cancel asked for while it was being submitted
            return
        moved = move(
            job,
            Status.running,
            login=login,
            pid=launched.pid,
            run_dir=launched.run_dir,
            started_at=now,
            deadline=sent + timedelta(seconds=timeout) if timeout else None,
            options=options,
            heartbeat=now,
        )
        if not moved:
            raise StateChanged(f"Job {job.pk} changed state while it was being launched.")
        self.options = options

    def _tick(self) -> None:
        """Ask the scheduler (its shared answer) how the job stands, and show it."""
        state = self.launcher.state(self._run())
        self.next_tick = time.monotonic() + max(0.05, self.launcher.next_poll_in())
        if state is None or state.phase == SCHEDULER_DONE:
            self.over_at = self.over_at or time.monotonic()
        if state is not None:
            note_scheduler_state(self.job, state.shown)
            if state.phase == SCHEDULER_RUNNING:
                self._running()

    def _running(self) -> None:
        """A queued job has started (the scheduler says so, or its output arrives)."""
        if self.job.status == Status.queued:
            now = timezone.now()
            if not move(self.job, Status.running, started_at=now, heartbeat=now):
                raise StateChanged(f"Job {self.job.pk} changed state while it was queued.")

    def _follow(self, writer: LogWriter) -> Ending:
        """Stream the output until the job is over; survive lost connections.

        Once the log is full (``LOG_MAX_BYTES``), or with ``LOG_NONE``/``LOG_TOTAL``, only
        the end is awaited; ``LOG_TOTAL`` then reads the output once, after the end. A
        batch job's stream ends before the job starts, or when its script ends before the
        scheduler says so: it is then streamed again from the offsets reached.
        """
        job = self.job
        follow = _follows(writer)
        offsets = (job.stdout_offset, job.stderr_offset)
        lost_at = None
        while True:
            # A fresh launch streams on its own channel already; otherwise (a resumed run,
            # a lost connection) follow the run directory from the stored offsets.
            proc, self.started = self.started, None
            try:
                proc = proc or self.launcher.stream(job.run_dir, *offsets, follow=follow)
                if self._pump(proc, writer, follow) == FULL:  # from now on only wait
                    self._note_full(writer)
                    follow = False
                    continue
                ending = self._ending(proc)
                if ending is None:  # not over yet
                    offsets = writer.rewind()
                    self._idle(self.launcher.retry_in(proc))
                    continue
                if writer.policy == LogPolicy.LOG_TOTAL and not writer.full:
                    self._read_after_end(writer)
                writer.close()
                if writer.dropped:
                    self._note_full(writer)
                return ending
            except ConnectionLost as exc:
                offsets = writer.rewind()
                lost_at = lost_at or time.monotonic()
                self._reconnect(exc, lost_at)
            finally:
                if proc is not None:
                    proc.close()

    def _ending(self, proc) -> Ending | None:
        try:
            return self.launcher.ending(self._run(), proc)
        except RunDirChanged as exc:
            self.problem = str(exc)
            return Ending(None)

    def _idle(self, seconds: float) -> None:
        """Wait, keeping the heartbeat (and noticing a cancel)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            time.sleep(max(0.0, min(left, self.next_beat - time.monotonic())))
            self._beat_if_due()

    def _read_after_end(self, writer: LogWriter) -> None:
        """``LOG_TOTAL``: the whole output, read once the job is over."""
        offsets = (writer.streams["stdout"].offset, writer.streams["stderr"].offset)
        proc = self.launcher.stream(self.job.run_dir, *offsets, follow=True)
        try:
            if self._pump(proc, writer, follow=True) == FULL:  # stopped reading at the limit
                self._note_full(writer)
        finally:
            proc.close()

    def _note_full(self, writer: LogWriter) -> None:
        if self.noted_full:
            return
        self.noted_full = True
        run = self.job.run_dir
        write_notice(
            self.job,
            f"The log reached {human_size(writer.max_bytes)} (DRS['LOG_MAX_BYTES']): further "
            f"output is not stored here. The job's whole output stays on the host in {run}/out "
            f"and {run}/err.",
        )

    def _retrying(self, step):
        """Run ``step()``; after a lost connection, reconnect and run it again."""
        lost_at = None
        while True:
            try:
                return step()
            except ConnectionLost as exc:
                lost_at = lost_at or time.monotonic()
                self._reconnect(exc, lost_at)

    def _reconnect(self, exc: Exception, lost_at: float) -> None:
        write_notice(self.job, f"Connection lost ({exc}); reconnecting.")
        self.launcher.transport.discard()
        delay = 0.2
        while True:
            try:
                self.launcher.transport = connect(self.job.server, self.credentials, self.remote)
                return
            except (ConnectionLost, RemoteError) as again:
                if time.monotonic() - lost_at > RECONNECT_FOR:
                    raise RemoteError(
                        f"Lost the connection to the host and could not reconnect "
                        f"within {RECONNECT_FOR:g} s: {again}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _beat_if_due(self) -> None:
        if time.monotonic() >= self.next_beat:
            self._beat()

    def _pump(self, proc, writer: LogWriter, follow: bool) -> str:
        """Hand the output to the writer until the job is over (DONE), or, following, the
        log is full (FULL); meanwhile store batches, keep the heartbeat and enforce the
        deadline. Once its processes are stopped (timeout, cancel), a stream that does not
        end within STREAM_GRACE is given up (STOPPED): the job changed its run directory."""
        job = self.job
        deadline = job.deadline.timestamp() if job.deadline else None
        ticks = self.launcher.queues
        while not proc.done:
            if follow and writer.full:
                return FULL
            if draining.is_set():
                self.hand_over(writer)
            over_at = None
            if self.stopped is not None and not self.stopped.left:
                over_at = self.stopped_at
            if self.over_at is not None:
                over_at = min(over_at or self.over_at, self.over_at)
            give_up = None if over_at is None else over_at + STREAM_GRACE - time.monotonic()
            if give_up is not None and give_up <= 0:
                return STOPPED
            waits = [writer.due_in(), self.next_beat - time.monotonic(), give_up, DRAIN_POLL]
            if ticks:
                waits.append(self.next_tick - time.monotonic())
            if deadline and not self.timed_out:
                waits.append(deadline - time.time())
            chunks = proc.read(max(0.0, min(w for w in waits if w is not None)))
            for stream, data in chunks:
                writer.feed(stream, data)
            if chunks and job.status == Status.queued:
                self._running()  # its output is arriving: it runs
            writer.flush_if_due()
            if ticks and time.monotonic() >= self.next_tick:
                self._tick()
            if deadline and not self.timed_out and time.time() >= deadline:
                self.timed_out = True
                self._stop()
            self._beat_if_due()
        return DONE

    def _stop(self) -> Stopped:
        """Stop the job's processes (TERM, then KILL) and remember what the host said."""
        self.stopped = self.launcher.kill(self._run(), float(drs_settings.KILL_GRACE))
        self.stopped_at = time.monotonic()
        return self.stopped

    def _beat(self) -> None:
        """Write the heartbeat, if the job is still this run's (else LeaseLost); and stop the
        job's processes once a cancel was requested."""
        self.next_beat = time.monotonic() + float(drs_settings.HEARTBEAT_INTERVAL)
        job, now = self.job, timezone.now()
        mine = Job.objects.filter(pk=job.pk, heartbeat=job.heartbeat)
        beat = db.retrying(
            lambda: mine.update(heartbeat=now),
            f"the heartbeat of job {job.pk}",
            done=Job.objects.filter(pk=job.pk, heartbeat=now).exists,
        )
        if beat == 0:
            raise LeaseLost(job.pk)
        job.heartbeat = now
        if not self.cancelled and db.retrying(
            Job.objects.filter(pk=job.pk, cancel_requested=True).exists, "a cancel check"
        ):
            self.cancelled = True
            self._stop()

    def hand_over(self, writer: LogWriter) -> None:
        """The worker shuts down: store the whole lines read, release the job (its heartbeat
        cleared, as the recovery sweep does when it claims a job) and stop (HandedOver). The
        job runs on; the worker queues its resumption (``tasks``)."""
        writer.rewind()
        job = self.job
        released = Job.objects.filter(pk=job.pk, heartbeat=job.heartbeat)
        db.retrying(
            lambda: released.update(heartbeat=None, modified=timezone.now()),
            f"the release of job {job.pk}",
        )
        raise HandedOver(f"Job {job.pk} handed over: this worker shuts down.")

    def _stage_out(self) -> list[Result]:
        job = self.job
        patterns = self.options.get("store_results")
        if patterns is not None and not patterns:
            return []
        directory = self.options.get("directory") or _directory(job.remote_directory)
        records, truncated, problems = self.launcher.listing(
            directory, job.run_dir, tick=self._beat_if_due
        )
        for problem in problems[:PROBLEMS_SHOWN]:
            write_notice(job, f"Skipped results under {problem}.")
        if truncated:
            write_notice(
                job,
                "The list of new or modified files is longer than the host may send (32 MiB); "
                "files past that point were not considered as results.",
            )
        exclude = {job.remote_filename}
        run_root = job.run_dir.rsplit("/", 1)[0]
        if run_root.startswith(directory.rstrip("/") + "/"):
            exclude.add(run_root[len(directory.rstrip("/")) + 1 :].split("/")[0])
        return collect(
            self.launcher.transport,
            job,
            directory,
            parse_records(records),
            patterns,
            exclude,
            progress=self._beat_if_due,
        )

    def _finish(self, ending: Ending, results: list[Result]) -> None:
        job = self.job
        db.retrying(lambda: job.refresh_from_db(fields=["cancel_requested"]), "a cancel check")
        timeout = self.options.get("timeout")
        exit_code = ending.exit_code
        batch = self.launcher.queues
        fields = {"scheduler_state": ending.state[:255]} if batch and ending.state else {}
        if job.cancel_requested and batch:
            # The scheduler's own account of the end confirms the cancel.
            status = Status.cancelled
            error = (
                f"Cancelled on request; the scheduler confirmed it ended ({ending.state})."
                if ending.state
                else "Cancelled on request; the scheduler removed it from its queue."
            )
        elif job.cancel_requested:
            # The canceller stops the processes too; make sure none is left before saying so.
            status = Status.cancelled
            error = f"Cancelled on request; {_stopped_text(self._stop())}."
        elif self.timed_out:
            status = Status.failure
            error = f"Timed out after {timeout:g} s; {_stopped_text(self.stopped)}."
        elif self.problem:
            status, error = Status.failure, f"{self.problem}{self._leftovers()}"
        elif ending.cancelled:
            status, error = Status.cancelled, ending.cancelled
        elif ending.error:
            status, error = Status.failure, ending.error
        elif exit_code == 0:
            status, error = Status.success, ""
        elif exit_code is None:
            status = Status.failure
            error = f"The job ended without an exit status (killed?){self._leftovers()}"
        else:
            status, error = Status.failure, f"The program exited with status {exit_code}."
        move(job, status, exit_code=exit_code, error=error, **fields)

    def _leftovers(self) -> str:
        """After an abnormal end: stop what is left of the job; say so if anything was."""
        if self.launcher.queues:
            return "."  # the scheduler ended the job: nothing of it is left
        stopped = self._stop()
        if stopped.left:
            return f"; {stopped.left} of its processes survived SIGKILL."
        if stopped.stopped:
            return f"; {stopped.stopped} of its processes were still running and were stopped."
        return "."

    def _fail(self, error: str) -> None:
        job = self.job
        db.retrying(job.refresh_from_db, f"the state of job {job.pk}")
        if job.status in FINAL_STATES:
            return
        move(job, Status.failure, error=error)


PROBLEMS_SHOWN = 20
STREAM_GRACE = 5.0  # seconds a stream may take to end once the job's processes are gone
DRAIN_POLL = 1.0  # seconds between two looks at the worker's shutdown flag
DONE, FULL, STOPPED = "done", "full", "stopped"


def _follows(writer: LogWriter) -> bool:
    """Whether the output is streamed while the job runs."""
    return writer.policy == LogPolicy.LOG_LIVE and not writer.full


def _stopped_text(stopped: Stopped | None) -> str:
    if stopped is None:
        return "its processes were stopped"
    if stopped.left:
        return f"{stopped.left} of its processes survived SIGKILL and may still run"
    if not stopped.verified:
        return (
            "the processes marked with its run id were stopped, but its pid file was changed: "
            "other processes of its session could not be checked"
        )
    return "its processes were stopped"
