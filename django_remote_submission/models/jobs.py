"""What runs (Job) and what came back (Log, Result).

    job = Job.objects.create(title="hello", program='print("hi")', remote_directory="/tmp/hello",
                             remote_filename="hello.py", owner=user, server=server,
                             interpreter=python3)
    job.status == Job.STATUS.initial

The job state machine is declared here (``Job.STATUS``, ``FINAL_STATES``, ``TRANSITIONS``);
only the ``runner`` package (``runner/state.py``) moves a job from one state to another.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import inputs
from ..conf import drs_settings
from .servers import Interpreter, Server, TimeStampedModel


class Status(models.TextChoices):
    initial = "initial", _("initial")
    waiting = "waiting", _("waiting")
    submitted = "submitted", _("submitted")
    queued = "queued", _("queued")
    running = "running", _("running")
    success = "success", _("success")
    failure = "failure", _("failure")
    cancelled = "cancelled", _("cancelled")


FINAL_STATES = frozenset({Status.success, Status.failure, Status.cancelled})
ACTIVE_STATES = frozenset({Status.submitted, Status.queued, Status.running})

# Legal moves. A final state may go back to ``submitted``: that is a resubmission.
# ``queued``: accepted by a batch scheduler (Slurm, Grid Engine), waiting to start.
# ``waiting``: held back by a limit of its server (see ``scheduling``); no process, no worker.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.initial: frozenset({Status.submitted, Status.success, Status.failure, Status.cancelled}),
    Status.waiting: frozenset({Status.submitted, Status.failure, Status.cancelled}),
    Status.submitted: frozenset(
        {Status.submitted, Status.waiting, Status.queued, Status.running, *FINAL_STATES}
    ),
    Status.queued: frozenset({Status.queued, Status.running, *FINAL_STATES}),
    Status.running: frozenset({Status.running, *FINAL_STATES}),
    Status.success: frozenset({Status.submitted}),
    Status.failure: frozenset({Status.submitted}),
    Status.cancelled: frozenset({Status.submitted}),
}


# A run whose heartbeat is older than this many intervals has lost its worker.
STALE_BEATS = 3

# What a fresh run of a job starts from (its lease sets these, and its own bookkeeping).
FRESH_RUN: dict[str, Any] = {
    "pid": None,
    "scheduler_id": "",
    "scheduler_state": "",
    "stdout_offset": 0,
    "stderr_offset": 0,
    "exit_code": None,
    "error": "",
    "started_at": None,
    "finished_at": None,
    "deadline": None,
    "cancel_requested": False,
    "wait_reason": "",
    "admitted_at": None,
}


def stale_before():
    """Runs with a heartbeat before this moment have lost their worker."""
    interval = float(drs_settings.HEARTBEAT_INTERVAL)
    return timezone.now() - timedelta(seconds=STALE_BEATS * interval)


def validate_arguments(value) -> None:
    try:
        inputs.clean_arguments(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_environment(value) -> None:
    try:
        inputs.clean_environment(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_input_path(value) -> None:
    try:
        inputs.clean_path(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class JobQuerySet(models.QuerySet):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE_STATES)

    def stale(self) -> JobQuerySet:
        """Active runs whose worker stopped sending heartbeats, and runs claimed for
        resumption (heartbeat cleared: ``runner.claim_stale_jobs``) whose resumption did not
        start within as long (its task was lost)."""
        limit = stale_before()
        claimed_long_ago = models.Q(heartbeat__isnull=True, modified__lt=limit)
        return self.active().filter(models.Q(heartbeat__lt=limit) | claimed_long_ago)


class Job(TimeStampedModel):
    """A program to run on a server with an interpreter, and the state of its latest run."""

    STATUS = Status

    title = models.CharField(_("title"), max_length=250)
    uuid = models.UUIDField(_("UUID"), default=uuid.uuid4, editable=False, unique=True)
    program = models.TextField(_("program"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.initial, db_index=True
    )
    remote_directory = models.CharField(
        _("remote directory"),
        max_length=1024,
        help_text=_(
            "Directory on the host where the program is written and run; created if "
            "missing. Relative paths and ~/ are under the login's home."
        ),
    )
    remote_filename = models.CharField(_("remote filename"), max_length=255)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.PROTECT, related_name="jobs", verbose_name=_("owner")
    )
    server = models.ForeignKey(
        Server, models.PROTECT, related_name="jobs", verbose_name=_("server")
    )
    interpreter = models.ForeignKey(
        Interpreter, models.PROTECT, related_name="jobs", verbose_name=_("interpreter")
    )

    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    error = models.TextField(
        _("error"), blank=True, help_text=_("Why the job failed or was cancelled, in plain words.")
    )
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    # Bookkeeping of the current run, so that any worker can find it again.
    submission = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text=_("Id of the submission that owns the current run."),
    )
    run_dir = models.CharField(max_length=1024, blank=True, editable=False)
    pid = models.IntegerField(null=True, blank=True, editable=False)
    scheduler_id = models.CharField(
        _("scheduler job id"),
        max_length=64,
        blank=True,
        editable=False,
        help_text=_("The batch scheduler's id of the current run (Slurm, Grid Engine)."),
    )
    scheduler_state = models.CharField(
        _("scheduler state"),
        max_length=255,
        blank=True,
        editable=False,
        help_text=_('What the batch scheduler last said of the run, e.g. "PENDING (Priority)".'),
    )
    stdout_offset = models.BigIntegerField(default=0, editable=False)
    stderr_offset = models.BigIntegerField(default=0, editable=False)
    heartbeat = models.DateTimeField(null=True, blank=True, editable=False)
    deadline = models.DateTimeField(null=True, blank=True, editable=False)
    cancel_requested = models.BooleanField(default=False, editable=False)
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        help_text=_(
            "Among jobs waiting for a slot on their server, higher starts first; equal "
            "priorities start in turn across users, first come first served for each."
        ),
    )
    wait_reason = models.CharField(
        _("waiting because"),
        max_length=255,
        blank=True,
        editable=False,
        help_text=_('Why the job waits, e.g. "3 of 3 slots on hpc1 in use".'),
    )
    submitted_at = models.DateTimeField(
        _("submitted at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When the latest run was asked for: waiting jobs start in this order."),
    )
    admitted_at = models.DateTimeField(
        _("admitted at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When the current run was given a slot on its server."),
    )
    options = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text=_("Submission options, kept to resume the run."),
    )
    credential = models.TextField(
        blank=True,
        editable=False,
        help_text=_("Encrypted, expiring login secret of the current run."),
    )

    template = models.ForeignKey(
        "JobTemplate",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="jobs",
        verbose_name=_("template"),
        help_text=_("The template the job was made from, if any."),
    )
    template_values = models.JSONField(
        _("template values"),
        default=dict,
        blank=True,
        help_text=_("The values its template's form was filled with (run again with changes)."),
    )
    arguments = models.JSONField(
        _("arguments"),
        default=list,
        blank=True,
        validators=[validate_arguments],
        help_text=_('Words after the program on its command line, e.g. ["--n", "3", "a b"].'),
    )
    environment = models.JSONField(
        _("environment"),
        default=dict,
        blank=True,
        validators=[validate_environment],
        help_text=_('Environment variables of the program, e.g. {"MODE": "fast"}.'),
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-created"]
        indexes = [models.Index(fields=["finished_at"], name="drs_job_finished_at")]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if (
            self.server_id
            and self.interpreter_id
            and not self.server.interpreters.filter(pk=self.interpreter_id).exists()
        ):
            raise ValidationError(
                {
                    "interpreter": _(
                        "The interpreter %(interpreter)s is not offered by the server %(server)s."
                    )
                    % {"interpreter": self.interpreter, "server": self.server}
                }
            )
        name = self.remote_filename or ""
        if not name or "/" in name or name in (".", ".."):
            raise ValidationError({"remote_filename": _("A plain file name, without '/'.")})

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def is_busy(self) -> bool:
        """A run is under way or waits for a slot: the job cannot be edited or deleted."""
        return self.is_active or self.status == Status.waiting

    @property
    def can_submit(self) -> bool:
        """A new run may start: from ``initial`` or a final state (not while one runs)."""
        return not self.is_busy and Status.submitted in TRANSITIONS[self.status]

    @property
    def can_cancel(self) -> bool:
        return Status.cancelled in TRANSITIONS[self.status]

    @property
    def is_stale(self) -> bool:
        """Its run lost its worker (no heartbeat for ``STALE_BEATS`` intervals)."""
        return self.heartbeat is None or self.heartbeat < stale_before()


class Log(models.Model):
    """A piece of a job's output: whole lines of one stream, as they arrived."""

    class Stream(models.TextChoices):
        stdout = "stdout", "stdout"
        stderr = "stderr", "stderr"
        # Messages of the app itself about the job (a skipped result, a reconnect).
        system = "system", "system"

    time = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    content = models.TextField(_("content"))
    stream = models.CharField(
        _("stream"), max_length=6, choices=Stream.choices, default=Stream.stdout
    )
    offset = models.BigIntegerField(
        _("byte offset"), default=0, help_text=_("Position of this piece in its stream, in bytes.")
    )
    job = models.ForeignKey(Job, models.CASCADE, related_name="logs", verbose_name=_("job"))

    class Meta:
        verbose_name = _("log")
        verbose_name_plural = _("logs")
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "id"])]

    def __str__(self) -> str:
        return f"{self.time} {self.job}"


def log_archive_path(instance: LogArchive, filename: str) -> str:
    """``logs/<job uuid>.jsonl.gz`` (``DRS["ARCHIVE_PREFIX"]``)."""
    return f"{drs_settings.ARCHIVE_PREFIX}/{instance.job.uuid}.jsonl.gz"


class LogArchive(models.Model):
    """The log of a finished job, moved out of the database into one compressed file.

    The file is gzip (``zcat`` reads it: one JSON object per line, with the fields of the
    API's and websockets' log rows: id, time, stream, content, offset), made of members of
    about 1 MiB; ``index`` holds the first id and byte offset of each member, so that the
    rows after an id are read without decompressing those before (see ``archive.py``).
    """

    job = models.OneToOneField(
        Job, models.CASCADE, related_name="log_archive", verbose_name=_("job")
    )
    file = models.FileField(_("file"), upload_to=log_archive_path, max_length=1024)
    rows = models.BigIntegerField(_("rows"))
    size = models.BigIntegerField(_("size"), help_text=_("Bytes of the compressed file."))
    first_id = models.BigIntegerField(_("first row id"))
    last_id = models.BigIntegerField(_("last row id"))
    index = models.JSONField(default=list, editable=False)
    created = models.DateTimeField(_("archived"), default=timezone.now)

    class Meta:
        verbose_name = _("log archive")
        verbose_name_plural = _("log archives")

    def __str__(self) -> str:
        return f"{self.file.name} <{self.job}>"


def job_result_path(instance: Result, filename: str) -> str:
    """``results/<job uuid>/<path relative to the job's remote directory>``."""
    return f"{drs_settings.RESULTS_PREFIX}/{instance.job.uuid}/{filename}"


class Result(TimeStampedModel):
    """A file the job wrote, copied into the project's storage."""

    remote_filename = models.TextField(
        _("remote filename"), help_text=_("Path relative to the job's remote directory.")
    )
    local_file = models.FileField(_("local file"), upload_to=job_result_path, max_length=1024)
    size = models.BigIntegerField(_("size"), default=0)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    job = models.ForeignKey(Job, models.CASCADE, related_name="results", verbose_name=_("job"))

    class Meta:
        verbose_name = _("result")
        verbose_name_plural = _("results")
        ordering = ["remote_filename"]

    def __str__(self) -> str:
        return f"{self.remote_filename} <{self.job}>"


def job_input_path(instance: Input, filename: str) -> str:
    """``inputs/<job uuid>/<random name>``: the job's path is on the row, not in storage."""
    return f"{drs_settings.INPUTS_PREFIX}/{instance.job.uuid}/{uuid.uuid4().hex}"


class Input(TimeStampedModel):
    """A file given to a job, copied into its remote directory before it runs."""

    job = models.ForeignKey(Job, models.CASCADE, related_name="inputs", verbose_name=_("job"))
    path = models.CharField(
        _("path"),
        max_length=1024,
        validators=[validate_input_path],
        help_text=_("Where the job finds it, relative to its remote directory (data/x.csv)."),
    )
    file = models.FileField(_("file"), upload_to=job_input_path, max_length=1024)
    size = models.BigIntegerField(_("size"), default=0, editable=False)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True, editable=False)

    class Meta:
        verbose_name = _("input")
        verbose_name_plural = _("inputs")
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["job", "path"], name="drs_input_unique_path")
        ]

    def __str__(self) -> str:
        return f"{self.path} <{self.job}>"
