"""URLs of the API: the viewsets under a router, the schema and its docs.

    # the app's urls.py, or a project's
    path("api/", include("django_remote_submission.api.urls"))

    reverse("drs_api:job-detail", kwargs={"pk": 1})    # inside a namespace: "<ns>:drs_api:..."

Routes: ``servers/``, ``interpreters/``, ``jobs/`` (+ ``{id}/submit/``, ``{id}/cancel/``,
``{id}/resubmit/``), ``logs/`` (+ ``window/``), ``results/`` (+ ``{id}/download/``),
``inputs/`` (multipart upload, + ``{id}/download/``), ``templates/`` (+ ``{id}/run/``),
``events/``, ``accounts/``, ``tokens/`` (with the tokens app), ``schema/`` (OpenAPI 3) and
``docs/`` (Swagger UI). Any other path below answers a JSON 404.
"""

from django.apps import apps
from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter

from .schemas import DocsView, SchemaView
from .views import (
    AccountViewSet,
    EventViewSet,
    InputViewSet,
    InterpreterViewSet,
    JobViewSet,
    LogViewSet,
    ResultViewSet,
    ServerViewSet,
    TemplateViewSet,
    not_found,
)

app_name = "drs_api"

router = DefaultRouter()
router.include_format_suffixes = False
router.register("servers", ServerViewSet, basename="server")
router.register("interpreters", InterpreterViewSet, basename="interpreter")
router.register("jobs", JobViewSet, basename="job")
router.register("logs", LogViewSet, basename="log")
router.register("results", ResultViewSet, basename="result")
router.register("inputs", InputViewSet, basename="input")
router.register("templates", TemplateViewSet, basename="template")
router.register("events", EventViewSet, basename="event")
router.register("accounts", AccountViewSet, basename="account")
if apps.is_installed("django_remote_submission.tokens"):
    from ..tokens.api import ApiTokenViewSet

    router.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path("schema/", SchemaView.as_view(api_patterns=router.urls), name="schema"),
    path("docs/", DocsView.as_view(), name="docs"),
    path("", include(router.urls)),
    # Ids the routes refuse (e.g. "0.5"), unknown paths: JSON 404s too. Only paths ending
    # with "/", so that APPEND_SLASH still redirects "jobs" to "jobs/".
    re_path(r"^[\s\S]*/$", not_found),  # [\s\S]: a newline in the path too
]
