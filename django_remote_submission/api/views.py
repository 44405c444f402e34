"""The API's viewsets: servers, interpreters, jobs (with submit, cancel, resubmit), logs, results.

    router.register("jobs", JobViewSet, basename="job")

    POST jobs/{id}/submit/    {"password": "...", "timeout": 60, "log_policy": "live",
                               "store_results": ["*.csv"]}       -> 202, the job
    POST jobs/{id}/cancel/                                       -> 202, the job
    POST jobs/{id}/resubmit/  {"password": "..."}                -> 202, the job
    GET  results/{id}/download/                                  -> the file, streamed

Work on hosts is queued as Celery tasks (``tasks.py``); the answers are 202 with the job as
it stands. A job that is submitted, queued or running cannot be edited, deleted or submitted (409).
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from django.apps import apps
from django.db.models import ProtectedError, Q
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import DjangoModelPermissions, IsAuthenticated
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response

from .. import inputs, logs, policy, services
from ..forms import TemplateJobForm
from ..models import (
    Event,
    Input,
    Interpreter,
    Job,
    JobTemplate,
    Log,
    LogArchive,
    Result,
    Server,
    ServerAccount,
)
from ..remote import RemoteError
from .exceptions import BadGateway, Conflict, NotQueued
from .filters import (
    EventFilter,
    InputFilter,
    InterpreterFilter,
    JobFilter,
    LogFilter,
    ResultFilter,
    ServerFilter,
)
from .pagination import AfterPagination, StandardPagination
from .permissions import CanActOnJob, TokenScope
from .schemas import ApiSchema
from .serializers import (
    AccountSerializer,
    EventSerializer,
    InputSerializer,
    InstallKeySerializer,
    InterpreterSerializer,
    JobSerializer,
    LogSerializer,
    LogWindowQuerySerializer,
    LogWindowSerializer,
    RemoveKeySerializer,
    ResubmitSerializer,
    ResultSerializer,
    ServerSerializer,
    SubmitSerializer,
    TemplateRunSerializer,
    TemplateSerializer,
)

if TYPE_CHECKING:  # what the mixin is mixed into, for the type checker
    _View = GenericAPIView
else:
    _View = object


class ApiViewMixin(_View):
    """Everything the views need, set here: the project's ``REST_FRAMEWORK`` does not matter."""

    permission_classes = [IsAuthenticated]
    pagination_class = StandardPagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]
    schema = ApiSchema()
    # action -> why it may answer 409 (documented in the schema)
    conflicts: dict[str, str] = {}

    def get_authenticators(self) -> list:
        return [cls() for cls in authentication_classes()]

    def get_permissions(self) -> list:
        return [TokenScope(), *super().get_permissions()]


def authentication_classes(*extra) -> list[type]:
    """API tokens (the tokens app), ``rest_framework.authtoken`` tokens, ``extra``, sessions:
    those installed. A token class first, so that an anonymous request answers 401 with its
    ``WWW-Authenticate``."""
    classes = []
    if apps.is_installed("django_remote_submission.tokens"):
        from ..tokens.authentication import ApiTokenAuthentication

        classes.append(ApiTokenAuthentication)
    if apps.is_installed("rest_framework.authtoken"):
        from rest_framework.authentication import TokenAuthentication

        classes.append(TokenAuthentication)
    return [*classes, *extra, SessionAuthentication]


def api_action(**kwargs):
    """DRF's ``@action`` with the app's schema class: ``@extend_schema`` on an action builds
    on the schema it finds there, else on the project's ``DEFAULT_SCHEMA_CLASS``."""
    return action(schema=ApiSchema(), **kwargs)


def api_method(**kwargs):
    """``@extend_schema`` for a viewset's own method (``create``, ``destroy``, ...), built on
    the app's schema class as ``api_action`` does for actions."""

    def decorate(method):
        method.kwargs = {"schema": ApiSchema}
        return extend_schema(**kwargs)(method)

    return decorate


@csrf_exempt  # nothing is changed; a CSRF check would answer an HTML 403 instead
def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other path under the API: a JSON 404, like the API's own, rather than an HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


def _delete_protected(instance, message: str) -> None:
    try:
        instance.delete()
    except ProtectedError:
        raise Conflict(message) from None


class ServerViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Hosts that run jobs, and how to log in to them: the servers a user may use (all with
    ``view_server``); changed by users with the model permissions."""

    queryset = Server.objects.prefetch_related("interpreters", "allowed_groups")
    serializer_class = ServerSerializer
    permission_classes = [IsAuthenticated, DjangoModelPermissions]
    filterset_class = ServerFilter
    ordering_fields = ["id", "title", "hostname", "created", "modified"]
    ordering = ["title", "id"]
    conflicts = {"destroy": "Jobs use this server; delete them first."}

    def get_queryset(self):
        return policy.visible_servers(self.request.user, super().get_queryset())

    def perform_destroy(self, instance: Server) -> None:
        _delete_protected(instance, self.conflicts["destroy"])


class InterpreterViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Executables that run a job's program; changed by users with the model permissions."""

    queryset = Interpreter.objects.all()
    serializer_class = InterpreterSerializer
    permission_classes = [IsAuthenticated, DjangoModelPermissions]
    filterset_class = InterpreterFilter
    ordering_fields = ["id", "name", "created", "modified"]
    ordering = ["name", "id"]
    conflicts = {"destroy": "Jobs use this interpreter; delete them first."}

    def perform_destroy(self, instance: Interpreter) -> None:
        _delete_protected(instance, self.conflicts["destroy"])


def _service(call, *args, **kwargs):
    """Call a ``services`` function; its refusals become API errors (403, 409, 503)."""
    try:
        done = call(*args, **kwargs)
    except policy.Refused as exc:
        raise PermissionDenied(str(exc)) from None
    except services.JobBusy as exc:
        raise Conflict(str(exc)) from None
    if isinstance(done, services.Queued) and done.error:
        raise NotQueued(done.error)
    return done


class JobViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Programs to run on a server: a user's own jobs (all jobs with ``view_job``)."""

    serializer_class = JobSerializer
    permission_classes = [IsAuthenticated, CanActOnJob]
    filterset_class = JobFilter
    ordering_fields = ["id", "title", "status", "created", "modified", "started_at", "finished_at"]
    ordering = ["-created", "-id"]
    conflicts = {
        "update": "The job is submitted, queued or running.",
        "partial_update": "The job is submitted, queued or running.",
        "destroy": "The job is submitted, queued or running.",
        "submit": "The job is already submitted, queued or running.",
        "resubmit": "The job has not finished (only success, failure or cancelled jobs can be "
        "resubmitted; use submit for a new job).",
        "cancel": "The job has already finished.",
    }
    # action -> what is not done when the task queue cannot be reached (503)
    queued = {
        "submit": "Not queued (the job, if it had never run, fails with the reason).",
        "resubmit": "Not queued; the job is left as it was.",
        "cancel": "The cancel was not queued; the job goes on.",
    }

    def get_queryset(self):
        return policy.visible_jobs(self.request.user).select_related("server", "owner")

    def get_serializer_class(self):
        # The bodies of the actions (also what the browsable API and OPTIONS show for them).
        return {"submit": SubmitSerializer, "resubmit": ResubmitSerializer}.get(
            self.action, JobSerializer
        )

    def perform_create(self, serializer: JobSerializer) -> None:
        request = self.request
        job = _service(services.create, request.user, request=request, **serializer.validated_data)
        serializer.instance = job

    def perform_update(self, serializer: JobSerializer) -> None:
        job = serializer.instance
        request = self.request
        _service(services.edit, job, request.user, serializer.validated_data, request=request)
        job.refresh_from_db()

    def perform_destroy(self, instance: Job) -> None:
        _service(services.delete, instance, self.request.user, request=self.request)

    def _accepted(self, job: Job) -> Response:
        job.refresh_from_db()
        data = JobSerializer(job, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    def _body(self, job: Job) -> dict:
        context = {**self.get_serializer_context(), "job": job}
        body = self.get_serializer(data=self.request.data, context=context)
        body.is_valid(raise_exception=True)
        return body.validated_data

    @extend_schema(
        summary="Submit the job",
        description="Queue the job to run on its server. Answers 202 with the job; follow its "
        "`status` and its logs. A finished job may be submitted again with new "
        "options (its previous logs and results are replaced).",
        request=SubmitSerializer,
        responses={202: OpenApiResponse(JobSerializer, "Queued.")},
    )
    @api_action(detail=True, methods=["post"])
    def submit(self, request, pk=None) -> Response:
        job = self.get_object()
        _service(services.submit, job, request.user, request=request, **self._body(job))
        return self._accepted(job)

    @extend_schema(
        summary="Run a finished job again",
        description="Queue the job again with the options of its latest submission (`timeout`, "
        "`log_policy`, `store_results`, `resources`); the login is decided again for whoever "
        "resubmits. Answers 202 with the job.",
        request=ResubmitSerializer,
        responses={202: OpenApiResponse(JobSerializer, "Queued.")},
    )
    @api_action(detail=True, methods=["post"])
    def resubmit(self, request, pk=None) -> Response:
        job = self.get_object()
        _service(services.resubmit, job, request.user, request=request, **self._body(job))
        return self._accepted(job)

    @extend_schema(
        summary="Cancel the job",
        description="Stop the job's processes on the host (TERM, then KILL) and mark it "
        "cancelled; a job not submitted yet is cancelled at once. Answers 202.",
        request=None,
        responses={202: OpenApiResponse(JobSerializer, "Cancellation queued.")},
    )
    @api_action(detail=True, methods=["post"])
    def cancel(self, request, pk=None) -> Response:
        job = self.get_object()
        _service(services.cancel, job, request.user, request=request)
        return self._accepted(job)


class LogViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Output of the user's jobs, oldest first. Follow a job with ``?job={id}&after={after}``.

    The log of a job whose rows were moved into an archive file (see ``archive.py``) is read
    from it with ``job=``, the same rows with the same ids; without ``job=`` only the rows
    still in the database are listed.
    """

    serializer_class = LogSerializer
    permission_classes = [IsAuthenticated]
    pagination_class = AfterPagination
    # Always in id order: that order is what makes ``after`` a cursor.
    filter_backends = [DjangoFilterBackend]
    filterset_class = LogFilter
    # action -> what its 404 means (documented in the schema, with its 400)
    queries = {"window": "No such job, or one that is not yours."}

    def get_queryset(self):
        logs = policy.visible_jobs(self.request.user, Log.objects.all(), "job__owner")
        return logs.order_by("id")

    def list(self, request, *args, **kwargs) -> Response:
        queryset = self.filter_queryset(self.get_queryset())  # answers 400 on a bad filter
        filters = self.filterset_class(request.query_params, queryset=queryset, request=request)
        wanted = filters.form.cleaned_data if filters.is_valid() else {}
        job = wanted.get("job")
        if job is None or not LogArchive.objects.filter(job=job).exists():
            page = self.paginate_queryset(queryset)
            return self.get_paginated_response(self.get_serializer(page, many=True).data)
        stream = wanted.get("stream")
        rows = logs.read(job.pk, wanted.get("after") or 0, streams=[stream] if stream else None)
        size = self.paginator.get_page_size(request)
        page = self.paginate_queryset([_log(job, row) for row in itertools.islice(rows, size + 1)])
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="A page of a job's log, for a view that shows part of a long log",
        description="Without `start`, `after` or `before`: the last page (the rows from the "
        "largest multiple of `count` below the number of rows) and `total`, the number of "
        "rows; a websocket given the last row's id as `after` streams the rows that follow "
        "(positions `total`, `total + 1`, ...). With `after` or `before`: the `count` rows "
        "beside a row the view has (an index range read). With `start`: the rows from that "
        "position (an offset in the index: a jump). Rows are those of the websockets, oldest "
        "first; the job is refused (404) unless the user may see it.",
        parameters=[LogWindowQuerySerializer],
        responses={200: LogWindowSerializer},
    )
    @api_action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def window(self, request) -> Response:
        query = LogWindowQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        wanted = query.validated_data
        job = policy.visible_jobs(request.user).filter(pk=wanted["job"]).first()
        if job is None:
            raise NotFound("No such job.")
        found = logs.window(
            job.pk,
            start=wanted.get("start"),
            after=wanted.get("after"),
            before=wanted.get("before"),
            count=wanted["count"],
        )
        rows = found.pop("logs")
        return Response({**found, "results": rows})


def _log(job: Job, row: dict) -> Log:
    """An archived row as a (not saved) Log, for the serializer."""
    return Log(job=job, **{**row, "time": datetime.fromisoformat(row["time"])})


class _DownloadMixin:
    """A ``download`` action sending a stored file (a result's, an input's) as an attachment,
    whatever the Accept header (only its errors are rendered). ``stored_file(obj)`` says
    which: (the stored file, the path its name comes from, what it is)."""

    action: str | None
    get_object: Callable

    def stored_file(self, obj) -> tuple:
        raise NotImplementedError

    def perform_content_negotiation(self, request, force=False):
        parent = super()
        return parent.perform_content_negotiation(request, force or self.action == "download")

    @extend_schema(
        summary="Download the file",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, "The file's content, as an attachment."
            )
        },
    )
    @api_action(detail=True, methods=["get"])
    def download(self, request, pk=None) -> FileResponse:
        stored, path, what = self.stored_file(self.get_object())
        try:
            handle = stored.open("rb")
        except (FileNotFoundError, ValueError):
            raise NotFound(f"The file of this {what} is no longer stored.") from None
        return FileResponse(
            handle,
            as_attachment=True,
            content_type="application/octet-stream",
            filename=posixpath.basename(path) or what,
        )


class ResultViewSet(_DownloadMixin, ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Files the user's jobs wrote, copied from the hosts."""

    serializer_class = ResultSerializer
    permission_classes = [IsAuthenticated]
    filterset_class = ResultFilter
    ordering_fields = ["id", "remote_filename", "size", "created"]
    ordering = ["job", "remote_filename", "id"]

    def get_queryset(self):
        return policy.visible_jobs(self.request.user, Result.objects.all(), "job__owner")

    def stored_file(self, obj: Result) -> tuple:
        return obj.local_file, obj.remote_filename, "result"


class InputViewSet(
    _DownloadMixin,
    ApiViewMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.ReadOnlyModelViewSet,
):
    """Files given to the user's jobs, copied into the job's directory before it runs.
    Upload with multipart/form-data: ``job``, ``file`` and an optional ``path``."""

    serializer_class = InputSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filterset_class = InputFilter
    ordering_fields = ["id", "path", "size", "created"]
    ordering = ["job", "path", "id"]
    conflicts = {
        "create": "The job is submitted, queued or running.",
        "destroy": "The job is submitted, queued or running.",
    }

    def get_queryset(self):
        return policy.visible_jobs(self.request.user, Input.objects.all(), "job__owner")

    def initialize_request(self, request, *args, **kwargs):
        inputs.limit_uploads(request)  # before anything reads the body
        return super().initialize_request(request, *args, **kwargs)

    def create(self, request, *args, **kwargs) -> Response:
        request.data  # noqa: B018 (reads the body: the upload limit says what it dropped)
        refused = inputs.refused_uploads(request._request)
        if refused:
            raise ValidationError({field: [message] for field, message in refused.items()})
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer: InputSerializer) -> None:
        data = serializer.validated_data
        path = data.get("path") or data["file"].name
        try:
            serializer.instance = _service(
                services.add_input,
                data["job"],
                self.request.user,
                path,
                data["file"],
                request=self.request,
            )
        except inputs.InputRefused as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None

    def perform_destroy(self, instance: Input) -> None:
        _service(services.remove_input, instance, self.request.user, request=self.request)

    def stored_file(self, obj: Input) -> tuple:
        return obj.file, obj.path, "input"


class TemplateViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Job templates offered to the user, with their parameters; ``run/`` makes a job."""

    serializer_class = TemplateSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    ordering_fields = ["name", "id"]
    ordering = ["name", "id"]
    queued = {"run": "The job is made, but not queued (it fails with the reason)."}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return JobTemplate.objects.none()
        return policy.usable_templates(self.request.user).prefetch_related("parameters")

    def initialize_request(self, request, *args, **kwargs):
        inputs.limit_uploads(request)  # before anything reads the body
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        summary="Run the template",
        description="Make a job from the template with these values and queue it. Values are "
        "checked by the parameters' types: 400 with one error list per field. Answers 202 "
        "with the job.",
        request={
            "application/json": TemplateRunSerializer,
            "multipart/form-data": TemplateRunSerializer,
        },
        responses={202: OpenApiResponse(JobSerializer, "Queued.")},
    )
    @api_action(detail=True, methods=["post"])
    def run(self, request, pk=None) -> Response:
        template = self.get_object()
        data = request.data
        if hasattr(data, "dict"):  # a multipart body: one value per key
            data = data.dict()
        if not isinstance(data, dict):
            raise ValidationError({"non_field_errors": ["Send an object of values."]})
        data = {k: v for k, v in data.items() if k not in request.FILES}
        form = TemplateJobForm(template, data, request.FILES, user=request.user)
        refused = inputs.refused_uploads(request._request)
        if not form.is_valid() or refused:
            errors = {k: list(v) for k, v in form.errors.items()}
            errors.update({field: [message] for field, message in refused.items()})
            if "__all__" in errors:
                errors["non_field_errors"] = errors.pop("__all__")
            raise ValidationError(errors)
        job, queued = _service(form.save, request=request)
        if queued.error:
            raise NotQueued(queued.error)
        context = self.get_serializer_context()
        return Response(JobSerializer(job, context=context).data, status=status.HTTP_202_ACCEPTED)


class EventViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """The audit trail: what happened to the user's jobs and keys, oldest first (every event
    with ``view_event``). Filter with ``?job={id}``."""

    serializer_class = EventSerializer
    permission_classes = [IsAuthenticated]
    filterset_class = EventFilter
    ordering_fields = ["id", "time"]
    ordering = ["time", "id"]

    def get_queryset(self):
        user = self.request.user
        events = Event.objects.select_related("actor")
        if user.has_perm("django_remote_submission.view_event"):
            return events
        jobs = policy.visible_jobs(user).values("pk")
        return events.filter(Q(job__in=jobs) | Q(actor=user, job__isnull=True))


class AccountViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Your login name and SSH key on each server ("My SSH keys"): make a key, install it with
    your password once, and jobs there need no password."""

    serializer_class = AccountSerializer
    permission_classes = [IsAuthenticated]
    filter_backends = [OrderingFilter]
    ordering = ["server__title", "id"]
    conflicts = {"create": "You have an account on this server already: change it instead."}
    # action -> what a 502 means (the host refused or failed)
    host_errors = {
        "install": "The host refused the login or could not add the key.",
        "remove_key": "The host refused the login or could not remove the key.",
    }

    def get_queryset(self):
        return ServerAccount.objects.filter(user=self.request.user).select_related("server")

    def get_serializer_class(self):
        return {"install": InstallKeySerializer, "remove_key": RemoveKeySerializer}.get(
            self.action, AccountSerializer
        )

    def perform_create(self, serializer: AccountSerializer) -> None:
        data = serializer.validated_data
        if self.get_queryset().filter(server=data["server"]).exists():
            raise Conflict(self.conflicts["create"])
        serializer.instance = self._set_login(data["server"], data.get("username", ""))

    def perform_update(self, serializer: AccountSerializer) -> None:
        account = serializer.instance
        username = serializer.validated_data.get("username", account.username)
        serializer.instance = self._set_login(account.server, username)

    def _set_login(self, server, username: str) -> ServerAccount:
        return _service(
            services.set_login, self.request.user, server, username, request=self.request
        )

    def _key_action(self, work, *args) -> Response:
        account = self.get_object()
        try:
            _service(work, self.request.user, account.server, *args, request=self.request)
        except RemoteError as exc:
            raise BadGateway(str(exc)) from None
        account.refresh_from_db()
        return Response(AccountSerializer(account, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Make a new key pair",
        description="Replaces any key of this account; install the new one with `install`.",
        request=None,
        responses={200: AccountSerializer},
    )
    @api_action(detail=True, methods=["post"])
    def key(self, request, pk=None) -> Response:
        return self._key_action(services.make_key)

    @extend_schema(
        summary="Install the key on the server",
        description="Logs in once with your password and adds the public key to "
        "~/.ssh/authorized_keys (other keys kept). 502 when the host refuses.",
        request=InstallKeySerializer,
        responses={200: AccountSerializer},
    )
    @api_action(detail=True, methods=["post"])
    def install(self, request, pk=None) -> Response:
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._key_action(services.install_key, body.validated_data["password"])

    @extend_schema(
        summary="Remove the key from the server and forget it",
        request=RemoveKeySerializer,
        responses={200: AccountSerializer},
    )
    @api_action(detail=True, methods=["post"], url_path="remove-key")
    def remove_key(self, request, pk=None) -> Response:
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        password = body.validated_data.get("password") or None
        return self._key_action(services.remove_key, password)
