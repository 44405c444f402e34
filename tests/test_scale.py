"""Many workers, every job exactly once: separate ``celery worker`` processes (threads and
prefork pools both) take N jobs submitted at once, against the real sshd.

Each job appends its own token to one file on the host and prints it. At the end the file
holds N lines, N distinct tokens; every job succeeded, its log is exactly its line, and its
audit trail shows one run (submitted, running, success). The throughput (jobs/s, from the
first submission to the end of the last job) is shown at the end of the run for 1, 2 and 4
workers (``make bench`` measures it with 500 jobs).
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from django_remote_submission.models import FINAL_STATES, Event, Job, Server
from django_remote_submission.tasks import submit_job_to_server
from tests.conftest import unavailable
from tests.services import ServiceUnavailable, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

N = int(os.environ.get("DRS_TEST_SCALE_JOBS", "100"))
POOLS = ("threads", "prefork")  # worker i runs POOLS[i % 2]
CONCURRENCY = {"threads": 8, "prefork": 4}
PROGRAM = (
    "import os\n"
    "fd = os.open({marks!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
    "os.write(fd, b'{token}\\n')\n"
    "print('{token}')\n"
)
ONE_RUN = [("initial", "submitted"), ("submitted", "running"), ("running", "success")]


def start_workers(redis_url: str, queue: str, count: int) -> list:
    def start(i: int):
        pool = POOLS[i % 2]
        return start_worker(redis_url, concurrency=CONCURRENCY[pool], queue=queue, pool=pool)

    with ThreadPoolExecutor(count) as starting:
        futures = [starting.submit(start, i) for i in range(count)]
    workers, errors = [], []
    for future in futures:
        try:
            workers.append(future.result())
        except ServiceUnavailable as exc:
            errors.append(str(exc))
    if errors:
        for worker in workers:
            worker.stop()
        unavailable("; ".join(errors))
    return workers


@pytest.mark.parametrize("count", [1, 2, 4])
def test_many_workers_run_every_job_exactly_once(
    count, sshd, owner, python3, celery_app, redis_url, report_line
):
    queue = f"drs-scale-{uuid.uuid4().hex[:8]}"
    server = Server.objects.create(
        title="scale", hostname=sshd.host, port=sshd.port, host_key=sshd.host_key, queue=queue
    )
    server.interpreters.set([python3])
    base = sshd.base_dir_pw or sshd.base_dir_key
    marks = f"{base}/marks-{queue}"
    tokens = [uuid.uuid4().hex for _ in range(N)]
    jobs = [
        Job.objects.create(
            title=f"scale {i}",
            program=PROGRAM.format(marks=marks, token=token),
            owner=owner,
            server=server,
            interpreter=python3,
            remote_directory=f"{base}/scale-{token}",
            remote_filename="job.py",
        )
        for i, token in enumerate(tokens)
    ]
    login = {"password": sshd.password} if sshd.password else {"public_key_filename": sshd.key_file}
    workers = start_workers(redis_url, queue, count)
    try:
        started = time.monotonic()
        for job in jobs:
            submit_job_to_server.delay(job.pk, **login)
        pks = [job.pk for job in jobs]
        finished = Job.objects.filter(pk__in=pks, status__in=FINAL_STATES)
        wait_for(
            lambda: finished.count() == N,
            timeout=240,
            interval=0.1,
            message=lambda: f"{finished.count()} of {N} jobs finished",
        )
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.stop()
    pools = ", ".join(POOLS[i % 2] for i in range(count))
    report_line(
        f"{count} worker(s) ({pools}) on {connection.vendor}: {N} jobs in {elapsed:.1f} s, "
        f"{N / elapsed:.1f} jobs/s"
    )

    failed = Job.objects.filter(pk__in=pks).exclude(status="success")
    assert not failed.exists(), list(failed.values_list("pk", "status", "error"))
    with open(marks) as f:
        lines = f.read().splitlines()
    assert len(lines) == N
    assert sorted(lines) == sorted(tokens)  # each job ran once: N lines, N distinct
    for job, token in zip(jobs, tokens, strict=True):
        assert list(job.logs.values_list("stream", "content")) == [("stdout", f"{token}\n")]
        runs = Event.objects.filter(job=job, action=Event.Action.state).order_by("time", "id")
        assert list(runs.values_list("from_state", "to_state")) == ONE_RUN
    for worker in workers:  # every worker process took part
        assert "submit_job_to_server" in worker.log() and "succeeded" in worker.log()
