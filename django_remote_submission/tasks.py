"""Celery tasks (callable directly too); the logic lives in ``runner`` and ``keys``.

    submit_job_to_server.delay(job.pk, password=request.POST["password"])
    submit_job_to_server(job_pk=job.pk, password="...", remote=False)   # in this process

A ``password`` never travels in clear: ``apply_async`` replaces it with an expiring Fernet
token (see ``credentials.py``) and hides it from ``argsrepr``/``kwargsrepr``; the worker
decrypts it just before the task body runs.

In a worker, a run that leaves its job in ``failure`` ends the task with ``JobFailed`` (state
FAILURE, its message the job's error): Celery's monitoring sees failed jobs. It is an
expected error (``Task.throws``): logged without traceback, never retried. Called directly or
eagerly, the tasks return their value as in 2.1.0 (``{}`` for a failed job).
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid

from celery import Task, shared_task
from celery.signals import worker_ready, worker_shutdown
from django.utils import timezone

from . import keys, runner, scheduling
from .conf import drs_settings
from .credentials import decrypt, encrypt, is_token
from .logs import LogPolicy
from .models import STALE_BEATS, Job, Status
from .results import is_matching  # noqa: F401  (2.1.0 offered it here)

__all__ = [
    "JobFailed",
    "LogPolicy",
    "submit_job_to_server",
    "copy_job_to_server",
    "copy_key_to_server",
    "delete_key_from_server",
    "cancel_job",
    "resume_job",
    "dispatch_waiting",
    "recover_jobs",
]

SECRET_ARGUMENTS = ("password",)


class JobFailed(Exception):
    """A task's job ended in ``failure``; the message names the job and says why."""


def _failed_run(task: Task, job_pk, since, submission: str | None = None) -> str | None:
    """In a worker: the error of the job if this task's run left it failed, else None."""
    if task.request.called_directly or task.request.is_eager:
        return None
    runs = Job.objects.filter(pk=job_pk, status=Status.failure, finished_at__gte=since)
    if submission is not None:
        runs = runs.filter(submission=submission)
    return runs.values_list("error", flat=True).first()


def _end(task: Task, job_pk, since, value, submission: str | None = None):
    error = _failed_run(task, job_pk, since, submission)
    if error is not None:
        raise JobFailed(f"Job {job_pk} failed: {error}")
    return value


class SecretArgumentsTask(Task):
    """Encrypts ``password`` arguments before they reach the broker."""

    def _bind(self, args, kwargs) -> dict:
        bound = inspect.signature(self.run).bind_partial(*(args or ()), **(kwargs or {}))
        return dict(bound.arguments)

    def apply_async(self, args=None, kwargs=None, **options):
        arguments = self._bind(args, kwargs)
        for name in SECRET_ARGUMENTS:
            if arguments.get(name) and not is_token(arguments[name]):
                arguments[name] = encrypt(arguments[name])
        shown = {
            k: ("********" if k in SECRET_ARGUMENTS and v else v) for k, v in arguments.items()
        }
        options.setdefault("argsrepr", "()")
        options.setdefault("kwargsrepr", repr(shown))
        return super().apply_async((), arguments, **options)

    def __call__(self, *args, **kwargs):
        arguments = self._bind(args, kwargs)
        for name in SECRET_ARGUMENTS:
            if is_token(arguments.get(name)):
                arguments[name] = decrypt(arguments[name], ttl=drs_settings.CREDENTIAL_TTL)
        return super().__call__(**arguments)

    def submission_id(self) -> str:
        return getattr(self.request, "id", None) or uuid.uuid4().hex


@shared_task(
    bind=True,
    base=SecretArgumentsTask,
    acks_late=True,
    reject_on_worker_lost=True,
    throws=(JobFailed,),
)
def submit_job_to_server(
    self,
    job_pk,
    password=None,
    public_key_filename=None,
    username=None,
    timeout=None,
    log_policy=LogPolicy.LOG_LIVE,
    store_results=None,
    remote=True,
    *,
    login_with=None,
    resources=None,
):
    """Run the job on its server; return ``{remote_filename: result pk}``.

    :param password: login password (or None to use keys)
    :param public_key_filename: private key file to log in with (a ``.pub`` path means the
        private key beside it)
    :param username: login name; default the server's, else the job owner's
    :param timeout: ``timedelta`` or seconds; the job is stopped at the deadline
    :param log_policy: ``LogPolicy.LOG_NONE``, ``LOG_LIVE`` or ``LOG_TOTAL``
    :param store_results: fnmatch patterns of result files (``!pattern`` excludes)
    :param remote: False runs the job on the worker's own machine
    :param login_with: how the access policy decided the run logs in (``policy.LOGIN_WITH``;
        set by ``services``); None logs in as 2.1.0 did
    :param resources: for a server with a batch scheduler: ``{"partition", "walltime",
        "cpus", "memory", "gpus", "account", "extra"}`` over the server's defaults (see
        ``resources.clean``)
    :raises JobFailed: in a worker, when the run leaves the job in ``failure``
    """
    since, submission = timezone.now(), self.submission_id()
    results = runner.submit(
        job_pk,
        password=password,
        public_key_filename=public_key_filename,
        username=username,
        timeout=timeout,
        log_policy=log_policy,
        store_results=store_results,
        remote=remote,
        submission=submission,
        login_with=login_with,
        resources=resources,
    )
    return _end(self, job_pk, since, results, submission)


@shared_task(bind=True, base=SecretArgumentsTask, throws=(JobFailed,))
def copy_job_to_server(
    self,
    job_pk,
    password=None,
    public_key_filename=None,
    username=None,
    timeout=None,
    log_policy=LogPolicy.LOG_LIVE,
    store_results=None,
    remote=True,
    *,
    login_with=None,
):
    """Only write the job's program into its remote directory."""
    since, submission = timezone.now(), self.submission_id()
    value = runner.copy(
        job_pk,
        password=password,
        public_key_filename=public_key_filename,
        username=username,
        remote=remote,
        submission=submission,
        login_with=login_with,
    )
    return _end(self, job_pk, since, value, submission)


@shared_task(base=SecretArgumentsTask)
def copy_key_to_server(
    username, password, hostname, port=22, public_key_filename=None, remote=True
):
    """Add this worker's public key to ``~/.ssh/authorized_keys`` on the host."""
    return keys.deploy(username, password, hostname, port, public_key_filename, remote)


@shared_task(base=SecretArgumentsTask)
def delete_key_from_server(
    username, password, hostname, port=22, public_key_filename=None, remote=True
):
    """Remove this worker's public key from ``~/.ssh/authorized_keys`` on the host."""
    return keys.remove(username, password, hostname, port, public_key_filename, remote)


@shared_task(base=SecretArgumentsTask)
def cancel_job(job_pk, password=None):
    """Stop the job's processes (TERM, then KILL) and mark it cancelled once they are gone."""
    return runner.cancel(job_pk, password=password)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, throws=(JobFailed,))
def resume_job(self, job_pk):
    """Continue a run whose worker died (its output and results are picked up where they stand)."""
    since = timezone.now()
    return _end(self, job_pk, since, runner.resume(job_pk))


@shared_task
def dispatch_waiting(server_pk):
    """Start the waiting jobs of a server that fit its limits (see ``scheduling``)."""
    return scheduling.dispatch(server_pk)


@shared_task
def recover_jobs():
    """Queue ``resume_job`` for every active job whose worker stopped sending heartbeats."""
    pks = runner.stale_jobs()
    for pk in pks:
        resume_job.delay(pk)
    return pks


logger = logging.getLogger(__name__)
_stop_watchdog = threading.Event()


def _watchdog() -> None:
    """In every worker, at start then every 3 heartbeat intervals: resume orphaned runs and
    start waiting jobs that have a free slot."""
    interval = STALE_BEATS * float(drs_settings.HEARTBEAT_INTERVAL)
    while True:
        try:
            for pk in runner.stale_jobs():
                resume_job.delay(pk)
            scheduling.sweep()  # waiting jobs whose slot was freed while no one dispatched
        except Exception:
            logger.warning("Recovery sweep failed", exc_info=True)
        if _stop_watchdog.wait(interval):
            return


@worker_ready.connect
def _start_watchdog(**kwargs) -> None:
    if drs_settings.RECOVER_IN_WORKER:
        _stop_watchdog.clear()
        threading.Thread(target=_watchdog, name="drs-recovery", daemon=True).start()


@worker_shutdown.connect
def _stop(**kwargs) -> None:
    _stop_watchdog.set()
