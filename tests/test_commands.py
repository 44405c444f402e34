"""Operator commands: drs_recover resumes orphaned runs; drs_fetch_host_key shows a key."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from django_remote_submission.models import Job, Server
from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RUNNER = """
import django, sys
django.setup()
from django_remote_submission import runner
runner.submit(int(sys.argv[1]), password=sys.argv[2])
"""


def test_drs_recover_finishes_a_run_whose_process_was_killed(make_job, sshd, settings):
    settings.DRS = {**settings.DRS, "HEARTBEAT_INTERVAL": 1.0}
    job = make_job(
        "import time\nfor i in range(30):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DRS_TEST_HEARTBEAT": "1"}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(job.pk), sshd.password], env=env)
    try:
        wait_for(lambda: job.logs.count() >= 3, timeout=30, message="job started")
    finally:
        proc.kill()
        proc.wait()
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, pk__in=_stale()).exists(),
        timeout=30,
        message="heartbeat went stale",
    )
    out = io.StringIO()
    call_command("drs_recover", stdout=out)
    job.refresh_from_db()
    assert out.getvalue() == f"Job {job.pk}: success\n"
    assert "".join(job.logs.filter(stream="stdout").values_list("content", flat=True)) == "".join(
        f"{i}\n" for i in range(30)
    )


def _stale():
    from django_remote_submission.runner import stale_jobs

    return stale_jobs()


def test_drs_recover_with_nothing_to_do():
    out = io.StringIO()
    call_command("drs_recover", stdout=out)
    assert out.getvalue() == "No stale jobs.\n"


def test_drs_fetch_host_key_shows_and_saves_the_key(server, sshd):
    Server.objects.filter(pk=server.pk).update(host_key="")
    out = io.StringIO()
    call_command("drs_fetch_host_key", server.title, "--save", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == sshd.host_key
    assert lines[1].startswith("SHA256:")
    fp = subprocess.run(
        ["ssh-keygen", "-lf", sshd.host_key_file], capture_output=True, text=True
    ).stdout
    assert lines[1] in fp
    server.refresh_from_db()
    assert server.host_key == sshd.host_key


def test_drs_fetch_host_key_without_save_says_nothing_was_saved(server, sshd):
    Server.objects.filter(pk=server.pk).update(host_key="")
    out = io.StringIO()
    call_command("drs_fetch_host_key", server.title, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == sshd.host_key
    assert lines[2] == (
        "Nothing was saved. Once you have checked the fingerprint, store the key with: "
        "manage.py drs_fetch_host_key 'test sshd' --save"
    )
    server.refresh_from_db()
    assert server.host_key == ""


def test_drs_fetch_host_key_of_an_unknown_server():
    with pytest.raises(CommandError, match="No servers match 'nope'"):
        call_command("drs_fetch_host_key", "nope")
