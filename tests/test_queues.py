"""Routing: the tasks of a job go to its server's Celery queue, so that a slow or unreachable
host holds only the workers of its own queue."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
import redis

from django_remote_submission.models import FINAL_STATES, Job, Server
from django_remote_submission.tasks import (
    cancel_job,
    copy_job_to_server,
    queue_of,
    resume_job,
    submit_job_to_server,
)
from tests.services import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def queued(redis_url: str, queue: str) -> list[str]:
    """The names of the tasks waiting in ``queue`` (kombu's redis list), oldest first."""
    messages = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    return [json.loads(m)["headers"]["task"].rsplit(".", 1)[1] for m in reversed(messages)]


@pytest.fixture
def queue(redis_url):
    name = f"drs-route-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(redis_url).delete(name)


def test_every_task_of_a_job_goes_to_its_servers_queue(
    make_job, server, sshd, celery_app, redis_url, queue
):
    Server.objects.filter(pk=server.pk).update(queue=queue)
    job = make_job("print(1)")
    assert queue_of(job.pk) == queue
    submit_job_to_server.delay(job.pk, password=sshd.password)
    copy_job_to_server.delay(job.pk, password=sshd.password)
    cancel_job.delay(job.pk)
    resume_job.delay(job.pk)
    assert queued(redis_url, queue) == [
        "submit_job_to_server",
        "copy_job_to_server",
        "cancel_job",
        "resume_job",
    ]


def test_drs_queue_is_the_default_and_an_explicit_queue_wins(
    make_job, celery_app, redis_url, queue, settings
):
    settings.DRS = {**settings.DRS, "QUEUE": queue}
    job = make_job("print(1)")
    assert queue_of(job.pk) == queue
    cancel_job.delay(job.pk)
    other = f"{queue}-explicit"
    try:
        cancel_job.apply_async((job.pk,), queue=other)
        assert queued(redis_url, queue) == ["cancel_job"]
        assert queued(redis_url, other) == ["cancel_job"]
    finally:
        redis.Redis.from_url(redis_url).delete(other)


def test_without_a_queue_celery_routing_decides(make_job, settings):
    settings.DRS = {**settings.DRS, "QUEUE": ""}
    assert queue_of(make_job("print(1)").pk) is None


@pytest.fixture
def silent_host():
    """A host whose port accepts connections and never says a word (a hung sshd)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes the handshakes; nobody ever answers
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.postgres
def test_a_hung_host_holds_only_its_own_queue(
    sshd, owner, python3, celery_app, redis_url, silent_host
):
    token = uuid.uuid4().hex[:8]
    hung = Server.objects.create(
        title="hung", hostname="127.0.0.1", port=silent_host, queue=f"drs-hung-{token}"
    )
    fine = Server.objects.create(
        title="fine",
        hostname=sshd.host,
        port=sshd.port,
        host_key=sshd.host_key,
        queue=f"drs-fine-{token}",
    )
    for s in (hung, fine):
        s.interpreters.set([python3])
    base = sshd.base_dir_pw or sshd.base_dir_key

    def jobs(server, count):
        return [
            Job.objects.create(
                title=server.title,
                program="print('done')",
                owner=owner,
                server=server,
                interpreter=python3,
                remote_directory=f"{base}/route-{uuid.uuid4().hex[:8]}",
                remote_filename="job.py",
            )
            for _ in range(count)
        ]

    stuck, flowing = jobs(hung, 3), jobs(fine, 4)
    slow = json.dumps({"CONNECT_TIMEOUT": 120.0, "HOST_KEY_POLICY": "warn"})
    env = {"DRS_TEST_SETTINGS": slow}
    workers = [
        start_worker(redis_url, concurrency=2, queue=hung.queue, extra_env=env),
        start_worker(redis_url, concurrency=2, queue=fine.queue),
    ]
    try:
        for job in stuck + flowing:  # the hung host's jobs first, as a single queue would
            submit_job_to_server.delay(job.pk, password=sshd.password)
        done = Job.objects.filter(pk__in=[j.pk for j in flowing], status__in=FINAL_STATES)
        wait_for(lambda: done.count() == len(flowing), timeout=60, message="the fine host's jobs")
        assert set(done.values_list("status", flat=True)) == {"success"}
        waiting = Job.objects.filter(pk__in=[j.pk for j in stuck])
        assert not waiting.filter(status__in=FINAL_STATES).exists()  # still hanging on connect
    finally:
        for worker in workers:
            worker.kill()
    for job in flowing:
        assert job.logs.get().content == "done\n"
