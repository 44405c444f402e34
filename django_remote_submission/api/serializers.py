"""JSON shapes of the API's objects, and validation of what clients send.

    JobSerializer(job, context={"request": request}).data
    s = SubmitSerializer(data={"password": "...", "timeout": 60})
    s.is_valid(raise_exception=True)          # 400 with field errors
    submit_job_to_server.delay(job.pk, **s.validated_data)

Secrets are write-only: a password or a server's private key is accepted, never shown.
A job's ``program`` is stored with LF line ends (CRLF and lone CR are converted).
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from django.utils.text import normalize_newlines
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import inputs, jobtemplates, policy
from .. import resources as resources_
from ..credentials import UNREADABLE, is_unreadable
from ..launchers import reserved_check
from ..logs import WINDOW_ROWS, LogPolicy
from ..models import (
    Event,
    Input,
    Interpreter,
    Job,
    JobTemplate,
    Log,
    Result,
    Server,
    ServerAccount,
)

# Longest accepted timeout (ten years): the deadline must stay a representable datetime.
MAX_TIMEOUT = 10 * 366 * 24 * 3600.0


def _url(serializer: serializers.Serializer, name: str, query: str = "", **kwargs) -> str | None:
    """Absolute URL of the API route ``name`` in the namespace the request came through (or
    ``context["api_namespace"]``, for a page that answers in the API's shapes)."""
    request = serializer.context.get("request")
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    namespace = serializer.context.get("api_namespace", match.namespace)
    name = f"{namespace}:{name}" if namespace else name
    return request.build_absolute_uri(reverse(name, kwargs=kwargs) + query)


RESOURCES_SCHEMA = {
    "type": "object",
    "properties": {
        "partition": {"type": "string", "description": "Partition (Slurm) or queue (SGE)."},
        "walltime": {
            "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
            "description": 'Seconds, or "H:MM:SS" / "D-H:MM:SS".',
        },
        "cpus": {"type": "integer", "minimum": 1},
        "memory": {
            "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
            "description": 'MiB, or a size such as "512M", "4G".',
        },
        "gpus": {"type": "integer", "minimum": 0},
        "account": {"type": "string"},
        "extra": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Extra directives, one per item, as after #SBATCH or #$ "
            '(e.g. "--constraint=avx2", "-l arch=lx-amd64").',
        },
    },
    "additionalProperties": False,
    "description": "What a batch scheduler is asked for; the server's and interpreter's "
    "defaults fill in what is left out. Values stored: walltime in s, memory in MiB.",
}


@extend_schema_field(RESOURCES_SCHEMA)
class ResourcesField(serializers.JSONField):
    """Resources for a batch scheduler, checked field by field (``resources.clean``); the
    extra directives also against the scheduler of ``scheduler()``, when known."""

    def __init__(self, scheduler=None, **kwargs) -> None:
        self.scheduler = scheduler
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> dict:
        data = super().to_internal_value(data)
        kind = self.scheduler(self) if self.scheduler else None
        try:
            return resources_.clean(data, reserved_check(kind) if kind else None)
        except resources_.ResourceError as exc:
            raise serializers.ValidationError({k: [v] for k, v in exc.errors.items()}) from None


def _posted(serializer: serializers.Serializer, name: str):
    """The value of ``name`` in the body, else on the instance being changed."""
    data = getattr(serializer, "initial_data", None)
    if isinstance(data, dict) and name in data:
        return data[name]
    return getattr(serializer.instance, name, None)


class InterpreterSerializer(serializers.ModelSerializer):
    arguments = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text='Arguments before the program file, e.g. ["-u"].',
    )
    resources = ResourcesField(required=False, help_text="Default resources of its jobs.")

    class Meta:
        model = Interpreter
        fields = ["id", "name", "path", "arguments", "resources", "created", "modified"]


class ServerSerializer(serializers.ModelSerializer):
    port = serializers.IntegerField(min_value=1, max_value=65535, default=22)
    interpreters = serializers.PrimaryKeyRelatedField(
        many=True,
        queryset=Interpreter.objects.all(),
        required=False,
        help_text="Ids of the interpreters jobs may use on this server.",
    )
    private_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="OpenSSH private key text to log in with; stored encrypted, never shown.",
    )
    private_key_passphrase = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Passphrase of the private key; never shown.",
    )
    has_private_key = serializers.SerializerMethodField(
        help_text="Whether a private key is stored for the shared login."
    )
    credential_problem = serializers.SerializerMethodField(
        help_text=f'"" or "{UNREADABLE}" when a stored secret can no longer be decrypted.'
    )
    allowed_groups = serializers.PrimaryKeyRelatedField(
        many=True,
        queryset=Group.objects.all(),
        required=False,
        help_text="Ids of the groups whose members may run jobs here (empty: every user).",
    )
    resources = ResourcesField(
        required=False,
        help_text="Default resources of jobs on a batch scheduler.",
        scheduler=lambda field: _posted(field.parent, "scheduler"),
    )

    class Meta:
        model = Server
        fields = [
            "id",
            "title",
            "hostname",
            "port",
            "username",
            "interpreters",
            "scheduler",
            "resources",
            "local",
            "use_agent",
            "queue",
            "host_key",
            "private_key",
            "private_key_passphrase",
            "has_private_key",
            "credential_problem",
            "allowed_groups",
            "created",
            "modified",
        ]

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_has_private_key(self, server: Server) -> bool:
        return bool(server.private_key) or is_unreadable(server.private_key)

    @extend_schema_field(OpenApiTypes.STR)
    def get_credential_problem(self, server: Server) -> str:
        secrets = (server.private_key, server.private_key_passphrase)
        return UNREADABLE if any(is_unreadable(v) for v in secrets) else ""


class SubmissionOptionsSerializer(serializers.Serializer):
    """The options of a job's latest submission (what ``resubmit`` reuses)."""

    timeout = serializers.FloatField(allow_null=True, help_text="Seconds, or null: no limit.")
    log_policy = serializers.IntegerField(
        allow_null=True, help_text="0: no logs, 1: live logs, 2: whole output at the end."
    )
    store_results = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="Result patterns, or null: every new or modified file.",
    )
    resources = ResourcesField(
        allow_null=True, help_text="What the batch scheduler was asked for, or null."
    )


class JobSerializer(serializers.ModelSerializer):
    owner = serializers.PrimaryKeyRelatedField(read_only=True, help_text="User id of the owner.")
    options = serializers.SerializerMethodField(help_text="Options of the latest submission.")
    logs_url = serializers.SerializerMethodField(help_text="The job's logs, oldest first.")
    results_url = serializers.SerializerMethodField(help_text="The job's result files.")
    inputs_url = serializers.SerializerMethodField(help_text="The job's input files.")
    arguments = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Words after the program on its command line, passed as they are (no shell "
        'reads them): ["--n", "3", "two words"].',
    )
    environment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text='Environment variables of the program: {"MODE": "fast"}. Names: letters, '
        "digits and _, not starting with a digit, nor with `DRS_` (the app's own).",
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "uuid",
            "title",
            "program",
            "status",
            "server",
            "interpreter",
            "remote_directory",
            "remote_filename",
            "owner",
            "exit_code",
            "error",
            "started_at",
            "finished_at",
            "scheduler_id",
            "scheduler_state",
            "priority",
            "wait_reason",
            "submitted_at",
            "admitted_at",
            "created",
            "modified",
            "options",
            "logs_url",
            "results_url",
            "arguments",
            "environment",
            "inputs_url",
        ]
        read_only_fields = [
            "status",
            "exit_code",
            "error",
            "started_at",
            "finished_at",
            "scheduler_id",
            "scheduler_state",
            "wait_reason",
            "submitted_at",
            "admitted_at",
        ]
        extra_kwargs = {"program": {"trim_whitespace": False}}  # blanks may be part of it

    def validate_priority(self, value: int) -> int:
        request = self.context.get("request")
        current = self.instance.priority if self.instance is not None else 0
        if value != current and (request is None or not policy.may_set_priority(request.user)):
            raise serializers.ValidationError("Only staff may set a job's priority.")
        return value

    def validate_program(self, value: str) -> str:
        """CRLF and lone CR line ends become LF, as in the forms (the ORM keeps them)."""
        return normalize_newlines(value)

    def validate_arguments(self, value: list[str]) -> list[str]:
        try:
            return inputs.clean_arguments(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_environment(self, value: dict[str, str]) -> dict[str, str]:
        try:
            return inputs.clean_environment(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs: dict) -> dict:
        """The interpreter must be offered by the server; the file name must be a plain name."""

        def current(name, default=None):
            return attrs.get(name, getattr(self.instance, name, default))

        probe = Job(
            server=current("server"),
            interpreter=current("interpreter"),
            remote_filename=current("remote_filename", ""),
        )
        try:
            probe.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    def get_fields(self) -> dict:
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and "server" in fields:
            # A server the user may not use is refused like a missing one.
            fields["server"].queryset = policy.usable_servers(request.user)
        return fields

    @extend_schema_field(SubmissionOptionsSerializer)
    def get_options(self, job: Job) -> dict:
        options = job.options or {}
        names = ("timeout", "log_policy", "store_results", "resources")
        return {name: options.get(name) for name in names}

    @extend_schema_field(OpenApiTypes.URI)
    def get_logs_url(self, job: Job) -> str | None:
        return _url(self, "log-list", f"?job={job.pk}")

    @extend_schema_field(OpenApiTypes.URI)
    def get_results_url(self, job: Job) -> str | None:
        return _url(self, "result-list", f"?job={job.pk}")

    @extend_schema_field(OpenApiTypes.URI)
    def get_inputs_url(self, job: Job) -> str | None:
        return _url(self, "input-list", f"?job={job.pk}")


class InputSerializer(serializers.ModelSerializer):
    """An input file (multipart: ``job``, ``file``, optional ``path``)."""

    path = serializers.CharField(
        required=False,
        max_length=1024,
        trim_whitespace=False,
        help_text="Where the job finds it, relative to its directory (data/x.csv); default: "
        "the uploaded file's name. Absolute paths and '..' are refused.",
    )
    file = serializers.FileField(
        write_only=True, use_url=False, help_text="The content, sent as multipart/form-data."
    )
    download_url = serializers.SerializerMethodField(help_text="The file's content.")

    class Meta:
        model = Input
        fields = ["id", "job", "path", "file", "size", "sha256", "created", "download_url"]
        read_only_fields = ["size", "sha256"]
        validators = []  # an upload to an existing path replaces that input

    def get_fields(self) -> dict:
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and "job" in fields:
            fields["job"].queryset = policy.visible_jobs(request.user)  # others: "not found"
        return fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_download_url(self, row: Input) -> str | None:
        return _url(self, "input-download", pk=row.pk)


class LogSerializer(serializers.ModelSerializer):
    class Meta:
        model = Log
        fields = ["id", "job", "time", "stream", "content", "offset"]


MAX_ID = 2**63 - 1


class LogWindowQuerySerializer(serializers.Serializer):
    job = serializers.IntegerField(min_value=0, max_value=MAX_ID, help_text="Job id.")
    start = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_ID,
        help_text="The rows from this position (0 is the first row).",
    )
    after = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_ID, help_text="The rows after this row id."
    )
    before = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_ID, help_text="The rows before this row id."
    )
    count = serializers.IntegerField(
        required=False,
        default=200,
        min_value=1,
        max_value=WINDOW_ROWS,
        help_text=f"Rows wanted (default 200, at most {WINDOW_ROWS}).",
    )

    def validate(self, data: dict) -> dict:
        if sum(name in data for name in ("start", "after", "before")) > 1:
            raise serializers.ValidationError("Give at most one of start, after and before.")
        return data


class LogRowSerializer(serializers.Serializer):
    """A log row as the websockets send it."""

    id = serializers.IntegerField()
    time = serializers.DateTimeField()
    stream = serializers.ChoiceField(choices=Log.Stream.choices)
    content = serializers.CharField()
    offset = serializers.IntegerField()


class LogWindowSerializer(serializers.Serializer):
    total = serializers.IntegerField(
        allow_null=True,
        help_text="Rows in the log, up to the last one returned (only for the last page).",
    )
    start = serializers.IntegerField(
        allow_null=True, help_text="Position of the first row returned (null with after/before)."
    )
    results = LogRowSerializer(many=True)


class ResultSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField(help_text="The file's content.")

    class Meta:
        model = Result
        fields = [
            "id",
            "job",
            "remote_filename",
            "size",
            "sha256",
            "created",
            "modified",
            "download_url",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_download_url(self, result: Result) -> str | None:
        return _url(self, "result-download", pk=result.pk)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "enum": [0, 1, 2]},
            {"type": "string", "enum": ["none", "live", "total"]},
        ],
        "description": 'What to keep of the output: 0 or "none", 1 or "live" (rows as lines '
        'arrive, the default), 2 or "total" (one row per stream at the end).',
    }
)
class LogPolicyField(serializers.Field):
    """``LogPolicy`` by value (0, 1, 2) or by name ("none", "live", "total")."""

    NAMES = {"none": LogPolicy.LOG_NONE, "live": LogPolicy.LOG_LIVE, "total": LogPolicy.LOG_TOTAL}
    default_error_messages = {
        "invalid": 'Unknown log policy {value!r}: use 0, 1, 2 or "none", "live", "total".'
    }

    def to_internal_value(self, data) -> int:
        if isinstance(data, str) and data in self.NAMES:
            return self.NAMES[data]
        if isinstance(data, int) and not isinstance(data, bool) and data in self.NAMES.values():
            return data
        self.fail("invalid", value=data)

    def to_representation(self, value) -> int:
        return value


@extend_schema_field(
    {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": MAX_TIMEOUT,
        "nullable": True,
    }
)
class TimeoutField(serializers.FloatField):
    """Seconds, more than zero."""

    default_error_messages = {"not_positive": "The timeout must be a positive number of seconds."}

    def __init__(self, **kwargs) -> None:
        super().__init__(max_value=MAX_TIMEOUT, **kwargs)

    def to_internal_value(self, data) -> float:
        value = super().to_internal_value(data)
        if value <= 0:
            self.fail("not_positive")
        return value


class ResubmitSerializer(serializers.Serializer):
    """Body of ``resubmit``: the options of the previous submission are reused."""

    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
        help_text="Login password. Left out (or blank): the key you made for this server, else "
        "the server's shared login where you may use it. Sent to the worker encrypted, never "
        "stored in clear, never shown.",
    )
    username = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=150,
        help_text="Another login name on the server (needs the permission choose_login; "
        "default: your own login there).",
    )

    def validate(self, attrs: dict) -> dict:
        for name in ("password", "username"):
            if not attrs.get(name):
                attrs.pop(name, None)
        return attrs


class SubmitSerializer(ResubmitSerializer):
    """Body of ``submit``: how to log in, when to give up, what to keep."""

    timeout = TimeoutField(
        required=False,
        allow_null=True,
        help_text="Stop the job after this many seconds (default: no limit).",
    )
    log_policy = LogPolicyField(required=False)
    store_results = serializers.ListField(
        child=serializers.CharField(max_length=1024, trim_whitespace=False),
        required=False,
        max_length=1000,
        help_text='Which new or modified files to keep: fnmatch patterns, "!pattern" excludes '
        "(default: all of them; [] keeps none).",
    )
    resources = ResourcesField(
        required=False,
        help_text="On a server with a batch scheduler: partition, walltime, cpus, memory, "
        "gpus, account and extra directives, over the server's defaults (the timeout is the "
        "walltime when none is set).",
        scheduler=lambda field: (
            getattr(field.parent.context.get("job"), "server", None)
            and field.parent.context["job"].server.scheduler
        ),
    )


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField(help_text="Who did it (username); null: a worker.")

    class Meta:
        model = Event
        fields = [
            "id",
            "time",
            "action",
            "job",
            "job_title",
            "server",
            "actor",
            "from_state",
            "to_state",
            "login",
            "reason",
            "client",
        ]

    @extend_schema_field(OpenApiTypes.STR)
    def get_actor(self, event: Event) -> str | None:
        return event.actor.get_username() if event.actor is not None else None


class AccountSerializer(serializers.ModelSerializer):
    """A user's login name and key on one server ("My SSH keys")."""

    login = serializers.CharField(read_only=True, help_text="The login name jobs run as.")
    has_key = serializers.SerializerMethodField(help_text="Whether a key pair was made.")

    class Meta:
        model = ServerAccount
        fields = ["id", "server", "username", "login", "has_key", "public_key", "installed"]
        read_only_fields = ["public_key", "installed"]

    def get_fields(self) -> dict:
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and "server" in fields:
            fields["server"].queryset = policy.usable_servers(request.user).filter(local=False)
        return fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_has_key(self, account: ServerAccount) -> bool:
        return bool(account.public_key)


class InstallKeySerializer(serializers.Serializer):
    """Body of ``install``: the password that adds the key on the host, once."""

    password = serializers.CharField(
        write_only=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
        help_text="Your password on the server; used once, never stored.",
    )


class RemoveKeySerializer(serializers.Serializer):
    """Body of ``remove_key``: a password, when the key itself can no longer log in."""

    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
        help_text="Your password on the server (default: log in with the key itself).",
    )


class ParameterSerializer(serializers.Serializer):
    """One parameter of a template: how to fill it and how it reaches the program."""

    name = serializers.CharField(help_text="Its key in the body of run/.")
    label = serializers.CharField()
    type = serializers.ChoiceField(
        choices=["text", "integer", "float", "choice", "boolean", "file"],
        help_text="A file is sent as multipart/form-data.",
    )
    choices = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="The values of a choice."
    )
    default = serializers.CharField(allow_null=True)
    help = serializers.CharField()
    required = serializers.BooleanField()
    passed_as = serializers.ChoiceField(choices=["option", "positional", "environment"])
    target = serializers.CharField(
        allow_null=True, help_text="The option (--bins) or the variable (BINS) it sets."
    )


class TemplateSerializer(serializers.ModelSerializer):
    parameters = serializers.SerializerMethodField(
        help_text="The form to fill, in order: POST the values to run/."
    )
    servers = serializers.SerializerMethodField(help_text="Ids of the servers it may run on.")

    class Meta:
        model = JobTemplate
        fields = ["id", "name", "description", "interpreter", "servers", "parameters"]

    @extend_schema_field(ParameterSerializer(many=True))
    def get_parameters(self, template: JobTemplate) -> list[dict]:
        return jobtemplates.describe(template)

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_servers(self, template: JobTemplate) -> list[int]:
        request = self.context.get("request")
        servers = policy.template_servers(request.user, template) if request else []
        return sorted(s.pk for s in servers)


class TemplateRunSerializer(serializers.Serializer):
    """The body of run/: where to run it, how to log in, and one key per parameter
    (see the template's ``parameters``); multipart/form-data when a file is sent."""

    server = serializers.IntegerField(help_text="One of the template's servers.")
    title = serializers.CharField(required=False, help_text="Default: the template's name.")
    password = serializers.CharField(
        required=False, write_only=True, style={"input_type": "password"}
    )
