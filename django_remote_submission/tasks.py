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

Routing: the tasks of a job (submit, copy, cancel, resume) go to the queue of its server
(``Server.queue``, else ``DRS["QUEUE"]``; when both are blank, Celery's routing decides), so
that workers started with ``-Q`` serve the servers they are meant for. A ``queue=`` given to
``apply_async`` wins.

Warm shutdown (SIGTERM): the worker's runs hand their jobs over (``shutdown.py``), and the
worker queues a ``resume_job`` for each, which another worker takes.
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid

from celery import Task, shared_task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from django.utils import timezone

from . import keys, retention, runner, scheduling
from .conf import drs_settings
from .credentials import decrypt, encrypt, is_token
from .logs import LogPolicy
from .models import ACTIVE_STATES, STALE_BEATS, Job, Status
from .results import is_matching  # noqa: F401  (2.1.0 offered it here)
from .shutdown import draining

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
    "apply_retention",
]

SECRET_ARGUMENTS = ("password",)
# Shown as names only in the worker's logs (argsrepr/kwargsrepr): values may be secrets.
MASKED_VALUES = ("environment",)


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


def queue_of(job_pk) -> str | None:
    """The queue of the job's tasks (its server's), or None for Celery's routing."""
    server = Job.objects.filter(pk=job_pk).values_list("server__queue", flat=True).first()
    return server or drs_settings.QUEUE or None


class JobTask(Task):
    """A task about a job (its first argument ``job_pk``): sent to its server's queue."""

    def apply_async(self, args=None, kwargs=None, **options):
        job_pk = (kwargs or {}).get("job_pk", args[0] if args else None)
        if job_pk is not None and "queue" not in options and (queue := queue_of(job_pk)):
            options["queue"] = queue
        return super().apply_async(args, kwargs, **options)


class SecretArgumentsTask(JobTask):
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
        for name in MASKED_VALUES:
            if isinstance(shown.get(name), dict):
                shown[name] = dict.fromkeys(shown[name], "********")
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
    arguments=None,
    environment=None,
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
    :param arguments: words after the program on its command line (replace the job's own)
    :param environment: ``{name: value}`` variables of the program (replace the job's own)
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
        arguments=arguments,
        environment=environment,
    )
    _hand_over(job_pk)
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


@shared_task(
    bind=True, base=JobTask, acks_late=True, reject_on_worker_lost=True, throws=(JobFailed,)
)
def resume_job(self, job_pk):
    """Continue a run whose worker died (its output and results are picked up where they stand)."""
    since = timezone.now()
    results = runner.resume(job_pk)
    _hand_over(job_pk)
    return _end(self, job_pk, since, results)


def _hand_over(job_pk) -> None:
    """While this worker shuts down: queue the resumption of a job its run released."""
    if (
        draining.is_set()
        and Job.objects.filter(pk=job_pk, status__in=ACTIVE_STATES, heartbeat__isnull=True).exists()
    ):
        resume_job.delay(job_pk)


@shared_task
def dispatch_waiting(server_pk):
    """Start the waiting jobs of a server that fit its limits (see ``scheduling``)."""
    return scheduling.dispatch(server_pk)


@shared_task
def recover_jobs():
    """Queue ``resume_job`` for every active job whose worker stopped sending heartbeats (each
    claimed, so that concurrent sweeps queue it once)."""
    pks = runner.claim_stale_jobs()
    for pk in pks:
        resume_job.delay(pk)
    return pks


@shared_task
def apply_retention():
    """Archive old logs and purge old jobs and results, as the ``DRS`` retention settings say
    (``retention.apply``); run it daily with Celery beat."""
    return retention.apply().as_dict()


logger = logging.getLogger(__name__)
_stop_watchdog = threading.Event()


def _watchdog() -> None:
    """In every worker, at start then every 3 heartbeat intervals: resume orphaned runs and
    start waiting jobs that have a free slot."""
    interval = STALE_BEATS * float(drs_settings.HEARTBEAT_INTERVAL)
    while True:
        try:
            for pk in runner.claim_stale_jobs():
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


@worker_shutting_down.connect
def _drain(**kwargs) -> None:
    """A warm (or cold) shutdown begins: the runs hand their jobs over (see ``shutdown.py``)."""
    draining.set()


@worker_shutdown.connect
def _stop(**kwargs) -> None:
    _stop_watchdog.set()
