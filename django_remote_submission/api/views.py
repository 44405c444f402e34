"""The API's viewsets: servers, interpreters, jobs (with submit, cancel, resubmit), logs, results.

    router.register("jobs", JobViewSet, basename="job")

    POST jobs/{id}/submit/    {"password": "...", "timeout": 60, "log_policy": "live",
                               "store_results": ["*.csv"]}       -> 202, the job
    POST jobs/{id}/cancel/                                       -> 202, the job
    POST jobs/{id}/resubmit/  {"password": "..."}                -> 202, the job
    GET  results/{id}/download/                                  -> the file, streamed

Work on hosts is queued as Celery tasks (``tasks.py``); the answers are 202 with the job as
it stands. A job that is submitted or running cannot be edited, deleted or submitted (409).
"""

from __future__ import annotations

import posixpath

from django.apps import apps
from django.db import transaction
from django.db.models import ProtectedError
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response

from ..forms import send_cancel, send_submit
from ..models import ACTIVE_STATES, Interpreter, Job, Log, Result, Server
from .exceptions import Conflict, NotQueued
from .filters import InterpreterFilter, JobFilter, LogFilter, ResultFilter, ServerFilter
from .pagination import AfterPagination, StandardPagination
from .permissions import IsOwnerOrStaff, IsStaffOrReadOnly, visible_to
from .schemas import ApiSchema
from .serializers import (
    InterpreterSerializer,
    JobSerializer,
    LogSerializer,
    ResubmitSerializer,
    ResultSerializer,
    ServerSerializer,
    SubmitSerializer,
)

RESUBMITTED_OPTIONS = ("timeout", "log_policy", "store_results")


class ApiViewMixin:
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
        # Token first, so that an anonymous request answers 401 with WWW-Authenticate: Token.
        classes = [SessionAuthentication]
        if apps.is_installed("rest_framework.authtoken"):
            from rest_framework.authentication import TokenAuthentication

            classes.insert(0, TokenAuthentication)
        return [cls() for cls in classes]


def api_action(**kwargs):
    """DRF's ``@action`` with the app's schema class: ``@extend_schema`` on an action builds
    on the schema it finds there, else on the project's ``DEFAULT_SCHEMA_CLASS``."""
    return action(schema=ApiSchema(), **kwargs)


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
    """Hosts that run jobs, and how to log in to them. Readable by users, writable by staff."""

    queryset = Server.objects.prefetch_related("interpreters")
    serializer_class = ServerSerializer
    permission_classes = [IsAuthenticated, IsStaffOrReadOnly]
    filterset_class = ServerFilter
    ordering_fields = ["id", "title", "hostname", "created", "modified"]
    ordering = ["title", "id"]
    conflicts = {"destroy": "Jobs use this server; delete them first."}

    def perform_destroy(self, instance: Server) -> None:
        _delete_protected(instance, self.conflicts["destroy"])


class InterpreterViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Executables that run a job's program. Readable by users, writable by staff."""

    queryset = Interpreter.objects.all()
    serializer_class = InterpreterSerializer
    permission_classes = [IsAuthenticated, IsStaffOrReadOnly]
    filterset_class = InterpreterFilter
    ordering_fields = ["id", "name", "created", "modified"]
    ordering = ["name", "id"]
    conflicts = {"destroy": "Jobs use this interpreter; delete them first."}

    def perform_destroy(self, instance: Interpreter) -> None:
        _delete_protected(instance, self.conflicts["destroy"])


def _refuse_if_active(job: Job, doing: str) -> None:
    if job.status in ACTIVE_STATES:
        raise Conflict(
            f"The job is {job.status}: it cannot be {doing}. Cancel it first, or "
            "wait until it has finished."
        )


def _queued(error: str) -> None:
    if error:
        raise NotQueued(error)


class JobViewSet(ApiViewMixin, viewsets.ModelViewSet):
    """Programs to run on a server; a user's own jobs (staff: all jobs)."""

    serializer_class = JobSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    filterset_class = JobFilter
    ordering_fields = ["id", "title", "status", "created", "modified", "started_at", "finished_at"]
    ordering = ["-created", "-id"]
    conflicts = {
        "update": "The job is submitted or running.",
        "partial_update": "The job is submitted or running.",
        "destroy": "The job is submitted or running.",
        "submit": "The job is already submitted or running.",
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
        return visible_to(Job.objects.all(), self.request.user)

    def get_serializer_class(self):
        # The bodies of the actions (also what the browsable API and OPTIONS show for them).
        return {"submit": SubmitSerializer, "resubmit": ResubmitSerializer}.get(
            self.action, JobSerializer
        )

    def perform_create(self, serializer: JobSerializer) -> None:
        serializer.save(owner=self.request.user)

    def update(self, request, *args, **kwargs) -> Response:
        _refuse_if_active(self.get_object(), "edited")
        return super().update(request, *args, **kwargs)

    def perform_update(self, serializer: JobSerializer) -> None:
        with transaction.atomic():  # the lock orders this edit and a submission's lease
            job = Job.objects.select_for_update().get(pk=serializer.instance.pk)
            _refuse_if_active(job, "edited")
            serializer.save()

    def perform_destroy(self, instance: Job) -> None:
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=instance.pk)
            _refuse_if_active(job, "deleted")
            files = [r.local_file for r in job.results.all() if r.local_file]
            job.delete()
        for file in files:
            file.storage.delete(file.name)

    def _accepted(self, job: Job) -> Response:
        job.refresh_from_db()
        data = JobSerializer(job, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

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
        _refuse_if_active(job, "submitted again")
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        _queued(send_submit(job, **body.validated_data))
        return self._accepted(job)

    @extend_schema(
        summary="Run a finished job again",
        description="Queue the job again with the options of its latest submission (`timeout`, "
        "`log_policy`, `store_results`). Answers 202 with the job.",
        request=ResubmitSerializer,
        responses={202: OpenApiResponse(JobSerializer, "Queued.")},
    )
    @api_action(detail=True, methods=["post"])
    def resubmit(self, request, pk=None) -> Response:
        job = self.get_object()
        if not job.is_final:
            raise Conflict(
                f"The job is {job.status}: only a finished job can be resubmitted"
                + (" (use submit)." if job.status == Job.STATUS.initial else ".")
            )
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        previous = job.options or {}
        options = {k: previous[k] for k in RESUBMITTED_OPTIONS if previous.get(k) is not None}
        _queued(send_submit(job, **options, **body.validated_data))
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
        if job.is_final:
            raise Conflict(f"The job has already finished ({job.status}).")
        _queued(send_cancel(job))
        return self._accepted(job)


class LogViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Output of the user's jobs, oldest first. Follow a job with ``?job={id}&after={after}``."""

    serializer_class = LogSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    pagination_class = AfterPagination
    # Always in id order: that order is what makes ``after`` a cursor.
    filter_backends = [DjangoFilterBackend]
    filterset_class = LogFilter

    def get_queryset(self):
        return visible_to(Log.objects.all(), self.request.user, "job__owner").order_by("id")


class ResultViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Files the user's jobs wrote, copied from the hosts."""

    serializer_class = ResultSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    filterset_class = ResultFilter
    ordering_fields = ["id", "remote_filename", "size", "created"]
    ordering = ["job", "remote_filename", "id"]

    def get_queryset(self):
        return visible_to(Result.objects.all(), self.request.user, "job__owner")

    def perform_content_negotiation(self, request, force=False):
        # A download is sent as it is, whatever the Accept header; only its errors are rendered.
        return super().perform_content_negotiation(request, force or self.action == "download")

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
        result = self.get_object()
        try:
            handle = result.local_file.open("rb")
        except (FileNotFoundError, ValueError):
            raise NotFound("The file of this result is no longer stored.") from None
        return FileResponse(
            handle,
            as_attachment=True,
            content_type="application/octet-stream",
            filename=posixpath.basename(result.remote_filename) or "result",
        )
