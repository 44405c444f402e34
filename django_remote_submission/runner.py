"""The lifecycle of one job, and the only place that changes a job's state.

    from django_remote_submission import runner
    runner.submit(job.pk, password="...", timeout=timedelta(minutes=5))   # {"out.txt": 12}

stage in -> launch (detached, or submitted to the server's batch scheduler) -> stream output
into Log rows -> wait (exit, timeout or cancel) -> stage out results -> final state. A job
on a scheduler is ``queued`` until the scheduler runs it; its state is followed through the
launcher (one status query per server and interval, shared by every job of the worker). A
dropped connection is re-established with backoff and the stream continues from the stored
byte offsets. Every submission has an id (the Celery task id when there is one): a second
delivery of the same submission attaches to the run or returns, it never launches (or
submits) the program twice.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import credentials, events, scheduling, signals
from . import resources as resources_
from .conf import drs_settings
from .connections import connect, credentials_for
from .launchers import launcher_for, reserved_check
from .launchers.base import DONE as SCHEDULER_DONE
from .launchers.base import RUNNING as SCHEDULER_RUNNING
from .launchers.base import Ending, Run, RunDirChanged, Spec, Stopped
from .launchers.direct import DirectLauncher
from .limits import human_size
from .logs import LogPolicy, LogWriter, write_notice
from .models import (
    ACTIVE_STATES,
    FINAL_STATES,
    FRESH_RUN,
    TRANSITIONS,
    Event,
    Job,
    Log,
    Result,
    Status,
)
from .policy import LOGIN_WITH
from .remote import ConnectionLost, Credentials, RemoteError
from .results import collect, delete_files_on_commit, parse_records

logger = logging.getLogger(__name__)

RECONNECT_FOR = 300.0  # seconds a run keeps trying to reach a host it lost


class IllegalTransition(Exception):
    """A move the state machine (``TRANSITIONS``) does not allow: a bug of the caller."""


class StateChanged(Exception):
    """Another process changed the job's state first: this run leaves the job alone."""


class AlreadyRunning(Exception):
    """A new submission of a job whose run is still alive."""


def move(job: Job, to: str, *, login: str = "", actor=None, **fields) -> bool:
    """Change the job's state and record it in the audit trail (``login``: the login the run
    used; ``actor``: who asked, None for a worker); then send the signals of the change (see
    ``signals``).

    A conditional update: returns False, writing nothing, when another process changed the
    job's state first (a lost race); raises ``IllegalTransition`` for a move the state
    machine does not allow.
    """
    old = job.status
    if to not in TRANSITIONS[job.status]:
        raise IllegalTransition(f"A job cannot go from {job.status} to {to}.")
    now = timezone.now()
    if to in FINAL_STATES:
        fields.setdefault("finished_at", now)
        fields.setdefault("credential", "")
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=job.status).update(
            status=to, modified=now, **fields
        )
        if not updated:
            return False
        Event.objects.create(
            time=now,
            action=Event.Action.state,
            job_id=job.pk,
            job_title=job.title[:250],
            server_id=job.server_id,
            actor=actor,
            from_state=job.status,
            to_state=to,
            login=login[:150],
            reason=fields.get("error", "") or fields.get("wait_reason", ""),
        )
    job.status, job.modified = to, now
    for name, value in fields.items():
        setattr(job, name, value)
    transaction.on_commit(lambda: events.status_changed(job))
    signals.state_changed(job, old, to, fields, actor)
    return True


def note_scheduler_state(job: Job, shown: str) -> None:
    """Record what the scheduler says of the job (not a change of the job's state: no audit
    event) and tell the pages."""
    shown = shown[:255]
    if not shown or shown == job.scheduler_state:
        return
    Job.objects.filter(pk=job.pk).update(scheduler_state=shown)
    job.scheduler_state = shown
    transaction.on_commit(lambda: events.status_changed(job))


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


def lease(job_pk: int, submission: str, options: dict, credential: str) -> tuple[Job, bool]:
    """Take the job for this submission. Returns (job, run_it).

    The row is locked (``select_for_update``) and every state change is a conditional
    update, so of two deliveries of one submission only one runs it; the other returns.
    ``AlreadyRunning`` for a new submission of a job whose run is alive.
    """
    job = Job.objects.get(pk=job_pk)
    if job.status == Status.initial:
        # Never ran: nothing to clear, and ``move`` is a conditional UPDATE, so this one
        # statement takes the job (a second delivery loses the race). A transaction of
        # several statements would queue every concurrent job behind SQLite's write lock.
        won = move(
            job,
            Status.submitted,
            submission=submission,
            run_dir=_run_dir(job, submission),
            options=options,
            credential=credential,
            heartbeat=timezone.now(),
        )
        return (job, True) if won else (Job.objects.get(pk=job_pk), False)
    return _lease_again(job_pk, submission, options, credential)


def _run_dir(job: Job, submission: str) -> str:
    """The run directory of one submission: a redelivery of it finds the same directory."""
    tag = hashlib.sha256(submission.encode()).hexdigest()[:12]
    return f"{drs_settings.RUN_ROOT}/{job.uuid}.{tag}"


def _lease_again(job_pk: int, submission: str, options: dict, credential: str):
    """A redelivery (resumed when its worker died), or a new run of a finished job."""
    with transaction.atomic():
        # Write to the row first: it locks it everywhere, and on SQLite takes the write lock
        # before any read, so two leases cannot deadlock upgrading a read lock.
        Job.objects.filter(pk=job_pk).update(heartbeat=F("heartbeat"))
        job = Job.objects.select_for_update().get(pk=job_pk)
        if job.submission == submission and job.status != Status.initial:
            if job.status in FINAL_STATES or not job.is_stale:
                return job, False  # done already, or the other delivery is on it
            Job.objects.filter(pk=job.pk).update(heartbeat=timezone.now())
            return job, True  # its worker died: resume the run
        if job.status in ACTIVE_STATES and not job.is_stale:
            raise AlreadyRunning(
                f"Job {job.pk} is already {job.status}; cancel it before resubmitting."
            )
        job.logs.all().delete()
        # The files go once the new run is committed: should the move below fail, the old
        # rows come back and their files are still there.
        files = [name for name in job.results.values_list("local_file", flat=True) if name]
        job.results.all().delete()
        delete_files_on_commit(files, Result._meta.get_field("local_file").storage)
        won = move(
            job,
            Status.submitted,
            submission=submission,
            run_dir=_run_dir(job, submission),
            options=options,
            credential=credential,
            heartbeat=timezone.now(),
            **FRESH_RUN,
        )
        return job, won


class JobRun:
    """One run of one job, from wherever it stands to a final state."""

    def __init__(self, job: Job, creds: Credentials) -> None:
        self.job = job
        self.creds = creds
        self.options = job.options
        self.remote = _is_remote(job)
        self.timed_out = False
        self.cancelled = False
        self.stopped: Stopped | None = None  # what the last stop of its processes found
        self.problem = ""  # what the job did to its run directory, if anything
        self.noted_full = False
        self.started = None  # the launch's own output stream, when it just launched
        self.next_beat = time.monotonic() + float(drs_settings.HEARTBEAT_INTERVAL)
        self.next_tick = 0.0  # when to ask the scheduler again (batch jobs)
        self.over_at: float | None = None  # when the scheduler said the run ended

    def run(self) -> dict[str, int]:
        job = self.job
        try:
            transport = connect(job.server, self.creds, self.remote)
            board = f"{job.server_id}:{self.creds.username}"
            self.launcher = launcher_for(job.server.scheduler, transport, board)
            try:
                writer = LogWriter(job, self.options.get("log_policy", LogPolicy.LOG_LIVE))
                if job.status == Status.submitted:
                    # After a lost connection the launch is tried again: it attaches to the
                    # run if the first attempt started (or submitted) it.
                    self._retrying(lambda: self._launch(follow=_follows(writer)))
                ending = self._follow(writer)
                self._finish(ending, self._retrying(self._stage_out))
            finally:
                self.launcher.forget(self._run())
                self.launcher.transport.close()
        except StateChanged as exc:
            logger.info("%s Leaving it to whoever changed it.", exc)
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
        )
        launched, self.started = self.launcher.launch(spec, follow=follow)
        now = timezone.now()
        timeout = self.options.get("timeout")
        options = {**self.options, "directory": launched.directory}
        if launched.attached:
            options["directory"] = self.options.get("directory", launched.directory)
        login = "" if not self.remote else self.creds.username
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
            self._pump(proc, writer, follow=True)
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
                self.launcher.transport = connect(self.job.server, self.creds, self.remote)
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
            over_at = None
            if self.stopped is not None and not self.stopped.left:
                over_at = self.stopped_at
            if self.over_at is not None:
                over_at = min(over_at or self.over_at, self.over_at)
            give_up = None if over_at is None else over_at + STREAM_GRACE - time.monotonic()
            if give_up is not None and give_up <= 0:
                return STOPPED
            waits = [writer.due_in(), self.next_beat - time.monotonic(), give_up]
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
        self.next_beat = time.monotonic() + float(drs_settings.HEARTBEAT_INTERVAL)
        Job.objects.filter(pk=self.job.pk).update(heartbeat=timezone.now())
        if (
            not self.cancelled
            and Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        ):
            self.cancelled = True
            self._stop()

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
        job.refresh_from_db(fields=["cancel_requested"])
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
        job.refresh_from_db()
        if job.status in FINAL_STATES:
            return
        move(job, Status.failure, error=error)


PROBLEMS_SHOWN = 20
STREAM_GRACE = 5.0  # seconds a stream may take to end once the job's processes are gone
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


def _options(
    timeout,
    log_policy,
    store_results,
    remote,
    username,
    key_filename,
    login_with=None,
    resources=None,
    scheduler="direct",
) -> dict:
    if login_with is not None and login_with not in LOGIN_WITH:
        raise ValueError(f"Unknown login_with {login_with!r}: use one of {', '.join(LOGIN_WITH)}.")
    asked = resources_.clean(resources, reserved_check(scheduler)) if resources else None
    return {
        "resources": asked,
        "timeout": _seconds(timeout),
        "log_policy": LogPolicy.validate(log_policy),
        "store_results": list(store_results) if store_results is not None else None,
        "remote": bool(remote),
        "username": username,
        "key_filename": key_filename,
        "login_with": login_with,
    }


def submit(
    job_pk: int,
    password: str | None = None,
    public_key_filename: str | None = None,
    username: str | None = None,
    timeout=None,
    log_policy: int = LogPolicy.LOG_LIVE,
    store_results: list[str] | None = None,
    remote: bool = True,
    submission: str | None = None,
    login_with: str | None = None,
    resources: dict | None = None,
) -> dict[str, int]:
    """Run the job to its end; return ``{remote_filename: result pk}``.

    ``login_with`` (see ``policy.LOGIN_WITH``) is how the policy decided the run logs in;
    None logs in as 2.1.0 did (see ``connections.credentials_for``). ``resources``: what a
    batch scheduler is asked for (see ``resources.clean``), over the server's defaults.
    """
    submission = submission or uuid.uuid4().hex
    try:
        scheduler = "direct"
        if resources:
            scheduler = Job.objects.filter(pk=job_pk).values_list("server__scheduler", flat=True)
            scheduler = scheduler.first() or "direct"
        options = _options(
            timeout,
            log_policy,
            store_results,
            remote,
            username,
            public_key_filename,
            login_with,
            resources,
            scheduler,
        )
    except (TypeError, ValueError) as exc:
        job = Job.objects.get(pk=job_pk)
        if job.status not in ACTIVE_STATES:
            lease(job_pk, submission, {}, "")
            JobRun(job, None)._fail(f"Invalid submission: {exc}")
        return {}
    credential = credentials.encrypt(password) if password else ""
    try:
        job, run_it = lease(job_pk, submission, options, credential)
    except AlreadyRunning as exc:
        logger.warning("%s", exc)
        return {}
    if not run_it:
        return {r.remote_filename: r.pk for r in job.results.all()}
    if not scheduling.admit(job):
        return {}  # it waits for a slot on its server; scheduling starts it
    return _run(job, password)


def _run(job: Job, password: str | None) -> dict[str, int]:
    try:
        creds = credentials_for(job, password)
    except RemoteError as exc:
        JobRun(job, None)._fail(str(exc))
        return {}
    return JobRun(job, creds).run()


def copy(
    job_pk: int,
    password: str | None = None,
    public_key_filename: str | None = None,
    username: str | None = None,
    remote: bool = True,
    submission: str | None = None,
    login_with: str | None = None,
) -> dict:
    """Only write the program into the job's remote directory (status success)."""
    options = _options(
        None, LogPolicy.LOG_LIVE, None, remote, username, public_key_filename, login_with
    )
    job, run_it = lease(job_pk, submission or uuid.uuid4().hex, options, "")
    if not run_it:
        return {}
    run = JobRun(job, None)
    try:
        run.creds = credentials_for(job, password)
        with connect(job.server, run.creds, run.remote) as t:
            where = DirectLauncher(t).stage(
                _directory(job.remote_directory), job.remote_filename, job.program.encode()
            )
        host = job.server.hostname if run.remote else "localhost"
        Log.objects.create(
            job=job,
            stream=Log.Stream.stdout,
            content=f"{job.remote_filename} successfully copied to {host}:{where}\n",
        )
        move(job, Status.success, exit_code=None, error="")
    except RemoteError as exc:
        run._fail(str(exc))
    return {}


def stale_jobs() -> list[int]:
    """Active jobs whose runner stopped sending heartbeats."""
    return list(Job.objects.stale().values_list("pk", flat=True))


def resume(job_pk: int) -> dict[str, int]:
    """Pick up a run whose worker died, with the options and secret stored on the job."""
    job = Job.objects.get(pk=job_pk)
    if not job.is_active or not job.is_stale:
        return {}
    opts = job.options or {}
    password = None
    if job.credential:
        try:
            password = credentials.decrypt(job.credential)
        except credentials.CredentialError as exc:
            JobRun(job, None)._fail(f"Cannot resume: {exc}")
            return {}
    job, run_it = lease(job_pk, job.submission, opts, job.credential)
    if not run_it:
        return {}
    return _run(job, password)


def cancel(job_pk: int, password: str | None = None) -> None:
    """Ask the run to stop, stop its processes on the host, and return once they are gone."""
    job = Job.objects.select_related("server", "owner").get(pk=job_pk)
    if job.status in FINAL_STATES:
        return
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    if job.status == Status.initial:
        move(job, Status.cancelled, error="Cancelled before it was submitted.")
        return
    if job.status == Status.waiting and move(
        job, Status.cancelled, error="Cancelled while it waited for a slot."
    ):
        return
    if not job.run_dir:
        return
    if password is None and job.credential:
        password = credentials.decrypt(job.credential)
    creds = credentials_for(job, password)
    with connect(job.server, creds, _is_remote(job)) as t:
        launcher = launcher_for(job.server.scheduler, t, f"{job.server_id}:{creds.username}")
        run = Run(job.run_dir, job.pid, job.scheduler_id)
        launcher.kill(run, float(drs_settings.KILL_GRACE))
