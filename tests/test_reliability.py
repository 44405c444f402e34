"""Faults injected for real: a cut link, a killed worker, a doubled delivery, cancel, secrets.

These tests use a real Celery worker process and redis; the database is shared with the
worker (transactional tests).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import redis
from django.db import connection

from django_remote_submission import runner
from django_remote_submission.models import Job
from django_remote_submission.tasks import cancel_job, submit_job_to_server
from tests.services import postgres_bin, session_alive, start_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

COUNTER = (
    "import sys, time\n"
    "for i in range({n}):\n"
    "    print(f'line {{i}}', flush=True)\n"
    "    print(f'err {{i}}', file=sys.stderr, flush=True)\n"
    "    time.sleep({pause})\n"
)


def stream(job, name="stdout") -> str:
    return "".join(job.logs.filter(stream=name).order_by("id").values_list("content", flat=True))


def status(job) -> str:
    job.refresh_from_db()
    return job.status


def session_pids(sshd) -> list[int]:
    """The per-connection sshd processes (the listening sshd's sshd descendants: the
    monitor and the unprivileged process of each connection), not the jobs they started."""
    found, parents = [], [sshd.proc.pid]
    while parents:
        argv = ["pgrep", "-x", "-P", str(parents.pop()), "sshd"]
        out = subprocess.run(argv, capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        found += children
        parents += children
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cut_connection_mid_job_resumes_without_gap_or_duplicate(make_job, sshd):
    job = make_job(COUNTER.format(n=30, pause=0.1))
    done = threading.Thread(
        target=runner.submit, args=(job.pk,), kwargs={"password": sshd.password}
    )
    done.start()
    wait_for(
        lambda: job.logs.filter(stream="stdout").count() >= 5,
        timeout=30,
        message=lambda: f"first lines; job {status(job)}: {job.error}",
    )
    victims = session_pids(sshd)
    assert victims
    for pid in victims:  # the real link goes down: every SSH session process dies
        os.kill(pid, signal.SIGKILL)
    done.join(60)
    assert status(job) == Job.STATUS.success, job.error
    assert stream(job) == "".join(f"line {i}\n" for i in range(30))
    assert stream(job, "stderr") == "".join(f"err {i}\n" for i in range(30))
    assert "Connection lost" in stream(job, "system")


def test_killed_worker_mid_job_is_resumed_with_complete_logs(make_job, sshd, celery_app, redis_url):
    env = {"DRS_TEST_HEARTBEAT": "1"}
    first = start_worker(redis_url, extra_env=env)
    try:
        job = make_job(
            COUNTER.format(n=40, pause=0.1) + "open('result.txt', 'w').write('finished')\n"
        )
        submit_job_to_server.delay(job.pk, password=sshd.password)
        wait_for(
            lambda: job.logs.filter(stream="stdout").count() >= 3,
            timeout=30,
            message=lambda: f"first lines; job {status(job)}; worker log: {first.log()[-3000:]}",
        )
        first.kill()
        assert status(job) == Job.STATUS.running
    finally:
        first.stop()
    second = start_worker(redis_url, extra_env=env)
    try:
        wait_for(
            lambda: status(job) == Job.STATUS.success,
            timeout=60,
            message="job resumed by the new worker",
        )
    finally:
        second.stop()
    assert stream(job) == "".join(f"line {i}\n" for i in range(40))
    assert stream(job, "stderr") == "".join(f"err {i}\n" for i in range(40))
    assert {r.remote_filename: r.local_file.read() for r in job.results.all()} == {
        "result.txt": b"finished"
    }


def test_double_delivery_runs_the_program_once(make_job, sshd, worker):
    base = sshd.base_dir_pw
    job = make_job(
        f"import time\nopen({base!r} + '/ran.{{}}'.format(__import__('uuid')"
        ".uuid4().hex), 'w').close()\ntime.sleep(1)\nprint('done')"
    )
    before = set(os.listdir(base))
    a = submit_job_to_server.apply_async((job.pk,), {"password": sshd.password}, task_id="dup-1")
    b = submit_job_to_server.apply_async((job.pk,), {"password": sshd.password}, task_id="dup-1")
    wait_for(lambda: status(job) == Job.STATUS.success, timeout=60, message="success")
    a.get(timeout=30), b.get(timeout=30)
    again = submit_job_to_server.apply_async(
        (job.pk,), {"password": sshd.password}, task_id="dup-1"
    )  # a late redelivery
    again.get(timeout=30)
    runs = [n for n in set(os.listdir(base)) - before if n.startswith("ran.")]
    assert len(runs) == 1
    assert stream(job) == "done\n"


def test_cancel_stops_every_process_and_keeps_output(make_job, sshd, worker):
    job = make_job(
        "import subprocess, time\nsubprocess.Popen(['sleep', '600'])\n"
        "open('partial.txt', 'w').write('p')\nprint('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    submit_job_to_server.delay(job.pk, password=sshd.password)
    wait_for(lambda: stream(job) == "started\n", timeout=30, message="job started")
    job.refresh_from_db()
    pid = job.pid
    assert alive(pid)
    cancel_job(job.pk)
    wait_for(lambda: status(job) == Job.STATUS.cancelled, timeout=30, message="cancelled")
    assert not alive(pid)
    assert session_alive(pid) == []
    assert job.error == "Cancelled on request; its processes were stopped."
    assert stream(job) == "started\n"
    assert [r.remote_filename for r in job.results.all()] == ["partial.txt"]


def test_password_is_nowhere_in_redis_or_the_database(make_job, sshd, worker, redis_url, settings):
    job = make_job("print('ok')")
    result = submit_job_to_server.delay(job.pk, password=sshd.password)
    assert result.get(timeout=60) == {}
    assert status(job) == Job.STATUS.success
    secret = sshd.password.encode()
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter("*"))
    assert keys
    for key in keys:
        assert secret not in key and secret not in (r.dump(key) or b""), key
    assert secret not in database_dump(settings)
    assert secret.decode() not in worker.log()
    job.refresh_from_db()
    assert job.credential == ""


def database_dump(settings) -> bytes:
    """Every byte the database holds: the SQLite file, or pg_dump's output."""
    database = settings.DATABASES["default"]
    if connection.vendor != "postgresql":
        with open(database["NAME"], "rb") as f:
            return f.read()
    argv = [f"{postgres_bin()}/pg_dump", "-h", database["HOST"], "-p", str(database["PORT"])]
    argv += ["-U", database["USER"], database["NAME"]]
    return subprocess.run(argv, capture_output=True, check=True).stdout


def stored_files(settings, job) -> set[str]:
    base = Path(settings.MEDIA_ROOT) / "results" / str(job.uuid)
    return {str(p.relative_to(settings.MEDIA_ROOT)) for p in base.rglob("*") if p.is_file()}


def test_cut_connection_during_a_result_copy_leaves_no_partial_file(make_job, sshd, settings):
    job = make_job(
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(150):\n        f.write(b'q' * (1 << 20))\n"
    )
    partial = Path(settings.MEDIA_ROOT) / "results" / str(job.uuid) / "big.bin"
    done = threading.Thread(
        target=runner.submit, args=(job.pk,), kwargs={"password": sshd.password}
    )
    done.start()
    wait_for(partial.exists, timeout=60, interval=0.002, message="the copy began")
    for pid in session_pids(sshd):  # the link goes down in the middle of the copy
        os.kill(pid, signal.SIGKILL)
    done.join(120)
    assert status(job) == Job.STATUS.success, job.error
    (result,) = job.results.all()
    assert result.size == 150 << 20
    assert result.sha256 == hashlib.sha256(b"q" * (150 << 20)).hexdigest()
    assert stored_files(settings, job) == {result.local_file.name}
    assert "Connection lost" in stream(job, "system")


def test_old_results_are_deleted_only_once_the_resubmission_commits(make_job, sshd, settings):
    from django.db import transaction

    job = make_job("open('a.txt', 'w').write('first')")
    runner.submit(job.pk, password=sshd.password)
    (first,) = job.results.all()
    with pytest.raises(RuntimeError), transaction.atomic():
        runner.lease(job.pk, "another-submission", {}, "")
        raise RuntimeError("the transaction that replaced them fails")
    assert stored_files(settings, job) == {first.local_file.name}
    assert list(job.results.all()) == [first]
    runner.submit(job.pk, password=sshd.password)  # a resubmission that commits
    (second,) = job.results.all()
    assert second.pk != first.pk
    assert stored_files(settings, job) == {second.local_file.name}
    with second.local_file.open("rb") as f:
        assert f.read() == b"first"


def test_a_failed_job_fails_its_task_in_the_worker_and_leaves_no_secret_in_redis(
    make_job, sshd, worker, redis_url
):
    if sshd.password is None:
        pytest.skip("needs the password user (root)")
    from celery.result import AsyncResult

    from django_remote_submission.tasks import JobFailed

    exits = make_job("import sys\nprint('before')\nsys.exit(3)")
    wrong = "wrong-" + sshd.password
    refused = make_job("print('never')")
    a = submit_job_to_server.delay(exits.pk, password=sshd.password)
    b = submit_job_to_server.delay(refused.pk, password=wrong)
    with pytest.raises(JobFailed) as failed:
        a.get(timeout=60)
    assert str(failed.value) == f"Job {exits.pk} failed: The program exited with status 3."
    b.get(timeout=60, propagate=False)
    for result, job in ((a, exits), (b, refused)):
        state = AsyncResult(result.id)  # as a monitor sees it, from the result backend
        assert state.state == "FAILURE"
        job.refresh_from_db()
        assert job.status == Job.STATUS.failure
        assert str(state.result) == f"Job {job.pk} failed: {job.error}"
    assert "uthentication" in refused.error
    assert f"raised expected: JobFailed('Job {exits.pk} failed" in worker.log()
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter("*"):
        dumped = r.dump(key) or b""
        for secret in (sshd.password.encode(), wrong.encode()):
            assert secret not in key and secret not in dumped, key


def test_a_direct_call_of_a_failing_job_still_returns_a_dict(make_job, sshd, submit):
    job = make_job("import sys\nsys.exit(3)")
    assert submit(job) == {}
    assert status(job) == Job.STATUS.failure
