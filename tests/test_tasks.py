"""The original 2.1.0 API keeps working: the README Quickstart, copy, remote=False, the pool."""

from __future__ import annotations

import os
import uuid

import pytest

from django_remote_submission.models import Interpreter, Job, Server
from django_remote_submission.tasks import (
    LogPolicy,
    copy_job_to_server,
    submit_job_to_server,
)

pytestmark = pytest.mark.django_db


def logs(job, stream="stdout") -> str:
    return "".join(job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True))


def test_original_quickstart_calls_work_unchanged(sshd, owner, eager):
    server = Server.objects.get_or_create(
        title="My Server Title", hostname=sshd.host, port=sshd.port
    )[0]
    Server.objects.filter(pk=server.pk).update(host_key=sshd.host_key)
    python3 = Interpreter.objects.get_or_create(name="python3", path="/usr/bin/python3 -u")[0]
    server.interpreters.set([python3])
    job = Job.objects.get_or_create(
        title="My Job Title",
        program='print("hello world")\nopen("out.txt", "w").write("x")',
        remote_directory=f"{sshd.base_dir_pw}/quickstart/",
        remote_filename="test.py",
        owner=owner,
        server=server,
        interpreter=python3,
    )[0]
    modified_files = submit_job_to_server(job_pk=job.pk, password=sshd.password)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert modified_files == {"out.txt": job.results.get().pk}
    assert logs(job) == "hello world\n"
    again = submit_job_to_server.delay(job_pk=job.pk, password=sshd.password)
    assert set(again.get()) == {"out.txt"}


def test_copy_job_to_server_only_uploads(make_job, sshd):
    job = make_job("print('not run')\n")
    copy_job_to_server(job.pk, password=sshd.password)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    path = os.path.join(job.remote_directory, job.remote_filename)
    with open(path) as f:
        assert f.read() == "print('not run')\n"
    assert list(job.logs.values_list("stream", "content")) == [
        ("stdout", f"job.py successfully copied to 127.0.0.1:{job.remote_directory}\n")
    ]


def test_remote_false_runs_through_the_same_path(make_job, submit, tmp_path):
    program = (
        "import sys, os\nprint('out', flush=True)\nprint('err', file=sys.stderr)\n"
        "os.makedirs('d')\nopen('d/r.txt', 'w').write('R')\nsys.exit(4)\n"
    )
    remote = make_job(program)
    submit(remote)
    local = make_job(program, directory=str(tmp_path / f"local {uuid.uuid4().hex[:6]}"))
    submit_job_to_server(local.pk, remote=False)
    for job in (remote, local):
        job.refresh_from_db()
        assert (job.status, job.exit_code, job.error) == (
            Job.STATUS.failure,
            4,
            "The program exited with status 4.",
        )
        assert (logs(job), logs(job, "stderr")) == ("out\n", "err\n")
        assert [(r.remote_filename, r.local_file.read()) for r in job.results.all()] == [
            ("d/r.txt", b"R")
        ]


def test_server_flagged_local_runs_on_the_worker(make_job, server, tmp_path):
    Server.objects.filter(pk=server.pk).update(local=True, hostname="nowhere.invalid")
    job = make_job("print('here')", directory=str(tmp_path / "x"))
    submit_job_to_server(job.pk)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert logs(job) == "here\n"


def test_jobs_share_one_pooled_connection(make_job, submit, sshd):
    before = sshd.log().count("Accepted password")
    for _ in range(3):
        job = make_job("print(1)")
        submit(job, log_policy=LogPolicy.LOG_TOTAL)
        job.refresh_from_db()
        assert job.status == Job.STATUS.success
    assert sshd.log().count("Accepted password") - before <= 1


def test_password_is_encrypted_before_the_broker(sshd):
    from django_remote_submission.credentials import decrypt, is_token

    sent = {}

    class Capture(Exception):
        pass

    def fake_send(self, args, kwargs, **options):
        sent.update(kwargs=kwargs, options=options)
        raise Capture

    from celery import Task

    original = Task.apply_async
    Task.apply_async = fake_send
    try:
        with pytest.raises(Capture):
            submit_job_to_server.delay(1, password="hunter2")
    finally:
        Task.apply_async = original
    assert is_token(sent["kwargs"]["password"])
    assert decrypt(sent["kwargs"]["password"]) == "hunter2"
    assert "hunter2" not in sent["options"]["kwargsrepr"]
    assert "hunter2" not in repr(sent["options"])


def test_is_matching_is_still_in_tasks_as_in_2_1_0():
    from django_remote_submission.tasks import is_matching

    examples = [["1.txt"], ["[12].txt"], ["*.txt"], ["1.txt", "!*.txt"], ["!*.txt", "[12].txt"]]
    assert [is_matching("1.txt", patterns=p) for p in examples] == [True, True, True, False, True]
    assert is_matching("anything") is True
