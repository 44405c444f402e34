"""Forms of the pages and the admin, and the two things they queue: a run and a cancel.

    form = JobForm(request.POST)
    if form.is_valid():
        job = form.save(owner=request.user)   # the job, queued on commit
        form.queued.error                      # "" or why it could not be queued
    queue_submit(job, password="...")           # (re)submit an existing job
    queue_cancel(job)

A password is handed to ``submit_job_to_server.delay``, which encrypts it before it reaches
the broker; it is never stored in clear. When the broker cannot be reached, a job that was
never run fails at once with the reason, rather than waiting in ``initial`` for a run that
will not come.

Programs typed into a form arrive with the browser's CRLF line ends: they are stored with
LF (a program that needs a CR keeps it through the Python API).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django import forms
from django.db import transaction
from django.utils import timezone
from django.utils.text import normalize_newlines
from django.utils.translation import gettext_lazy as _
from kombu.utils.url import maybe_sanitize_url

from . import runner, tasks
from .models import ACTIVE_STATES, FINAL_STATES, Interpreter, Job, Server, Status

logger = logging.getLogger(__name__)

AUTH_PASSWORD = "password"
AUTH_STORED = "stored"


def can_submit(job: Job) -> bool:
    """A job is (re)submitted from its initial or a final state, never while it runs."""
    return job.status == Status.initial or job.status in FINAL_STATES


def can_cancel(job: Job) -> bool:
    return job.status == Status.initial or job.status in ACTIVE_STATES


def submission_kwargs(job: Job, password: str | None = None, username: str | None = None) -> dict:
    """Arguments of ``submit_job_to_server``: the job's last options, a password, a login."""
    options = job.options or {}
    kwargs: dict = {"remote": not job.server.local}
    for name in ("timeout", "log_policy", "store_results"):
        if options.get(name) is not None:
            kwargs[name] = options[name]
    if options.get("key_filename"):
        kwargs["public_key_filename"] = options["key_filename"]
    username = username or options.get("username")
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    return kwargs


@dataclass
class Queued:
    """What became of a submission queued on commit: ``error`` is why it was not queued."""

    error: str = ""


def _not_queued(what: str, exc: Exception) -> str:
    connection = tasks.submit_job_to_server.app.connection_for_write()
    broker = maybe_sanitize_url(connection.as_uri(include_password=True))  # password masked
    logger.warning("Could not queue %s: %s: %s", what, type(exc).__name__, exc)
    return (
        f"Could not queue {what}: the Celery broker ({broker}) did not take it "
        f"({type(exc).__name__}: {exc}). Start the broker and a worker, then submit it again."
    )


def send_submit(job: Job, **kwargs) -> str:
    """Queue a run of the job now; return "" or why it could not be queued.

    A job that was never run fails with that reason, so that no job waits in ``initial``
    for a run that will not come.
    """
    try:
        tasks.submit_job_to_server.delay(job.pk, **kwargs)
    except Exception as exc:  # whatever the broker raised: the job must not be left waiting
        error = _not_queued("the job", exc)
        current = Job.objects.get(pk=job.pk)
        if current.status == Status.initial:
            try:
                runner.move(current, Status.failure, error=error)
            except runner.InvalidTransition:
                pass  # changed meanwhile: whoever changed it reports on it
        return error
    return ""


def send_cancel(job: Job) -> str:
    """Queue a cancel of the job now; return "" or why it could not be queued."""
    try:
        tasks.cancel_job.delay(job.pk)
    except Exception as exc:
        return _not_queued("the cancel", exc)
    return ""


def queue_submit(
    job: Job, password: str | None = None, username: str | None = None, **options
) -> Queued:
    """Queue a run of the job once the current transaction commits."""
    kwargs = {**submission_kwargs(job, password, username), **options}
    queued = Queued()

    def send() -> None:
        queued.error = send_submit(job, **kwargs)

    transaction.on_commit(send)
    return queued


def queue_cancel(job: Job) -> Queued:
    queued = Queued()

    def send() -> None:
        queued.error = send_cancel(job)

    transaction.on_commit(send)
    return queued


class ProgramField(forms.CharField):
    """A program typed in a browser: CRLF and lone CR line ends become LF (what a shell or an
    interpreter on a Linux host expects; bash fails on a CR before the line end). Leading and
    trailing blanks are kept: they may be part of the program."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        return normalize_newlines(super().to_python(value))


class SubmitForm(forms.Form):
    """Login for a (re)submission; both blank: the server's stored key or the worker's keys.

    Only staff may choose the login name: everyone else logs in as the server's login name
    or their own username, so a blank password can never open another account with a key
    the worker holds.
    """

    username = forms.CharField(
        label=_("Login name"),
        required=False,
        help_text=_("Blank: the server's login name, else your username."),
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("Blank: log in with the server's stored key or the worker's keys."),
    )

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not (user is not None and user.is_staff):
            del self.fields["username"]

    def submit(self, job: Job) -> Queued:
        return queue_submit(
            job,
            password=self.cleaned_data.get("password") or None,
            username=self.cleaned_data.get("username") or None,
        )


class InterpreterSelect(forms.Select):
    """Options carry the ids of the servers that offer them (``data-servers="1 3"``)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-servers"] = " ".join(str(s.pk) for s in instance.servers.all())
        return option


class ServerSelect(forms.Select):
    """Options of servers that run jobs on the worker's machine say so (``data-local``)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None and instance.local:
            option["attrs"]["data-local"] = "1"
        return option


class JobForm(forms.ModelForm):
    """A new job: what to run, where, and how to log in."""

    auth = forms.ChoiceField(
        label=_("Log in with"),
        choices=[
            (AUTH_PASSWORD, _("a password")),
            (AUTH_STORED, _("the stored credential (server key or the worker's keys)")),
        ],
        initial=AUTH_PASSWORD,
        widget=forms.RadioSelect,
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("Sent to the worker encrypted; never stored in clear."),
    )
    timeout = forms.IntegerField(
        label=_("Time limit (s)"),
        required=False,
        min_value=1,
        help_text=_("Blank: no limit."),
    )

    class Meta:
        model = Job
        fields = [
            "title",
            "server",
            "interpreter",
            "program",
            "remote_directory",
            "remote_filename",
        ]
        field_classes = {"program": ProgramField}
        widgets = {
            "program": forms.Textarea(
                attrs={"rows": 14, "spellcheck": "false", "class": "drs-code"}
            ),
            "server": ServerSelect,
            "interpreter": InterpreterSelect,
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = Server.objects.order_by("title")
        self.fields["interpreter"].queryset = Interpreter.objects.prefetch_related("servers")
        self.fields["remote_filename"].required = False
        self.fields["remote_filename"].help_text = _("Blank: job.py, job.sh or job.")
        if not self.is_bound:
            self.initial.setdefault("title", timezone.localtime().strftime("Job %Y-%m-%d %H:%M"))
            self.initial.setdefault("server", self.fields["server"].queryset.first())
            self.initial.setdefault("remote_directory", f"drs-jobs/{uuid.uuid4().hex[:8]}")

    def clean(self) -> dict:
        data = super().clean()
        server, interpreter = data.get("server"), data.get("interpreter")
        if interpreter and not data.get("remote_filename"):
            words = f"{interpreter.name} {interpreter.path}".lower()
            data["remote_filename"] = (
                "job.py" if "python" in words else "job.sh" if "sh" in words else "job"
            )
        if (
            server
            and not server.local
            and data.get("auth") == AUTH_PASSWORD
            and not data.get("password")
        ):
            self.add_error("password", _("Enter the password, or use the stored credential."))
        return data

    def save(self, owner, commit: bool = True) -> Job:
        """Create the job for ``owner`` and queue its run (after the transaction commits);
        ``self.queued.error`` then says whether it could not be queued."""
        job = super().save(commit=False)
        job.owner = owner
        if commit:
            job.save()
            password = None
            if self.cleaned_data.get("auth") == AUTH_PASSWORD:
                password = self.cleaned_data.get("password") or None
            options = {}
            if self.cleaned_data.get("timeout"):
                options["timeout"] = self.cleaned_data["timeout"]
            self.queued = queue_submit(job, password=password, **options)
        return job


class JobAdminForm(forms.ModelForm):
    """The admin's job form: the program's line ends as on the pages."""

    class Meta:
        model = Job
        fields = "__all__"
        field_classes = {"program": ProgramField}


class ServerAdminForm(forms.ModelForm):
    """Secrets are write-only: the stored key is never sent back to the browser."""

    private_key = forms.CharField(
        label=_("Private key"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
        help_text=_(
            "OpenSSH private key text, stored encrypted. Leave blank to keep the stored one."
        ),
    )
    private_key_passphrase = forms.CharField(
        label=_("Private key passphrase"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Leave blank to keep the stored one."),
    )
    clear_secrets = forms.BooleanField(
        label=_("Forget the stored key and passphrase"),
        required=False,
    )

    class Meta:
        model = Server
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("private_key", None)
        self.initial.pop("private_key_passphrase", None)
        if self.instance.pk and self.instance.private_key:
            self.fields["private_key"].widget.attrs["placeholder"] = _(
                "(a key is stored: leave blank to keep it)"
            )

    def clean(self) -> dict:
        data = super().clean()
        stored = Server.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        for name in ("private_key", "private_key_passphrase"):
            if data.get("clear_secrets"):
                data[name] = ""
            elif not data.get(name) and stored is not None:
                data[name] = getattr(stored, name)
        return data
