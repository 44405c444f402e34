"""The OpenAPI description of the API (drf-spectacular), including the websocket messages.

    class JobViewSet(ApiViewMixin, ModelViewSet):   # ApiViewMixin sets schema = ApiSchema()
        conflicts = {"destroy": "The job is running."}   # documented as 409 answers

    SchemaView.as_view()    # GET api/schema/: this app's endpoints only, with SCHEMA_SETTINGS

``ApiSchema`` adds the error answers (400, 401, 403, 404, 409, 415, 502, 503) to every operation, so
clients generated from the schema know them and a schema checker can hold the API to them.
"""

from __future__ import annotations

import copy

from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.settings import patched_settings
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .. import __version__
from ..models import Log, Status

ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "What went wrong."}},
}
VALIDATION_ERROR = {
    "type": "object",
    "additionalProperties": {},
    "description": 'Field name (or "non_field_errors") -> list of messages, e.g. '
    '`{"interpreter": ["The interpreter bash is not offered by the server HPC."]}`; '
    'list fields give `{"index": [messages]}`; a malformed body gives `detail`.',
}
WRITE_METHODS = ("POST", "PUT", "PATCH")


class ApiSchema(AutoSchema):
    """spectacular's AutoSchema plus the error answers an operation can give."""

    def _component(self, name: str, schema: dict) -> dict:
        component = ResolvedComponent(
            name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name
        )
        self.registry.register_on_missing(component)
        return component.ref

    def error_responses(self) -> dict[str, tuple[dict, str]]:
        error = self._component("Error", ERROR)
        codes = {
            "401": (
                error,
                "Not authenticated, or the token is invalid, revoked or expired: send "
                "`Authorization: Bearer <API token>` or use a session.",
            ),
            "403": (
                error,
                "Not allowed: the access policy refused (a server, login name or credential "
                "you may not use), or the model permission to change servers and "
                "interpreters is missing; a read-only API token only reads; session "
                "requests that change data need a CSRF token.",
            ),
        }
        if "{" in self.path:
            codes["404"] = (error, "No such object, or one that is not yours.")
        if self.method == "GET" and self._is_list_view():
            codes["400"] = (
                self._component("ValidationError", VALIDATION_ERROR),
                "Invalid filter value.",
            )
            codes["404"] = (error, "No such page.")
        if self.method in WRITE_METHODS:
            codes["400"] = (
                self._component("ValidationError", VALIDATION_ERROR),
                "Invalid input, with the errors of each field.",
            )
            codes["415"] = (error, "The body is not JSON.")
        missing = getattr(self.view, "queries", {}).get(getattr(self.view, "action", None))
        if missing:  # an action that reads its query string
            codes["400"] = (
                self._component("ValidationError", VALIDATION_ERROR),
                "Invalid query, with the errors of each parameter.",
            )
            codes["404"] = (error, missing)
        conflict = getattr(self.view, "conflicts", {}).get(getattr(self.view, "action", None))
        if conflict:
            codes["409"] = (error, conflict)
        not_queued = getattr(self.view, "queued", {}).get(getattr(self.view, "action", None))
        if not_queued:
            codes["503"] = (error, f"The task queue cannot be reached. {not_queued}")
        host_error = getattr(self.view, "host_errors", {}).get(getattr(self.view, "action", None))
        if host_error:
            codes["502"] = (error, host_error)
        return codes

    def _get_response_bodies(self, direction: str = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        for code, (schema, description) in self.error_responses().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(schema, description), code, ["application/json"], direction
                )
        return responses


_JOB_EVENT = {
    "type": "object",
    "required": [
        "id",
        "uuid",
        "title",
        "status",
        "exit_code",
        "error",
        "server",
        "started_at",
        "finished_at",
        "modified",
        "scheduler_id",
        "scheduler_state",
        "wait_reason",
    ],
    "properties": {
        "id": {"type": "integer"},
        "uuid": {"type": "string", "format": "uuid"},
        "title": {"type": "string"},
        "status": {
            "type": "string",
            "enum": list(Status.values),
        },
        "exit_code": {"type": "integer", "nullable": True},
        "error": {"type": "string"},
        "server": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time", "nullable": True},
        "finished_at": {"type": "string", "format": "date-time", "nullable": True},
        "modified": {"type": "string", "format": "date-time", "nullable": True},
        "scheduler_id": {
            "type": "string",
            "description": 'The batch scheduler\'s job id ("" without a scheduler).',
        },
        "scheduler_state": {
            "type": "string",
            "description": 'What the scheduler last said, e.g. "PENDING (Priority)".',
        },
        "wait_reason": {
            "type": "string",
            "description": 'Why a waiting job waits, e.g. "3 of 3 slots on hpc1 in use".',
        },
    },
}
_LOG_EVENT = {
    "type": "object",
    "required": ["id", "time", "stream", "content", "offset"],
    "properties": {
        "id": {"type": "integer", "description": "The Log id (use it as `after` on reconnect)."},
        "time": {"type": "string", "format": "date-time"},
        "stream": {"type": "string", "enum": list(Log.Stream.values)},
        "content": {"type": "string", "description": "Whole lines of one stream."},
        "offset": {"type": "integer", "description": "Byte offset in the stream."},
    },
}
_SEQ = {"type": "integer", "description": "1, 2, 3, ... on each connection: acknowledge it."}
WEBSOCKET_COMPONENTS = {
    "WsLogsMessage": {
        "type": "object",
        "description": "ws/job-log/<id>/: log rows of the job, oldest first (history, then "
        "live batches).",
        "required": ["type", "job", "history", "logs", "seq"],
        "properties": {
            "type": {"type": "string", "enum": ["logs"]},
            "job": {"type": "integer", "description": "Job id."},
            "history": {
                "type": "boolean",
                "description": "Rows read from the database rather than forwarded live.",
            },
            "logs": {"type": "array", "items": {"$ref": "#/components/schemas/WsLogEvent"}},
            "seq": _SEQ,
        },
    },
    "WsLogEvent": _LOG_EVENT,
    "WsStatusMessage": {
        "type": "object",
        "description": "ws/job-user/ and ws/job-log/<id>/: a job and its state (on connect, "
        "then on each change).",
        "required": ["type", "job", "seq"],
        "properties": {
            "type": {"type": "string", "enum": ["status"]},
            "job": {"$ref": "#/components/schemas/WsJobEvent"},
            "seq": _SEQ,
        },
    },
    "WsJobsMessage": {
        "type": "object",
        "description": "ws/job-user/: the latest jobs the user may see, newest first (on "
        "connect, and again after a client fell too far behind).",
        "required": ["type", "jobs", "seq"],
        "properties": {
            "type": {"type": "string", "enum": ["jobs"]},
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/WsJobEvent"}},
            "seq": _SEQ,
        },
    },
    "WsAck": {
        "type": "object",
        "description": "Client to server: the seq of the last message processed.",
        "required": ["type", "seq"],
        "properties": {"type": {"type": "string", "enum": ["ack"]}, "seq": {"type": "integer"}},
    },
    "WsJobEvent": _JOB_EVENT,
}

DESCRIPTION = """
Run programs on remote hosts over SSH: create a job, submit it, follow its output, fetch the
files it wrote.

**Authentication.** Every endpoint needs a user. Scripts send a personal API token:
`Authorization: Bearer <key>` (or `Token <key>`). Make one on the "My API tokens" page, or
with your password: `POST tokens/` over HTTP basic, `{"name": "cron", "read_only": false,
"days": 30}`; the answer holds the key (`token`), shown once. A token expires, can be revoked
(`DELETE tokens/{id}/`, then 401), and a read-only one only reads (else 403). Websockets take
the same header on the handshake. Browsers use their Django session (with the CSRF token on
writes); `rest_framework.authtoken` keys work where the project installs that app.

**Who sees what.** Users see and change their own jobs, logs and results; a job of someone
else answers 404, like a missing one. Users see the servers they may use (every server with
the permission `view_server`); servers and interpreters are changed with the model
permissions. The permission `view_job` shows every job, `change_job` allows acting on it.
Jobs log in as their user, with a password or the key made for the server on "My SSH keys";
the shared login, local runs and other login names need the permissions
`use_shared_credentials`, `run_locally` and `choose_login` (else 403 with the reason).
`events/` is the audit trail of the user's jobs and keys.

**A job's life.**
1. `POST jobs/` with `title`, `program`, `server`, `interpreter` (one the server offers),
   `remote_directory` and `remote_filename`.
2. `POST jobs/{id}/submit/` with the login `password` (leave it out to log in with your
   key for the server), optionally `timeout` (seconds),
   `log_policy`, `store_results` and, on a server with a batch scheduler, `resources`.
   Answers 202: the job is queued and goes `submitted`, (`queued`: waiting in the
   scheduler's queue,) `running`, then `success`, `failure` or `cancelled`.
   `POST jobs/{id}/cancel/` stops it; `POST jobs/{id}/resubmit/` runs a finished job again
   with the same options.
3. Follow the output with `GET logs/?job={id}&after={after}`: pass the `after` of each answer
   to the next request; rows come in order, none missed or repeated.
4. `GET results/?job={id}` lists the files the job wrote; `GET results/{id}/download/` gives
   one file's content.

**Errors** answer `{"detail": "..."}`, or field errors (400) such as
`{"timeout": ["The timeout must be a positive number of seconds."]}`. A job that is
submitted, queued or running cannot be edited, deleted or submitted again (409).

**Websockets.** `ws/job-user/` and `ws/job-log/{id}/?after={log id}` (the same credentials
as the API: a session, or the token on the handshake) send JSON messages, each with a `seq`
(schemas in the components below):

* `WsJobsMessage` `{"type": "jobs", "jobs": [...], "seq"}` on ws/job-user/ when it opens.
* `WsStatusMessage` `{"type": "status", "job": {"id", "uuid", "title", "status",
  "exit_code", "error", "server", "started_at", "finished_at", "modified", "scheduler_id",
  "scheduler_state", "url"}, "seq"}`: a job's state, on connect (ws/job-log/) and on each
  change (and each new state its batch scheduler reports).
* `WsLogsMessage` `{"type": "logs", "job": <id>, "history": <bool>, "logs": [{"id", "time",
  "stream", "content", "offset"}, ...], "seq"}`: the job's rows above `after`, oldest first,
  each once.

The client acknowledges with `WsAck` `{"type": "ack", "seq": <last seq processed>}`; a client
that leaves too much unacknowledged is sent nothing more and closed with 4408 (reconnect with
`?after=`). 4401: not logged in (or logged out); 4403: a job you may not see.
"""

SCHEMA_SETTINGS = {
    "TITLE": "Remote submission API",
    "DESCRIPTION": DESCRIPTION,
    "VERSION": __version__,
    # Separate request and response components: write-only fields (passwords) stay out of
    # the responses, read-only ones out of the requests.
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {"schemas": WEBSOCKET_COMPONENTS},
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "django_remote_submission.models.Status.choices"},
}


def _prefix(where: str, suffix: str) -> str:
    """The path this API is mounted at, from the path ``<prefix><suffix>`` of a request."""
    return where[: -len(suffix)] if where.endswith(suffix) else "/"


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema of this API (YAML; JSON with `?format=json`).

    ``SchemaView.as_view(api_patterns=router.urls)``: the API's URL patterns, described under
    the path the API is mounted at (read from the request).
    """

    api_patterns: list = []

    def get(self, request, *args, **kwargs):
        prefix = _prefix(request.path_info, "schema/").lstrip("/")
        self.patterns = [path(prefix, include(self.api_patterns))]
        # A copy for each request: spectacular's enum hook rewrites the appended components in
        # place (an enum becomes a $ref), and the next schema would lack the enum's component.
        self.custom_settings = copy.deepcopy(SCHEMA_SETTINGS)
        return super().get(request, *args, **kwargs)


# Swagger UI without the network: no online validator badge.
DOCS_SETTINGS = {"SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None}}


class DocsView(SpectacularSwaggerView):
    """Swagger UI for the schema next to it, from the app's own static files (the
    ``drf_spectacular_sidecar`` app), so that it works on networks without internet access."""

    title = SCHEMA_SETTINGS["TITLE"]

    def get(self, request, *args, **kwargs):
        with patched_settings(DOCS_SETTINGS):
            return super().get(request, *args, **kwargs)

    @staticmethod
    def _swagger_ui_resource(filename: str) -> str:
        return static(f"drf_spectacular_sidecar/swagger-ui-dist/{filename}")

    @staticmethod
    def _swagger_ui_favicon() -> str:
        return static("drf_spectacular_sidecar/swagger-ui-dist/favicon-32x32.png")

    def _get_schema_url(self, request) -> str:
        return _prefix(request.path, "docs/") + "schema/"
