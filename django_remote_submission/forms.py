"""Forms of the pages and the admin. What they ask for is handed to ``services``.

    form = JobForm(request.POST, user=request.user)
    if form.is_valid():
        job, queued = form.save(request=request)   # created, queued on commit
        queued.error                                # "" or why it could not be queued
    SubmitForm(request.POST, user=request.user)     # the login of a (re)submission

Only the servers a user may use are offered (``policy.usable_servers``); the login name field
is shown only to users who may choose it. Programs typed into a form arrive with the
browser's CRLF line ends: they are stored with LF (a program that needs a CR keeps it
through the Python API).
"""

from __future__ import annotations

import shlex
import uuid

from django import forms
from django.db import transaction
from django.utils import timezone
from django.utils.text import normalize_newlines
from django.utils.translation import gettext_lazy as _

from . import inputs, jobtemplates, policy, services
from . import resources as resources_
from .credentials import UNREADABLE, is_unreadable
from .launchers import reserved_check
from .models import Input, Interpreter, Job, Server, ServerAccount

AUTH_PASSWORD = "password"
AUTH_STORED = "stored"


class ProgramField(forms.CharField):
    """A program typed in a browser: CRLF and lone CR line ends become LF (what a shell or an
    interpreter on a Linux host expects; bash fails on a CR before the line end). Leading and
    trailing blanks are kept: they may be part of the program."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        return normalize_newlines(super().to_python(value))


class ArgumentsField(forms.CharField):
    """Arguments written as on a shell's command line (``-n 3 "two words"``), split with
    shell quoting rules (nothing is expanded) into the list the program receives."""

    widget = forms.TextInput

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        try:
            words = shlex.split(normalize_newlines(text)) if text.strip() else []
            return inputs.clean_arguments(words)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def prepare_value(self, value):
        return shlex.join(value) if isinstance(value, list) else value


class EnvironmentField(forms.CharField):
    """One ``NAME=value`` a line; names are checked (``inputs.name_refusal``)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("strip", False)
        kwargs.setdefault(
            "widget", forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "drs-code"})
        )
        super().__init__(**kwargs)

    def to_python(self, value) -> dict[str, str]:
        env = {}
        text = super().to_python(value) or ""
        for number, line in enumerate(normalize_newlines(text).split("\n")):
            if not line.strip():
                continue
            name, equals, text = line.partition("=")
            if not equals:
                raise forms.ValidationError(f"Line {number + 1}: write NAME=value.")
            env[name.strip()] = text
        try:
            return inputs.clean_environment(env)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{k}={v}" for k, v in value.items())
        return value


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files at once (``<input type=file multiple>``)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(**kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data] if data else []
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class SubmitForm(forms.Form):
    """Login for a (re)submission. No password: the key made for the user's own account on
    the server, else the server's shared login where the policy allows it.

    Only users with the permission ``choose_login`` see the login name field: everyone else
    logs in as themselves, so a blank password can never open another account with a key
    the worker holds.
    """

    username = forms.CharField(
        label=_("Login name"),
        required=False,
        help_text=_("Blank: your own login on the server."),
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("Blank: your SSH key for this server (see “My SSH keys”)."),
    )

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        if user is None or not policy.may_choose_login(user):
            del self.fields["username"]

    def login(self) -> dict:
        """The ``services.submit`` keywords of what was entered."""
        return {
            "password": self.cleaned_data.get("password") or None,
            "username": self.cleaned_data.get("username") or None,
        }


class InterpreterSelect(forms.Select):
    """Options carry the ids of the servers that offer them (``data-servers="1 3"``), among
    ``offered_on`` (the servers the form offers)."""

    offered_on: set[int] | None = None

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            ids = [s.pk for s in instance.servers.all()]
            if self.offered_on is not None:
                ids = [pk for pk in ids if pk in self.offered_on]
            option["attrs"]["data-servers"] = " ".join(map(str, ids))
        return option


class ServerSelect(forms.Select):
    """Options of servers that run jobs on the worker's machine say so (``data-local``), and
    each says its scheduler (``data-scheduler``)."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None and instance.local:
            option["attrs"]["data-local"] = "1"
        if instance is not None:
            option["attrs"]["data-scheduler"] = instance.scheduler
        return option


class JobForm(forms.ModelForm):
    """A new job of ``user``: what to run, where, and how to log in."""

    auth = forms.ChoiceField(
        label=_("Log in with"),
        choices=[
            (AUTH_PASSWORD, _("my password")),
            (AUTH_STORED, _("my SSH key for this server (or its shared login, where allowed)")),
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
        help_text=_("Blank: no limit. On a batch scheduler: the walltime, unless one is set."),
    )
    # What a batch scheduler is asked for (shown for servers with one; see resources.py).
    partition = forms.CharField(label=_("Partition / queue"), required=False)
    walltime = forms.CharField(
        label=_("Walltime"), required=False, help_text=_("H:MM:SS (or seconds).")
    )
    cpus = forms.IntegerField(label=_("CPUs"), required=False, min_value=1)
    memory = forms.CharField(label=_("Memory"), required=False, help_text=_("e.g. 512M, 4G."))
    gpus = forms.IntegerField(label=_("GPUs"), required=False, min_value=0)
    account = forms.CharField(label=_("Account"), required=False)
    extra = forms.CharField(
        label=_("Extra directives"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "drs-code"}),
        help_text=_("One per line, as after #SBATCH or #$ (e.g. --constraint=avx2)."),
    )
    RESOURCE_FIELDS = ("partition", "walltime", "cpus", "memory", "gpus", "account", "extra")
    arguments = ArgumentsField(
        label=_("Arguments"),
        required=False,
        help_text=_('After the program, quoted as in a shell: -n 3 "two words". Not expanded.'),
    )
    environment = EnvironmentField(
        label=_("Environment"),
        required=False,
        help_text=_("One NAME=value a line."),
    )
    input_files = MultipleFileField(
        label=_("Input files"),
        required=False,
        help_text=_("Copied into the job's directory before it runs."),
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

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        servers = policy.usable_servers(user).order_by("title")
        self.fields["server"].queryset = servers
        self.fields["interpreter"].queryset = (
            Interpreter.objects.filter(servers__in=servers).distinct().prefetch_related("servers")
        )
        self.fields["interpreter"].widget.offered_on = set(servers.values_list("pk", flat=True))
        self.fields["remote_filename"].required = False
        self.fields["remote_filename"].help_text = _("Blank: job.py, job.sh or job.")
        if not self.is_bound:
            self.initial.setdefault("title", timezone.localtime().strftime("Job %Y-%m-%d %H:%M"))
            self.initial.setdefault("server", servers.first())
            self.initial.setdefault("remote_directory", f"drs-jobs/{uuid.uuid4().hex[:8]}")

    def clean(self) -> dict:
        data = super().clean() or {}
        server, interpreter = data.get("server"), data.get("interpreter")
        if interpreter and not data.get("remote_filename"):
            words = f"{interpreter.name} {interpreter.path}".lower()
            data["remote_filename"] = (
                "job.py" if "python" in words else "job.sh" if "sh" in words else "job"
            )
        self._clean_input_files(data)
        if server is None:
            return data
        self._clean_resources(data, server)
        password = self._password(data)
        if data.get("auth") == AUTH_PASSWORD and not password and not server.local:
            self.add_error("password", _("Enter your password, or log in with your SSH key."))
        if self.errors:
            return data
        try:
            policy.decide(self.user, server, password=bool(password))
        except policy.Refused as exc:
            self.add_error(None, str(exc))
        return data

    def _clean_resources(self, data: dict, server: Server) -> None:
        """The resources asked for, checked for the server's scheduler (field errors)."""
        self.resources = {}
        if server.scheduler == "direct":
            return
        asked = {k: data.get(k) for k in self.RESOURCE_FIELDS if data.get(k) not in (None, "")}
        try:
            self.resources = resources_.clean(asked, reserved_check(server.scheduler))
        except resources_.ResourceError as exc:
            for key, message in exc.errors.items():
                self.add_error(key if key in self.fields else None, message)

    @staticmethod
    def _password(data: dict) -> str | None:
        return data.get("password") or None if data.get("auth") == AUTH_PASSWORD else None

    def _clean_input_files(self, data: dict) -> None:
        files = [(f.name, f.size) for f in data.get("input_files") or []]
        refusal = inputs.files_refusal(files, data.get("remote_filename") or "")
        if refusal:
            self.add_error("input_files", refusal)

    def save(self, request=None) -> tuple[Job, services.Queued]:
        """Create the job with its inputs and queue its run (after the transaction commits)."""
        fields = {name: self.cleaned_data[name] for name in self.Meta.fields}
        fields["arguments"] = self.cleaned_data.get("arguments") or []
        fields["environment"] = self.cleaned_data.get("environment") or {}
        with transaction.atomic():  # the run is queued once the job has all its inputs
            job = services.create(self.user, request=request, **fields)
            for file in self.cleaned_data.get("input_files") or []:
                services.add_input(job, self.user, file.name, file, request=request)
            queued = services.submit(
                job,
                self.user,
                password=self._password(self.cleaned_data),
                timeout=self.cleaned_data.get("timeout"),
                resources=getattr(self, "resources", None) or None,
                request=request,
            )
        return job, queued


class TemplateJobForm(forms.Form):
    """A job from a template: its parameters' fields (typed: see ``jobtemplates.form_field``),
    where to run it and how to log in. Used by the page and by the API alike.

    form = TemplateJobForm(template, request.POST, request.FILES, user=request.user)
    if form.is_valid():
        job, queued = form.save(request=request)
    """

    title = forms.CharField(label=_("Title"), max_length=250, required=False)
    server = forms.ModelChoiceField(label=_("Server"), queryset=Server.objects.none())
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("Blank: your SSH key for this server (see “My SSH keys”)."),
    )

    def __init__(self, template, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.template, self.user = template, user
        servers = policy.template_servers(user, template).order_by("title")
        self.fields["server"].queryset = servers
        self.fields["server"].initial = servers.first()
        self.parameters = list(template.parameters.all())
        for p in self.parameters:
            self.fields[p.name] = jobtemplates.form_field(p)

    def parameter_fields(self):
        return [self[p.name] for p in self.parameters]

    def clean(self) -> dict:
        data = super().clean()
        server = data.get("server")
        if server is None or self.errors:
            return data
        values = {p.name: data.get(p.name) for p in self.parameters}
        try:
            arguments, environment, files = jobtemplates.build(self.template, values)
            inputs.clean_arguments(arguments)
            inputs.clean_environment(environment)
        except ValueError as exc:
            self.add_error(None, str(exc))
            return data
        named = [(path, file.size) for path, file in files]
        refusal = inputs.files_refusal(named, self.template.remote_filename)
        if refusal:
            self.add_error(None, refusal)
            return data
        try:
            policy.decide(self.user, server, password=bool(data.get("password")))
        except policy.Refused as exc:
            self.add_error(None, str(exc))
        return data

    def save(self, request=None) -> tuple[Job, services.Queued]:
        """Create the job (with its inputs) and queue its run once the transaction commits."""
        data = self.cleaned_data
        values = {p.name: data.get(p.name) for p in self.parameters}
        server = data["server"]
        with transaction.atomic():
            job = services.create_from_template(
                self.user,
                self.template,
                server,
                values,
                title=data.get("title") or "",
                request=request,
            )
            queued = services.submit(
                job,
                self.user,
                password=data.get("password") or None,
                resources=(self.template.resources or None)
                if server.scheduler != "direct"
                else None,
                request=request,
            )
        return job, queued


class JobAdminForm(forms.ModelForm):
    """The admin's job form: the program's line ends as on the pages; a blank priority is 0."""

    class Meta:
        model = Job
        fields = "__all__"
        field_classes = {"program": ProgramField}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "priority" in self.fields:
            self.fields["priority"].required = False

    def clean_priority(self) -> int:
        return self.cleaned_data.get("priority") or 0


class InputAdminForm(forms.ModelForm):
    """An input file in the admin: its path (default: the file's name) and size checked."""

    class Meta:
        model = Input
        fields = ["path", "file"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["path"].required = False

    def clean(self) -> dict:
        data = super().clean() or {}
        file = data.get("file")
        if not data.get("path") and file is not None:
            data["path"] = file.name
        try:
            data["path"] = inputs.clean_path(data.get("path"))
        except ValueError as exc:
            self.add_error("path", str(exc))
        if file is not None and file is not self.initial.get("file"):
            refusal = inputs.size_refusal(file.size, 0, 0)
            if refusal:
                self.add_error("file", refusal)
        self.instance.path = data.get("path") or ""
        return data


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
        if "scheduler" in self.fields:  # left out of a post: kept (direct for a new server)
            self.fields["scheduler"].required = False
        stored = self.instance.private_key if self.instance.pk else ""
        if is_unreadable(stored):
            self.fields["private_key"].widget.attrs["placeholder"] = f"({UNREADABLE})"
        elif stored:
            self.fields["private_key"].widget.attrs["placeholder"] = _(
                "(a key is stored: leave blank to keep it)"
            )

    def clean_scheduler(self) -> str:
        stored = Server.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        return self.cleaned_data.get("scheduler") or (stored.scheduler if stored else "direct")

    def clean_resources(self) -> dict:
        return self.cleaned_data.get("resources") or {}

    def clean(self) -> dict:
        data = super().clean() or {}
        stored = Server.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        for name in ("private_key", "private_key_passphrase"):
            if data.get("clear_secrets"):
                data[name] = ""
            elif not data.get(name) and stored is not None:
                data[name] = getattr(stored, name)
        return data


class AccountForm(forms.ModelForm):
    """A user's login name on one server (the key is made and installed by the keys page)."""

    class Meta:
        model = ServerAccount
        fields = ["username"]


class InstallKeyForm(forms.Form):
    """The password that installs a key on the host, once."""

    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("Used once to add the key to ~/.ssh/authorized_keys; never stored."),
    )
