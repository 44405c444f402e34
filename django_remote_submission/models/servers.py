"""Where jobs run: hosts (Server), the programs that run jobs there (Interpreter), and each
user's own login on a host (ServerAccount).

    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3", arguments=["-u"])
    server = Server.objects.create(title="HPC", hostname="hpc.example.org")
    server.interpreters.add(python3)
    ServerAccount.objects.create(user=ada, server=server, username="ada42")

Who may use a server, and how, is decided in ``policy.py`` from the permissions declared here
and ``Server.allowed_groups``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from .. import resources
from ..conf import drs_settings
from ..credentials import EncryptedTextField
from ..remote.hostkeys import parse_host_key


class TimeStampedModel(models.Model):
    created = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    modified = models.DateTimeField(_("modified"), auto_now=True)

    class Meta:
        abstract = True


def validate_host_key(line: str) -> None:
    """A host key on record must be a known_hosts line (``[host]:port type base64``)."""
    if line.strip() and parse_host_key(line) is None:
        raise ValidationError(
            _("Not a known_hosts line (expected e.g. “[hpc]:22 ssh-ed25519 AAAA…”)."),
            code="host_key",
        )


def validate_resources(value) -> None:
    """Default resources must be valid resources (see ``resources.clean``)."""
    try:
        resources.clean(value)
    except resources.ResourceError as exc:
        raise ValidationError(str(exc), code="resources") from None


RESOURCES_HELP = _(
    'Default resources of jobs run by a batch scheduler, e.g. {"partition": "short", '
    '"walltime": "1:00:00", "cpus": 4, "memory": "8G", "gpus": 1, "account": "proj42", '
    '"extra": ["--constraint=avx2"]}. A job\'s own resources override them.'
)


class Interpreter(TimeStampedModel):
    """An executable that runs a job's program, e.g. ``/usr/bin/python3 -u``."""

    name = models.CharField(_("name"), max_length=100)
    path = models.CharField(
        _("command path"),
        max_length=256,
        help_text=_(
            "Absolute path or command name. Extra words are split shell-style, never run "
            'through a shell ("/usr/bin/python3 -u" works).'
        ),
    )
    arguments = models.JSONField(
        _("arguments"),
        default=list,
        blank=True,
        help_text=_('Arguments before the program file, e.g. ["-u"].'),
    )
    resources = models.JSONField(
        _("default resources"),
        default=dict,
        blank=True,
        validators=[validate_resources],
        help_text=RESOURCES_HELP,
    )

    class Meta:
        verbose_name = _("interpreter")
        verbose_name_plural = _("interpreters")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.path})"

    def clean(self) -> None:
        if not isinstance(self.arguments, list) or not all(
            isinstance(a, str) for a in self.arguments
        ):
            raise ValidationError({"arguments": _("Arguments must be a list of strings.")})


class Scheduler(models.TextChoices):
    """How a server runs jobs: at once on the host, or through a batch scheduler."""

    direct = "direct", _("direct (a detached process on the host)")
    slurm = "slurm", _("Slurm (sbatch)")
    sge = "sge", _("Grid Engine (qsub)")


class Server(TimeStampedModel):
    """A host reachable over SSH, and how to log in to it."""

    Scheduler = Scheduler

    title = models.CharField(_("name"), max_length=100)
    hostname = models.CharField(_("hostname"), max_length=255)
    port = models.PositiveIntegerField(_("port"), default=22)
    interpreters = models.ManyToManyField(
        Interpreter, related_name="servers", blank=True, verbose_name=_("interpreters")
    )
    username = models.CharField(
        _("shared login name"),
        max_length=150,
        blank=True,
        help_text=_(
            "The service account that the stored key, the ssh-agent or the worker's keys log "
            "in to, for users allowed to use them. Others log in as themselves."
        ),
    )
    private_key = EncryptedTextField(
        _("private key"),
        blank=True,
        help_text=_("OpenSSH private key text of the shared login (stored encrypted)."),
    )
    private_key_passphrase = EncryptedTextField(_("private key passphrase"), blank=True)
    use_agent = models.BooleanField(
        _("use ssh-agent"),
        default=False,
        help_text=_("Offer the keys of the worker's ssh-agent (SSH_AUTH_SOCK)."),
    )
    local = models.BooleanField(
        _("run locally"),
        default=False,
        help_text=_("Run jobs on the worker's own machine instead of over SSH (remote=False)."),
    )
    queue = models.CharField(
        _("Celery queue"),
        max_length=200,
        blank=True,
        help_text=_(
            "Queue of this server's jobs: workers started with -Q NAME run them, so a slow or "
            "unreachable host holds only its own workers. Blank: DRS['QUEUE'], else Celery's "
            "default. Servers may share a queue."
        ),
    )
    host_key = models.TextField(
        _("host key"),
        blank=True,
        validators=[validate_host_key],
        help_text=_("known_hosts-style line of the server's public key. Blank until known."),
    )
    scheduler = models.CharField(
        _("scheduler"),
        max_length=16,
        choices=Scheduler.choices,
        default=Scheduler.direct,
        help_text=_(
            "direct: jobs start at once on the host. Slurm or Grid Engine: the host is a login "
            "node and jobs are submitted to its batch scheduler."
        ),
    )
    resources = models.JSONField(
        _("default resources"),
        default=dict,
        blank=True,
        validators=[validate_resources],
        help_text=RESOURCES_HELP,
    )
    max_running = models.PositiveIntegerField(
        _("maximum running jobs"),
        null=True,
        blank=True,
        help_text=_(
            "At most this many jobs hold the host at once (started, queued in its scheduler or "
            "running); the others wait, in order of priority and fairly across users. Blank: "
            "no limit."
        ),
    )
    max_running_per_user = models.PositiveIntegerField(
        _("maximum running jobs per user"),
        null=True,
        blank=True,
        help_text=_("At most this many jobs of one user hold the host at once. Blank: no limit."),
    )
    max_load_per_core = models.FloatField(
        _("maximum load per core"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0)],
        help_text=_(
            "Do not start a job while the host's 1-minute load average divided by its cores is "
            "above this. Blank: the load is not looked at."
        ),
    )
    allowed_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="drs_servers",
        verbose_name=_("allowed groups"),
        help_text=_(
            "Only members of these groups may run jobs here. Blank: every user, each under "
            "their own login and with their own password or key."
        ),
    )

    class Meta:
        verbose_name = _("server")
        verbose_name_plural = _("servers")
        ordering = ["title"]
        permissions = [
            (
                "run_locally",
                _(
                    "Can run jobs on the worker's own machine (this gives access to the "
                    "worker's secrets)"
                ),
            ),
            ("choose_login", _("Can run jobs under any login name")),
            (
                "use_shared_credentials",
                _("Can run jobs with a server's stored key, the worker's keys or its ssh-agent"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} <{self.hostname}:{self.port}>"

    @property
    def celery_queue(self) -> str | None:
        """The queue of this server's job tasks; None: Celery's own routing decides."""
        return self.queue or drs_settings.QUEUE or None


class ServerAccount(TimeStampedModel):
    """A user's own login on a server: its name and, optionally, a key pair made for it.

    The private key is generated by the app, stored encrypted and never shown; its public
    part is installed on the host with the user's password once (``keys.install``).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.CASCADE,
        related_name="server_accounts",
        verbose_name=_("user"),
    )
    server = models.ForeignKey(
        Server, models.CASCADE, related_name="accounts", verbose_name=_("server")
    )
    username = models.CharField(
        _("login name"),
        max_length=150,
        blank=True,
        help_text=_("Your login name on this server. Blank: your username here."),
    )
    private_key = EncryptedTextField(_("private key"), blank=True, editable=False)
    public_key = models.TextField(_("public key"), blank=True, editable=False)
    installed = models.DateTimeField(_("key installed"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("server account")
        verbose_name_plural = _("server accounts")
        ordering = ["server__title"]
        constraints = [
            models.UniqueConstraint(fields=["user", "server"], name="drs_one_account_per_server")
        ]

    def __str__(self) -> str:
        return f"{self.login} on {self.server.title}"

    @property
    def login(self) -> str:
        return self.username or self.user.get_username()
