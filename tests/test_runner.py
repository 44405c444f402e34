"""The lifecycle of a job through the real sshd: states, output, exit codes, timeouts."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from django_remote_submission.models import Job
from tests.services import session_alive

pytestmark = pytest.mark.django_db


def output(job, stream="stdout") -> str:
    return "".join(job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True))


def test_hello_world_succeeds_with_its_output(make_job, submit):
    job = make_job('print("hello world")')
    assert submit(job) == {}
    job.refresh_from_db()
    assert job.status == Job.STATUS.success == "success"
    assert job.exit_code == 0 and job.error == ""
    assert output(job) == "hello world\n"
    assert job.started_at <= job.finished_at


def test_nonzero_exit_is_failure_with_reason(make_job, submit):
    job = make_job('import sys\nprint("x", file=sys.stderr)\nsys.exit(3)')
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.exit_code == 3
    assert job.error == "The program exited with status 3."
    assert output(job, "stderr") == "x\n"


def test_timeout_stops_process_group_and_keeps_earlier_output(make_job, submit, sshd):
    job = make_job(
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '300'])\n"
        "print('before', flush=True)\n"
        "time.sleep(300)\n"
    )
    t0 = time.monotonic()
    submit(job, timeout=timedelta(seconds=1.5))
    assert time.monotonic() - t0 < 20
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert "Timed out after 1.5 s" in job.error
    assert output(job) == "before\n"
    assert job.pid and session_alive(job.pid) == []
