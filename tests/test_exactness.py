"""Every byte of every job, under load: many short jobs at once, each printing on both
streams right up to its end, must each come back exact (the end of a stream is where a
follower can lose data: a last write after the follower's last read, data that arrives just
before the channel's end-of-file)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from django_remote_submission import runner
from django_remote_submission.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

PROGRAM = (
    "import sys\n"
    "for i in range({n}):\n"
    "    print(i, flush=True)\n"
    "    print(-i, file=sys.stderr, flush=True)\n"
    "sys.stdout.write('end'); sys.stderr.write('END')\n"
)


def text(job: Job, stream: str) -> str:
    return "".join(job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True))


@pytest.mark.parametrize("remote", [True, False], ids=["ssh", "local"])
def test_many_jobs_at_once_each_come_back_exact(make_job, sshd, remote):
    jobs = [make_job(PROGRAM.format(n=50 + 7 * k)) for k in range(24)]

    def run(job: Job) -> None:
        try:
            runner.submit(job.pk, password=sshd.password, remote=remote)
        finally:
            connection.close()

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(run, jobs))
    for k, job in enumerate(jobs):
        job.refresh_from_db()
        n = 50 + 7 * k
        assert job.status == Job.STATUS.success, job.error
        assert text(job, "stdout") == "".join(f"{i}\n" for i in range(n)) + "end"
        assert text(job, "stderr") == "".join(f"{-i}\n" for i in range(n)) + "END"
