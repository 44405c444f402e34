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

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from .. import credentials, db, inputs, scheduling
from .. import resources as resources_
from ..conf import drs_settings
from ..connections import connect, credentials_for
from ..launchers import launcher_for, reserved_check
from ..launchers.base import Run
from ..launchers.direct import DirectLauncher
from ..logs import LogPolicy
from ..models import ACTIVE_STATES, FINAL_STATES, Job, Log, Status
from ..policy import LOGIN_WITH
from ..remote import RemoteError
from ..shutdown import draining
from .run import JobRun, _directory, _is_remote, _seconds
from .state import (
    AlreadyRunning,
    IllegalTransition,
    StateChanged,
    lease,
    move,
    note_scheduler_state,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AlreadyRunning",
    "IllegalTransition",
    "JobRun",
    "StateChanged",
    "cancel",
    "claim_stale_jobs",
    "copy",
    "lease",
    "move",
    "note_scheduler_state",
    "resume",
    "stale_jobs",
    "submit",
]


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
    arguments: list[str] | None = None,
    environment: dict[str, str] | None = None,
) -> dict[str, int]:
    """Run the job to its end; return ``{remote_filename: result pk}``.

    ``login_with`` (see ``policy.LOGIN_WITH``) is how the policy decided the run logs in;
    None logs in as 2.1.0 did (see ``connections.credentials_for``). ``resources``: what a
    batch scheduler is asked for (see ``resources.clean``), over the server's defaults.
    ``arguments``, ``environment``: given, they replace the job's own (see ``inputs``).
    """
    submission = submission or uuid.uuid4().hex
    try:
        given = inputs.given(arguments, environment)
        scheduler = "direct"
        if resources:
            schedulers = Job.objects.filter(pk=job_pk).values_list("server__scheduler", flat=True)
            scheduler = schedulers.first() or "direct"
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
    inputs.apply(job, given)
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
    """Only write the program (and the job's input files) into the job's remote directory
    (status success)."""
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
            inputs.stage(t, _directory(job.remote_directory), job.run_dir, job.inputs.all())
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


def claim_stale_jobs(limit: int = 500) -> list[int]:
    """Stale jobs for the caller to resume, each given to one caller only.

    Every worker sweeps: the rows another sweep has locked are skipped (PostgreSQL), and each
    job is claimed with a conditional update that clears its heartbeat, so that the other
    sweeps leave it alone for ``STALE_BEATS`` intervals (after that, its resume task is
    taken for lost: ``Job.objects.stale``). ``resume`` takes a job with a cleared heartbeat at
    once.
    """
    claimed = []
    with transaction.atomic():
        stale = Job.objects.stale()
        first = stale.filter(pk__in=list(stale.order_by("pk").values_list("pk", flat=True)[:limit]))
        for job in db.lock_rows(first, skip_locked=True):
            same = Job.objects.filter(pk=job.pk, heartbeat=job.heartbeat, modified=job.modified)
            if same.update(heartbeat=None, modified=timezone.now()):
                claimed.append(job.pk)
    return claimed


def resume(job_pk: int) -> dict[str, int]:
    """Pick up a run whose worker died, with the options and secret stored on the job."""
    job = Job.objects.get(pk=job_pk)
    if not job.is_active or not job.is_stale or draining.is_set():
        return {}  # running, finished, or this worker shuts down (it queues the job again)
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
