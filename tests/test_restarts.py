"""Services restarted under a running job: the job still ends ``success``, every line of its
output stored exactly once.

Each test starts its own instance of the service it restarts (sshd, redis, PostgreSQL) or its
own workers, so that the services the other tests share are never disturbed:

- sshd stops with every connection and comes back: the run reconnects and resumes from the
  stored byte offsets.
- redis (the broker and the channel layer; persistent, as in production) restarts: the worker
  goes on and takes new tasks, and a websocket client reconnects with ``?after=`` and gets
  each row once, then new rows live.
- PostgreSQL restarts: the runner retries its writes with backoff.
- a worker gets SIGTERM (warm shutdown): it hands the job over and exits at once, the job
  runs on, and another worker follows it to the end.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
from celery import Celery
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.db.utils import load_backend
from django.test import Client
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from django_remote_submission import credentials, runner
from django_remote_submission.models import Interpreter, Job, Log, Server
from django_remote_submission.tasks import submit_job_to_server
from tests.conftest import unavailable
from tests.services import (
    ServiceUnavailable,
    session_alive,
    start_daphne,
    start_postgres,
    start_redis,
    start_sshd,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

COUNTER = (
    "import sys, time\n"
    "open({marks!r}, 'a').write('ran\\n')\n"
    "for i in range({n}):\n"
    "    print(f'line {{i}}', flush=True)\n"
    "    print(f'err {{i}}', file=sys.stderr, flush=True)\n"
    "    time.sleep({pause})\n"
)
SUBMIT = "django_remote_submission.tasks.submit_job_to_server"


def expected(n: int, name: str = "line") -> str:
    return "".join(f"{name} {i}\n" for i in range(n))


def stream(job, name="stdout", using="default") -> str:
    rows = Log.objects.using(using).filter(job_id=job.pk, stream=name).order_by("id")
    return "".join(rows.values_list("content", flat=True))


def fresh_dir(sshd_base: str) -> str:
    """A fresh remote directory for a job (the program marks each of its starts in it)."""
    return f"{sshd_base}/restart-{uuid.uuid4().hex[:10]}"


def new_job(server, owner, python3, directory: str, n: int, pause: float = 0.1, using="default"):
    return Job.objects.using(using).create(
        title="restart",
        program=COUNTER.format(marks=f"{directory}/marks", n=n, pause=pause),
        owner=owner,
        server=server,
        interpreter=python3,
        remote_directory=directory,
        remote_filename="job.py",
    )


def runs(directory: str) -> int:
    """How many times the program started (each start marks the file once)."""
    with open(f"{directory}/marks") as f:
        return f.read().count("ran\n")


def login(sshd) -> dict:
    return {"password": sshd.password} if sshd.password else {"public_key_filename": sshd.key_file}


# --- sshd --------------------------------------------------------------------------------------


@pytest.fixture
def own_sshd():
    try:
        host = start_sshd()
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    yield host
    host.stop()


def test_sshd_restarted_mid_job_the_run_resumes_from_its_offsets(own_sshd, owner, python3):
    host = own_sshd
    server = Server.objects.create(
        title="restarting sshd", hostname=host.host, port=host.port, host_key=host.host_key
    )
    server.interpreters.set([python3])
    directory = fresh_dir(host.base_dir_pw or host.base_dir_key)
    job = new_job(server, owner, python3, directory, n=50)
    run = threading.Thread(target=runner.submit, args=(job.pk,), kwargs=login(host))
    run.start()
    try:
        wait_for(lambda: job.logs.filter(stream="stdout").count() >= 5, message="first lines")
        host.stop_server()
        wait_for(
            lambda: "Connection lost" in stream(job, "system"),
            message="the run noticed that the host went away",
        )
        job.refresh_from_db()
        assert job.status == Job.STATUS.running and session_alive(job.pid)  # the job runs on
        host.start_server()
    finally:
        run.join(120)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert stream(job) == expected(50)
    assert stream(job, "stderr") == expected(50, "err")
    assert runs(directory) == 1


# --- PostgreSQL --------------------------------------------------------------------------------

ALIAS = "restarting"


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test, migrated, reachable here as the database ``ALIAS``."""
    try:
        pg = start_postgres()
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    pg.url = pg.create_database("drs_restart")
    url = urlsplit(pg.url)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.path.lstrip("/"),
        "USER": url.username,
        "HOST": url.hostname,
        "PORT": url.port,
    }
    database = connections.configure_settings({"default": database})["default"]
    # A connection made here, not declared in DATABASES: Django's test case lets it be used.
    wrapper = load_backend(database["ENGINE"]).DatabaseWrapper(database, ALIAS)
    setattr(connections._connections, ALIAS, wrapper)
    try:
        call_command("migrate", database=ALIAS, verbosity=0)
        yield pg
    finally:
        wrapper.close()
        delattr(connections._connections, ALIAS)
        pg.stop()


def test_postgres_restarted_mid_job_the_runner_retries_its_writes(
    own_postgres, sshd, celery_app, redis_url
):
    pg, queue = own_postgres, f"drs-pg-{uuid.uuid4().hex[:8]}"
    owner = get_user_model().objects.db_manager(ALIAS).create_user(sshd.password_user or "me")
    python3 = Interpreter.objects.using(ALIAS).create(name="python3", path="/usr/bin/python3")
    server = Server.objects.using(ALIAS).create(
        title="sshd", hostname=sshd.host, port=sshd.port, host_key=sshd.host_key
    )
    server.interpreters.set([python3])
    directory = fresh_dir(sshd.base_dir_pw or sshd.base_dir_key)
    job = new_job(server, owner, python3, directory, n=60, using=ALIAS)
    env = {"DRS_TEST_DATABASE": "postgres", "DRS_TEST_DATABASE_URL": pg.url}
    worker = start_worker(redis_url, concurrency=2, queue=queue, extra_env=env)
    try:
        submit_job_to_server.apply_async((job.pk,), login(sshd), queue=queue)
        lines = Log.objects.using(ALIAS).filter(job_id=job.pk, stream="stdout")
        wait_for(lambda: lines.count() >= 5, message=lambda: f"first lines: {worker.log()}")
        connections[ALIAS].close()
        pg.stop_server()
        wait_for(
            lambda: "Database unavailable while storing the log" in worker.log(),
            message=lambda: f"the runner met the outage: {worker.log()[-3000:]}",
        )
        pg.start_server()
        done = Job.objects.using(ALIAS).filter(pk=job.pk, status__in=["success", "failure"])
        wait_for(done.exists, timeout=120, message=lambda: f"job ended: {worker.log()[-3000:]}")
    finally:
        worker.stop()
    job = Job.objects.using(ALIAS).get(pk=job.pk)
    assert job.status == Job.STATUS.success, job.error
    assert stream(job, using=ALIAS) == expected(60)
    assert stream(job, "stderr", using=ALIAS) == expected(60, "err")
    assert runs(directory) == 1
    assert "The database is back after" in worker.log()


# --- redis -------------------------------------------------------------------------------------


class Follower:
    """A websocket client of ``ws/job-log/<pk>/`` that reconnects with ``?after=`` (as the
    pages' live.js does) until the job's final status; acks every message."""

    def __init__(self, base: str, cookie: str, job_pk: int) -> None:
        self.url = base.replace("http://", "ws://") + f"ws/job-log/{job_pk}/"
        self.job_pk = job_pk
        self.cookie, self.rows, self.live = cookie, [], []
        self.connections, self.final = 0, None
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.connected = threading.Event()

    def start(self) -> Follower:
        self.thread.start()
        return self

    def missing(self) -> bool:
        """Rows stored that this client has not received yet. (A socket opened after the job
        ended sends the final status first, then the rows: the final status alone is not
        the end of what is to come.)"""
        after = self.rows[-1]["id"] if self.rows else 0
        try:
            return Log.objects.filter(job_id=self.job_pk, id__gt=after).exists()
        finally:
            connections["default"].close()

    def _follow(self) -> None:
        deadline = time.monotonic() + 120
        while (self.final is None or self.missing()) and time.monotonic() < deadline:
            after = self.rows[-1]["id"] if self.rows else 0
            try:
                with connect(
                    f"{self.url}?after={after}",
                    open_timeout=5,
                    additional_headers={"Cookie": self.cookie},
                ) as ws:
                    self.connections += 1
                    self.connected.set()
                    self._read(ws)
            except (WebSocketException, OSError, TimeoutError):
                time.sleep(0.2)  # the server is away: try again, as a browser would

    def _read(self, ws) -> None:
        while self.final is None or self.missing():
            message = json.loads(ws.recv(timeout=30))
            ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))
            if message["type"] == "logs":
                self.rows += message["logs"]
                if not message["history"]:
                    self.live += message["logs"]
            elif message["type"] == "status" and message["job"]["status"] in ("success", "failure"):
                self.final = message["job"]["status"]

    def text(self, name: str = "stdout") -> str:
        return "".join(row["content"] for row in self.rows if row["stream"] == name)


@pytest.fixture
def own_redis():
    try:
        server = start_redis(persistent=True)
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    yield server
    server.stop()


def test_redis_restarted_mid_job_celery_and_websockets_reconnect(
    own_redis, sshd, owner, server, python3
):
    base = own_redis.url.rsplit("/", 1)[0]
    broker, layer = f"{base}/0", f"{base}/1"
    env = {"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker, "DRS_CHANNEL_REDIS": layer}
    worker = start_worker(broker, concurrency=4, extra_env=env)
    daphne = start_daphne(env)
    sender = Celery("restart", broker=broker, set_as_current=False)
    browser = Client()
    browser.force_login(owner)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    secret = {k: credentials.encrypt(v) if k == "password" else v for k, v in login(sshd).items()}
    directory = fresh_dir(sshd.base_dir_pw or sshd.base_dir_key)
    job = new_job(server, owner, python3, directory, n=60)
    try:
        follower = Follower(daphne.url, cookie, job.pk).start()
        assert follower.connected.wait(15)
        sender.send_task(SUBMIT, args=(job.pk,), kwargs=secret)
        wait_for(lambda: len(follower.rows) >= 5, message=lambda: f"live rows: {worker.log()}")
        own_redis.stop_server()
        wait_for(
            lambda: job.logs.filter(stream="stdout").count() >= len(follower.rows) + 5,
            message="the job goes on while redis is down",
        )
        own_redis.start_server()
        follower.thread.join(120)
        job.refresh_from_db()
        assert job.status == Job.STATUS.success, job.error
        assert follower.final == "success"
        ids = [row["id"] for row in follower.rows]
        assert ids == sorted(set(ids))  # each row once, in order
        assert follower.text() == stream(job) == expected(60)
        assert follower.text("stderr") == stream(job, "stderr") == expected(60, "err")
        assert follower.connections >= 2  # it lost the socket and came back with ?after=
        assert runs(directory) == 1

        # After the restart: the worker takes new tasks and broadcasts, daphne relays live.
        again = new_job(server, owner, python3, fresh_dir(directory.rsplit("/", 1)[0]), n=20)
        second = Follower(daphne.url, cookie, again.pk).start()
        assert second.connected.wait(15)
        sender.send_task(SUBMIT, args=(again.pk,), kwargs=secret)
        second.thread.join(120)
        assert second.final == "success", worker.log()[-3000:]
        assert second.text() == expected(20)
        assert second.live  # rows came as they were stored, over the channel layer
    finally:
        sender.close()
        daphne.stop()
        worker.stop()


# --- a worker stopped with SIGTERM -------------------------------------------------------------


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_sigterm_hands_the_job_over_to_another_worker(
    pool, sshd, owner, python3, celery_app, redis_url
):
    queue = f"drs-term-{uuid.uuid4().hex[:8]}"
    server = Server.objects.create(
        title="term", hostname=sshd.host, port=sshd.port, host_key=sshd.host_key, queue=queue
    )
    server.interpreters.set([python3])
    directory = fresh_dir(sshd.base_dir_pw or sshd.base_dir_key)
    job = new_job(server, owner, python3, directory, n=80)
    Job.objects.filter(pk=job.pk).update(
        program=job.program + "open('result.txt', 'w').write('finished')\n"
    )
    first = start_worker(redis_url, concurrency=2, queue=queue, pool=pool)
    second = None
    try:
        submit_job_to_server.delay(job.pk, **login(sshd))
        wait_for(
            lambda: job.logs.filter(stream="stdout").count() >= 5,
            message=lambda: f"first lines: {first.log()[-3000:]}",
        )
        second = start_worker(redis_url, concurrency=2, queue=queue, pool=pool)
        first.terminate()
        assert first.proc.wait(30) == 0  # a warm shutdown that did not wait for the job
        job.refresh_from_db()
        assert job.status == Job.STATUS.running and session_alive(job.pid)
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status="success").exists(),
            timeout=60,
            message=lambda: f"the other worker finished it: {second.log()[-3000:]}",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert "handed over: this worker shuts down" in first.log()
    assert "resume_job" in second.log()
    assert stream(job) == expected(80)
    assert stream(job, "stderr") == expected(80, "err")
    assert {r.remote_filename: r.local_file.read() for r in job.results.all()} == {
        "marks": b"ran\n",  # the program started once
        "result.txt": b"finished",
    }
    assert runs(directory) == 1
