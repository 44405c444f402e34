"""The API holds to its own schema: schemathesis fuzzes every operation of ``api/schema/``.

Checks: no 5xx, and status codes, content types, headers and bodies as documented. Every
operation runs with a user's token and with a superuser's token (they reach every operation); most
generated ids are swapped for ids of real objects so that more than 404s are exercised.
Celery tasks are recorded, not run, and the server is unreachable anyway.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from django_remote_submission import services
from tests.api_world import build_world, fake_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api_urls"), pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setattr(services, "tasks", fake_tasks())
    return build_world()


@pytest.fixture(autouse=True)
def keep_connection():
    """As django.test.Client does: keep the test's transaction open across WSGI requests."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def load_schema():
    """The schema as the WSGI app serves it (no database needed to build it)."""
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.api_urls"):
        return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


# Not schemathesis.pytest.from_fixture: with pytest 9 it fails (it sets Function._nodeid).
schema = load_schema()


def use_real_ids(case, world) -> None:
    """Swap most generated ids (path, body, query) for ids of objects that exist."""
    ids = {
        "servers": world.server.pk,
        "interpreters": world.python3.pk,
        "jobs": world.job.pk,
        "logs": world.log.pk,
        "results": world.result.pk,
        "inputs": world.input.pk,
        "templates": world.template.pk,
        "events": 1,
        "accounts": world.account.pk,
        "tokens": world.api_token.pk,
    }
    real = {
        "server": world.server.pk,
        "interpreter": world.python3.pk,
        "job": world.done.pk,
        "owner": world.users["owner"].pk,
    }

    def swap(values: dict | None, names: dict) -> None:
        for name, value in (values or {}).items():
            if name in names and isinstance(value, int) and value % 3:
                values[name] = names[name]

    if case.path.endswith("/resubmit/"):
        ids["jobs"] = world.done.pk
    swap(case.path_parameters, {"id": ids[case.path.split("/")[2]]})
    swap(case.query, real)
    if isinstance(case.body, dict):
        swap(case.body, real)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
@pytest.mark.parametrize("role", ["owner", "superuser"])
def test_api_answers_as_documented(case, world, role):
    use_real_ids(case, world)
    case.call_and_validate(headers={"Authorization": f"Token {world.tokens[role]}"}, checks=CHECKS)


def test_the_schema_is_the_same_on_every_request(client):
    first, second = (client.get("/api/schema/?format=json").json() for _ in range(2))
    assert first == second
    assert first["components"]["schemas"]["WsLogsMessageTypeEnum"] == {
        "enum": ["logs"],
        "type": "string",
    }
