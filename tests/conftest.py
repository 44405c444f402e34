"""Shared fixtures: real sshd and redis-server (tests/services.py), Debian's chromium.

Usage: ``def test_x(sshd, redis_url): sshd.ssh(sshd.key_user, "true")``. A missing service
skips the test, or fails it when CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from tests.services import ServiceUnavailable, SSHServer, start_redis, start_sshd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def unavailable(message: str) -> NoReturn:
    """Usage: ``unavailable("no sshd")``: pytest.fail under CI=true, else pytest.skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: required service missing)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """Usage: ``def test_x(sshd): sshd.ssh(sshd.key_user, "id -un")``; see SSHServer."""
    try:
        server = start_sshd()
    except ServiceUnavailable as exc:
        unavailable(f"sshd unavailable: {exc}")
    yield server
    server.stop()


_redis: dict = {}


def pytest_configure(config) -> None:
    """Start the run's redis-server and point the test Celery app at it, before anything
    (collection included) can make the app open a connection or a result backend."""
    try:
        _redis["server"] = server = start_redis()
    except ServiceUnavailable as exc:
        _redis["error"] = str(exc)
        return
    from django.conf import settings

    from tests.celery_app import app

    # In the settings the app reads (Celery 5.6 ignores an assignment to app.conf made before
    # it has read them), and in its configuration (read already, with other versions).
    settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = server.url
    app.conf.broker_url = app.conf.result_backend = server.url


def pytest_unconfigure(config) -> None:
    if "server" in _redis:
        _redis.pop("server").stop()


_measured: list[str] = []


@pytest.fixture(scope="session")
def report_line():
    """Usage: ``report_line("4 workers: 12.3 jobs/s")``: shown at the end of the run."""
    return _measured.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _measured:
        terminalreporter.section("measured")
        for line in _measured:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Usage: ``def test_x(redis_url): redis.Redis.from_url(redis_url).ping()``."""
    if "server" not in _redis:
        unavailable(f"redis unavailable: {_redis.get('error')}")
    return _redis["server"].url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Usage: automatic for pytest-playwright's ``page``: launches Debian's /usr/bin/chromium."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


# --- test lanes: what a test needs, from the fixtures it uses ----------------------------

LANES = {
    "sshd": {"sshd", "chatty", "strict_sshd"},
    "redis": {"redis_url"},
    "worker": {"worker", "hostile_worker", "live_site"},
    "browser": {"chromium", "tab", "page", "browser"},
}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark each test with the services it needs, so that ``make test-fast`` (``-m "not
    (sshd or redis or worker or browser or slow)"``) runs only database-level tests."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in LANES.items():
            if used & fixtures:
                item.add_marker(marker)


# --- app fixtures -----------------------------------------------------------------------------


@pytest.fixture
def python3(db):
    """Usage: ``Job(interpreter=python3, ...)``: /usr/bin/python3 -u."""
    from django_remote_submission.models import Interpreter

    return Interpreter.objects.create(name="python3", path="/usr/bin/python3", arguments=["-u"])


@pytest.fixture
def bash(db):
    from django_remote_submission.models import Interpreter

    return Interpreter.objects.create(name="bash", path="/bin/bash", arguments=[])


@pytest.fixture
def server(db, sshd, python3, bash):
    """Usage: ``Job(server=server, ...)``: the test sshd with its host key on record."""
    from django_remote_submission.models import Server

    s = Server.objects.create(
        title="test sshd", hostname=sshd.host, port=sshd.port, host_key=sshd.host_key
    )
    s.interpreters.set([python3, bash])
    return s


@pytest.fixture
def owner(db, sshd):
    """A Django user named like the sshd password user (the default login name)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(sshd.password_user or sshd.key_user)


@pytest.fixture
def make_job(server, owner, python3, sshd, request):
    """Usage: ``job = make_job("print(1)")``: a job in a fresh directory of the password user."""
    import uuid

    from django_remote_submission.models import Job

    def make(
        program: str, interpreter=None, directory: str | None = None, key_user=False, **fields
    ):
        base = sshd.base_dir_key if key_user else (sshd.base_dir_pw or sshd.base_dir_key)
        fields.setdefault("remote_filename", "job.py")
        return Job.objects.create(
            title=request.node.name,
            program=program,
            owner=owner,
            server=server,
            interpreter=interpreter or python3,
            remote_directory=directory or f"{base}/{uuid.uuid4().hex[:10]}",
            **fields,
        )

    return make


@pytest.fixture
def submit(sshd):
    """Usage: ``submit(job, timeout=5)``: runs submit_job_to_server with the test password."""
    from django_remote_submission.tasks import submit_job_to_server

    def run(job, **kwargs):
        kwargs.setdefault("password", sshd.password)
        if sshd.password is None:
            kwargs.setdefault("public_key_filename", sshd.key_file)
        return submit_job_to_server(job.pk, **kwargs)

    return run


@pytest.fixture(scope="session")
def celery_app(redis_url):
    """The test Celery app; broker and result backend are the run's redis (pytest_configure)."""
    from tests.celery_app import app

    app.set_current()
    return app


@pytest.fixture(scope="session")
def worker(celery_app, redis_url):
    """Usage: ``def test_x(worker): submit_job_to_server.delay(...)``: a real worker process."""
    from tests.services import start_worker

    try:
        w = start_worker(redis_url)
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    yield w
    w.stop()


@pytest.fixture
def broker_down(monkeypatch):
    """Usage: ``def test_x(broker_down)``: ``.delay()`` goes to a port where no broker listens."""
    from celery import Celery, _state

    from tests.services import free_port

    app = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    app.conf.broker_connection_retry = False
    monkeypatch.setattr(_state._tls, "current_app", app)
    monkeypatch.setattr(_state, "default_app", app)
    yield app
    app.close()


@pytest.fixture
def eager():
    """Usage: ``def test_x(eager): task.delay(...)`` runs the task inline (CELERY eager mode)."""
    from django.conf import settings

    from tests.celery_app import app

    app.set_current()
    # Both where the app reads its settings (Celery 5.6 looks there before app.conf) and in
    # its configuration.
    names = ("TASK_ALWAYS_EAGER", "TASK_EAGER_PROPAGATES")
    saved = [getattr(settings, f"CELERY_{n}", False) for n in names]
    saved_conf = app.conf.task_always_eager, app.conf.task_eager_propagates
    for name in names:
        setattr(settings, f"CELERY_{name}", True)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    for name, value in zip(names, saved, strict=True):
        setattr(settings, f"CELERY_{name}", value)
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved_conf
