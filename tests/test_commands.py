"""Operator commands: drs_recover resumes orphaned runs; drs_fetch_host_key shows a key;
drs_rotate_secrets re-encrypts stored secrets."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from django_remote_submission.models import Event, Job, Server
from tests.services import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

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


def test_drs_fetch_host_key_refuses_to_replace_a_different_key_unless_told(server, sshd):
    other = (
        "[127.0.0.1]:22 ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIAbSx0j4pMbdwUcaDXCkqjpQ5SR+ZnHc8/2e3tYLyB9s"
    )
    Server.objects.filter(pk=server.pk).update(host_key=other)
    with pytest.raises(CommandError, match="has another key on record.*--save --replace"):
        call_command("drs_fetch_host_key", server.title, "--save", stdout=io.StringIO())
    server.refresh_from_db()
    assert server.host_key == other
    call_command("drs_fetch_host_key", server.title, "--save", "--replace", stdout=io.StringIO())
    server.refresh_from_db()
    assert server.host_key == sshd.host_key
    event = Event.objects.get(action="credentials", server=server)
    assert event.reason.startswith("host key replaced: SHA256:")


def test_drs_rotate_secrets_re_encrypts_with_the_current_key(settings, django_user_model):
    from cryptography.fernet import Fernet

    from django_remote_submission.credentials import encrypt
    from django_remote_submission.models import Job, ServerAccount

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.DRS = {**settings.DRS, "SECRET_KEY": old}
    user = django_user_model.objects.create_user("ada")
    hpc = Server.objects.create(
        title="hpc", hostname="h", private_key="KEY", private_key_passphrase="PW"
    )
    account = ServerAccount.objects.create(user=user, server=hpc, private_key="MINE")
    python3 = hpc.interpreters.create(name="python3", path="/usr/bin/python3")
    job = Job.objects.create(
        title="t",
        program="",
        owner=user,
        server=hpc,
        interpreter=python3,
        remote_directory="d",
        remote_filename="j.py",
        credential=encrypt("job-pw"),
    )
    # Rotate: the new key first, the old one a fallback; everything still reads.
    settings.DRS = {**settings.DRS, "SECRET_KEY": new, "SECRET_KEY_FALLBACKS": [old]}
    assert Server.objects.get(pk=hpc.pk).private_key == "KEY"
    out = io.StringIO()
    call_command("drs_rotate_secrets", stdout=out)
    assert out.getvalue() == "Re-encrypted 4 secrets with the current key.\n"
    # Without the fallback, everything still reads: it was re-encrypted.
    settings.DRS = {**settings.DRS, "SECRET_KEY": new, "SECRET_KEY_FALLBACKS": []}
    hpc = Server.objects.get(pk=hpc.pk)
    assert (hpc.private_key, hpc.private_key_passphrase) == ("KEY", "PW")
    assert ServerAccount.objects.get(pk=account.pk).private_key == "MINE"
    from django_remote_submission.credentials import decrypt

    assert decrypt(Job.objects.get(pk=job.pk).credential) == "job-pw"


def test_a_secret_no_key_opens_reads_as_unreadable_and_is_kept(settings, client, django_user_model):
    from cryptography.fernet import Fernet

    from django_remote_submission.credentials import UNREADABLE, is_unreadable

    settings.DRS = {**settings.DRS, "SECRET_KEY": Fernet.generate_key().decode()}
    hpc = Server.objects.create(title="hpc", hostname="h", private_key="KEY")
    raw = Server.objects.filter(pk=hpc.pk).values_list("private_key", flat=True)
    settings.DRS = {**settings.DRS, "SECRET_KEY": Fernet.generate_key().decode()}  # lost key
    hpc = Server.objects.get(pk=hpc.pk)
    assert is_unreadable(hpc.private_key) and hpc.private_key == ""
    token = list(raw)[0]
    hpc.title = "renamed"
    hpc.save()  # saving keeps the unreadable secret as it was
    assert list(raw)[0] == token
    client.force_login(django_user_model.objects.create_superuser("root", "r@x.org", "x"))
    from django.urls import reverse

    page = client.get(reverse("admin:django_remote_submission_server_change", args=[hpc.pk]))
    assert page.status_code == 200 and UNREADABLE in page.content.decode()
    listing = client.get(reverse("admin:django_remote_submission_server_changelist"))
    assert listing.status_code == 200 and UNREADABLE in listing.content.decode()
    out = io.StringIO()
    call_command("drs_rotate_secrets", stdout=out)
    assert "Unreadable, enter it again: renamed <h:22> (private_key)" in out.getvalue()
