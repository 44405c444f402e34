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


def test_a_job_runs_while_the_worker_holds_descriptors_above_1024(make_job, submit):
    # A worker running 1,000 jobs holds that many channels and database connections: the
    # channel of this job gets a descriptor that ``select`` refuses (it stops at 1024).
    import os
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"RLIMIT_NOFILE is {soft}")
    null = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(null) for _ in range(1100)]
    try:
        job = make_job('import time\ntime.sleep(0.5)\nprint("after a wait")')
        submit(job)
    finally:
        for fd in [*held, null]:
            os.close(fd)
    job.refresh_from_db()
    assert (job.status, job.error, output(job)) == ("success", "", "after a wait\n")


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


# --- the state machine, without a host ------------------------------------------------------------


def test_move_wins_once_and_a_lost_race_writes_nothing(make_job):
    from django_remote_submission import runner
    from django_remote_submission.models import Event

    job = make_job("print(1)")
    first, second = Job.objects.get(pk=job.pk), Job.objects.get(pk=job.pk)
    assert runner.move(first, Job.STATUS.submitted, login="a") is True
    assert runner.move(second, Job.STATUS.submitted) is False  # it saw "initial"
    assert second.status == Job.STATUS.initial  # untouched
    assert Event.objects.filter(job=job, action="state").count() == 1


def test_a_move_the_state_machine_refuses_raises(make_job):
    from django_remote_submission import runner

    job = make_job("print(1)")
    with pytest.raises(runner.IllegalTransition, match="cannot go from initial to running"):
        runner.move(job, Job.STATUS.running)


def test_state_predicates_follow_the_transitions():
    from django_remote_submission.models import TRANSITIONS

    for status in Job.STATUS:
        job = Job(status=status)
        assert job.can_cancel == (Job.STATUS.cancelled in TRANSITIONS[status])
        assert job.can_submit == (status in ("initial", "success", "failure", "cancelled"))
        assert job.is_active == (status in ("submitted", "queued", "running"))
