"""A user's own key, end to end through the pages and the real sshd: make it, install it with
the password once, run jobs with no password, remove it. And refusals that run nothing."""

from __future__ import annotations

import os
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from django_remote_submission.models import Event, Job, Server, ServerAccount

pytestmark = pytest.mark.django_db(transaction=True)


def installed_lines(sshd, comment: str) -> list[str]:
    text = sshd.run_as(sshd.password_user, "cat ~/.ssh/authorized_keys").stdout
    return [line for line in text.splitlines() if line.endswith(comment)]


@pytest.fixture
def web_user(sshd, client):
    """A plain user whose Django name differs from their login on the host."""
    if sshd.password is None:
        pytest.skip("installing a key logs in with a password: needs the password user (root)")
    user = get_user_model().objects.create_user("ada-lovelace", password="web")
    client.force_login(user)
    return user


def new_job(client, server, python3, directory: str, **fields):
    data = {
        "title": "with my key",
        "server": server.pk,
        "interpreter": python3.pk,
        "program": "import getpass\nprint(getpass.getuser())\n",
        "remote_directory": directory,
        "auth": "stored",
        **fields,
    }
    return client.post(reverse("drs:job-create"), data, follow=True)


def test_make_install_run_with_no_password_and_remove(
    client, web_user, sshd, server, python3, celery_app, eager
):
    directory = f"{sshd.base_dir_pw}/{uuid.uuid4().hex[:10]}"
    prefix = f"s{server.pk}"
    client.post(
        reverse("drs:account-edit", args=[server.pk]), {f"{prefix}-username": sshd.password_user}
    )
    client.post(reverse("drs:key-create", args=[server.pk]))
    account = ServerAccount.objects.get(user=web_user, server=server)
    comment = account.public_key.split()[-1]
    assert account.login == sshd.password_user and account.installed is None
    assert installed_lines(sshd, comment) == []

    page = client.post(
        reverse("drs:key-install", args=[server.pk]), {"password": "wrong"}, follow=True
    )
    assert "Authentication failed" in page.content.decode()
    assert installed_lines(sshd, comment) == []
    client.post(reverse("drs:key-install", args=[server.pk]), {"password": sshd.password})
    assert installed_lines(sshd, comment) == [account.public_key]
    assert sshd.run_as(sshd.password_user, "stat -c %a ~/.ssh/authorized_keys").stdout == "600\n"

    response = new_job(client, server, python3, directory)
    job = Job.objects.get(title="with my key")
    assert job.status == Job.STATUS.success, (job.error, response.content.decode()[-2000:])
    assert "".join(job.logs.values_list("content", flat=True)) == f"{sshd.password_user}\n"
    assert job.options["login_with"] == "account" and job.credential == ""
    running = job.events.get(to_state="running")
    assert running.login == sshd.password_user

    client.post(reverse("drs:key-remove", args=[server.pk]))
    assert installed_lines(sshd, comment) == []
    account.refresh_from_db()
    assert account.public_key == "" and account.private_key == ""
    refused = new_job(client, server, python3, directory, title="no key now")
    assert not Job.objects.filter(title="no key now").exists()
    assert "make a key for this server" in refused.content.decode()
    actions = Event.objects.filter(actor=web_user, job__isnull=True)
    assert list(actions.values_list("action", flat=True)) == [
        "account",
        "key_created",
        "key_installed",
        "key_removed",
    ]


def test_a_refused_submission_runs_nothing_on_the_host(
    client, web_user, sshd, python3, celery_app, eager
):
    """A plain user on the worker's own machine: 403, and nothing happens on the host."""
    from rest_framework.test import APIClient

    local = Server.objects.create(title="worker", hostname="localhost", local=True)
    local.interpreters.add(python3)
    directory = f"/tmp/drs-refused-{uuid.uuid4().hex[:10]}"
    job = Job.objects.create(
        title="sneaky",
        program="open('pwned', 'w').write('x')",
        owner=web_user,
        server=local,
        interpreter=python3,
        remote_directory=directory,
        remote_filename="job.py",
    )
    api = APIClient()
    api.force_authenticate(web_user)
    response = api.post(f"/api/jobs/{job.pk}/submit/", {}, format="json")
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == Job.STATUS.initial
    assert not os.path.exists(directory)
