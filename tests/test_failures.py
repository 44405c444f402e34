"""Bad input ends the job in failure with a readable reason, quickly, and runs nothing."""

from __future__ import annotations

import os
import time

import pytest

from django_remote_submission.models import Interpreter, Job, Server
from tests.services import free_port

pytestmark = pytest.mark.django_db


def failed(job, submit, **kwargs) -> str:
    t0 = time.monotonic()
    submit(job, **kwargs)
    assert time.monotonic() - t0 < 30
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure, job.error
    return job.error


def test_wrong_password(make_job, submit, sshd):
    job = make_job("print(1)")
    error = failed(job, submit, password="not-the-password")
    assert error == (
        f"Authentication failed for {sshd.password_user}@127.0.0.1:{sshd.port} using password."
    )
    assert "not-the-password" not in error


def test_unknown_host(make_job, submit):
    job = make_job("print(1)")
    Server.objects.filter(pk=job.server_id).update(hostname="no-such-host.invalid")
    assert failed(job, submit).startswith("Unknown host 'no-such-host.invalid'")


def test_closed_port(make_job, submit):
    job = make_job("print(1)")
    port = free_port()
    Server.objects.filter(pk=job.server_id).update(port=port)
    assert failed(job, submit) == (
        f"Connection refused by 127.0.0.1:{port}: no SSH server on that port?"
    )


def test_missing_interpreter(make_job, submit, server):
    missing = Interpreter.objects.create(name="nope", path="/usr/bin/no-such-python")
    server.interpreters.add(missing)
    job = make_job("print(1)", interpreter=missing)
    assert failed(job, submit) == (
        "Interpreter '/usr/bin/no-such-python' not found on the host (or not executable)."
    )


def test_unwritable_directory(make_job, submit):
    job = make_job("print(1)", directory="/root/forbidden/job")
    error = failed(job, submit)
    assert error.startswith("Cannot create or enter the remote directory '/root/forbidden/job'")
    assert "Permission denied" in error


def test_shell_metacharacters_are_never_executed(make_job, submit, server, sshd):
    base = sshd.base_dir_pw or sshd.base_dir_key
    odd = Interpreter.objects.create(
        name="odd",
        path="/usr/bin/python3",
        arguments=[
            "-u",
            "-c",
            "import sys; print(sys.argv[1:])",
            f"$(touch {base}/pwned1)",
            "`id`",
        ],
    )
    server.interpreters.add(odd)
    directory = f"{base}/a dir $(touch {base}/pwned2); touch {base}/pwned3"
    job = make_job(
        "unused", interpreter=odd, directory=directory, remote_filename="x;touch pwned4 'q\".py"
    )
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    out = "".join(job.logs.values_list("content", flat=True))
    assert out == str([f"$(touch {base}/pwned1)", "`id`", "x;touch pwned4 'q\".py"]) + "\n"
    for n in range(1, 5):
        assert not os.path.exists(f"{base}/pwned{n}")
        assert not os.path.exists(os.path.join(directory, f"pwned{n}"))
    assert os.path.isfile(os.path.join(directory, "x;touch pwned4 'q\".py"))


def test_interpreter_path_with_arguments_as_in_the_original(make_job, submit, server):
    legacy = Interpreter.objects.create(name="python3", path="/usr/bin/python3 -u")
    server.interpreters.add(legacy)
    job = make_job("import sys\nprint(sys.orig_argv)", interpreter=legacy)
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    out = "".join(job.logs.values_list("content", flat=True))
    assert out == "['/usr/bin/python3', '-u', 'job.py']\n"


def test_invalid_log_policy_fails_the_job_with_a_reason(make_job, submit):
    job = make_job("print(1)")
    submit(job, log_policy=7)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith("Invalid submission: Unknown log policy 7")


def test_the_worker_survives_a_failure_and_runs_the_next_job(make_job, submit):
    bad = make_job("print(1)")
    failed(bad, submit, password="wrong")
    good = make_job("print('still here')")
    submit(good)
    good.refresh_from_db()
    assert good.status == Job.STATUS.success


def test_clean_refuses_an_interpreter_the_server_does_not_offer(make_job):
    from django.core.exceptions import ValidationError

    other = Interpreter.objects.create(name="perl", path="/usr/bin/perl")
    job = make_job("print(1)")
    job.interpreter = other
    with pytest.raises(ValidationError, match="not offered by the server"):
        job.clean()


def test_a_directory_name_with_a_newline_works(make_job, submit, sshd):
    base = sshd.base_dir_pw or sshd.base_dir_key
    directory = f"{base}/line\nbreak"
    job = make_job("open('r.txt', 'w').write('r')\nprint('ok')", directory=directory)
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert "".join(job.logs.values_list("content", flat=True)) == "ok\n"
    assert [r.remote_filename for r in job.results.all()] == ["r.txt"]
    assert os.path.isfile(os.path.join(directory, "r.txt"))
