"""The per-worker pool of SSH connections against a strict sshd (MaxSessions, MaxStartups)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from django_remote_submission import runner
from django_remote_submission.models import Job, Server
from tests.services import start_sshd

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(scope="module")
def strict_sshd():
    server = start_sshd(extra=("MaxSessions 2", "MaxStartups 3:100:3"))
    yield server
    server.stop()


def test_many_concurrent_jobs_share_a_few_connections(strict_sshd, make_job, python3):
    if not strict_sshd.password_user:
        pytest.skip("needs root for the password account")
    server = Server.objects.create(
        title="strict",
        hostname=strict_sshd.host,
        port=strict_sshd.port,
        host_key=strict_sshd.host_key,
    )
    server.interpreters.add(python3)
    jobs = [make_job(f"import time\ntime.sleep(1)\nprint({i})") for i in range(16)]
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(server=server)

    def run(job):
        try:
            runner.submit(job.pk, password=strict_sshd.password)
        finally:
            connection.close()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, jobs))
    for job in jobs:
        job.refresh_from_db()
    assert [(j.status, j.error) for j in jobs] == [("success", "")] * 16
    outputs = ["".join(j.logs.values_list("content", flat=True)) for j in jobs]
    assert outputs == [f"{i}\n" for i in range(16)]
    logins = strict_sshd.log().count("Accepted password")
    # Two channels per connection, never one connection per channel. (Fewer than 8: a job
    # that finds every channel busy waits for one to close instead of failing.)
    assert logins <= 16
