"""The admin: pages, job actions (submit / resubmit / cancel), write-only secrets, and the
server connection test against the real sshd."""

from __future__ import annotations

import pytest
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.urls import reverse

from django_remote_submission import tasks
from django_remote_submission.models import Event, Interpreter, Job, Log, Result, Server

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.org", "x"))
    return client


@pytest.fixture
def queued(monkeypatch):
    calls = {"submit": [], "cancel": []}
    monkeypatch.setattr(
        tasks.submit_job_to_server, "delay", lambda *a, **kw: calls["submit"].append((a, kw))
    )
    monkeypatch.setattr(tasks.cancel_job, "delay", lambda *a, **kw: calls["cancel"].append(a))
    return calls


@pytest.fixture
def jobs():
    owner = get_user_model().objects.create_user("ada")
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3", arguments=["-u"])
    server = Server.objects.create(title="hpc", hostname="hpc.example.org")
    server.interpreters.add(python3)
    return {
        status: Job.objects.create(
            title=f"{status} job",
            status=status,
            owner=owner,
            server=server,
            interpreter=python3,
            program="print(1)",
            remote_directory="d",
            remote_filename="job.py",
        )
        for status in ("initial", "running", "success")
    }


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def action(client, name: str, objects, **data):
    model = type(objects[0])._meta
    url = reverse(f"admin:{model.app_label}_{model.model_name}_changelist")
    return client.post(
        url,
        {"action": name, "index": 0, helpers.ACTION_CHECKBOX_NAME: [o.pk for o in objects], **data},
        follow="apply" in data,
    )


def test_every_changelist_and_the_job_filters_load(admin_client, jobs):
    for model in ("server", "interpreter", "job", "log", "result", "event", "serveraccount"):
        url = reverse(f"admin:django_remote_submission_{model}_changelist")
        assert admin_client.get(url).status_code == 200, model
    url = reverse("admin:django_remote_submission_job_changelist")
    page = admin_client.get(url, {"status__exact": "running", "q": "job"}).content.decode()
    assert "running job" in page and "success job" not in page
    assert reverse("drs:job-detail", args=[jobs["running"].pk]) in page  # the live page link


def test_job_page_has_read_only_logs_and_results_inlines(admin_client, jobs):
    job = jobs["success"]
    Log.objects.bulk_create([Log(job=job, content=f"row {i}\n") for i in range(250)])
    result = Result.objects.create(job=job, remote_filename="out.txt", size=2)
    result.local_file.save("out.txt", ContentFile(b"hi"))
    page = admin_client.get(
        reverse("admin:django_remote_submission_job_change", args=[job.pk])
    ).content.decode()
    assert "row 249" in page and "row 50\n" in page and "row 49\n" not in page  # the latest 200
    assert reverse("drs:result-download", args=[job.pk, result.pk]) in page
    assert reverse("drs:job-detail", args=[job.pk]) in page
    assert 'name="logs-0-content"' not in page  # read only


def test_submit_asks_for_a_password_then_queues_the_initial_jobs(
    admin_client, jobs, queued, django_capture_on_commit_callbacks
):
    selected = [jobs["initial"], jobs["running"]]
    form = action(admin_client, "submit_jobs", selected)
    assert form.status_code == 200
    assert 'type="password"' in form.content.decode() and 'name="apply"' in form.content.decode()
    assert queued["submit"] == []
    with django_capture_on_commit_callbacks(execute=True):
        done = action(
            admin_client, "submit_jobs", selected, apply="1", username="ada", password="pw"
        )
    assert queued["submit"] == [
        (
            (jobs["initial"].pk,),
            {"username": "ada", "login_with": "password", "remote": True, "password": "pw"},
        )
    ]
    assert "Queued 1 job." in messages_of(done)
    assert any("running job" in m for m in messages_of(done))  # skipped, and said so


def test_resubmit_and_cancel_act_on_the_right_states(
    admin_client, jobs, queued, django_capture_on_commit_callbacks
):
    everything = list(jobs.values())
    with django_capture_on_commit_callbacks(execute=True):
        action(admin_client, "resubmit_jobs", everything, apply="1", password="")
        action(admin_client, "cancel_jobs", everything)
    # A superuser may use the shared login: a blank password does.
    assert queued["submit"] == [
        ((jobs["success"].pk,), {"username": "root", "login_with": "shared", "remote": True})
    ]
    assert sorted(queued["cancel"]) == sorted([(jobs["initial"].pk,), (jobs["running"].pk,)])
    actions = Event.objects.filter(actor__username="root").values_list("action", flat=True)
    assert sorted(actions) == ["cancel", "cancel", "resubmit"]


def test_staff_without_permissions_see_no_job_actions(client, jobs, queued):
    staff = get_user_model().objects.create_user("staffer", password="x", is_staff=True)
    client.force_login(staff)
    url = reverse("admin:django_remote_submission_job_changelist")
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    page = client.get(url).content.decode()
    assert "running job" in page and "submit_jobs" not in page and "cancel_jobs" not in page
    action(client, "cancel_jobs", [jobs["running"]])
    assert queued["cancel"] == []


def test_server_access_and_credential_changes_are_audited(admin_client):
    group = Group.objects.create(name="hpc-team")
    server = Server.objects.create(title="hpc", hostname="hpc.example.org")
    url = reverse("admin:django_remote_submission_server_change", args=[server.pk])
    data = {
        "title": "hpc",
        "hostname": "hpc.example.org",
        "port": 22,
        "username": "svc",
        "private_key": "",
        "private_key_passphrase": "",
        "host_key": "",
        "allowed_groups": [group.pk],
    }
    assert admin_client.post(url, data).status_code == 302
    events = list(Event.objects.filter(server=server).values_list("action", "reason"))
    assert events == [
        ("access", "allowed groups: hpc-team; runs on the worker's machine: False"),
        ("credentials", "username"),
    ]


def test_a_host_key_that_is_not_a_known_hosts_line_is_refused(admin_client):
    server = Server.objects.create(title="hpc", hostname="hpc.example.org")
    url = reverse("admin:django_remote_submission_server_change", args=[server.pk])
    fingerprint = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
    data = {"title": "hpc", "hostname": "hpc.example.org", "port": 22, "host_key": fingerprint}
    response = admin_client.post(url, {**data, "username": "", "private_key": ""})
    assert response.status_code == 200
    assert "Not a known_hosts line" in response.content.decode()
    server.refresh_from_db()
    assert server.host_key == ""


def test_the_audit_trail_and_server_accounts_are_listed_read_only(admin_client, jobs):
    from django_remote_submission import audit

    audit.record(Event.Action.submit, job=jobs["initial"], login="ada")
    url = reverse("admin:django_remote_submission_event_changelist")
    page = admin_client.get(url).content.decode()
    assert "initial job" in page and "ada" in page
    event = Event.objects.get()
    change = reverse("admin:django_remote_submission_event_change", args=[event.pk])
    assert 'name="reason"' not in admin_client.get(change).content.decode()
    assert admin_client.post(change, {"reason": "edited"}).status_code == 403
    url = reverse("admin:django_remote_submission_serveraccount_changelist")
    assert admin_client.get(url).status_code == 200


def test_stored_private_key_is_write_only(admin_client):
    server = Server.objects.create(
        title="hpc", hostname="hpc.example.org", private_key="-----BEGIN KEY-----Zq8xW"
    )
    url = reverse("admin:django_remote_submission_server_change", args=[server.pk])
    page = admin_client.get(url).content.decode()
    assert "Zq8xW" not in page
    data = {
        "title": "hpc2",
        "hostname": "hpc.example.org",
        "port": 22,
        "username": "",
        "private_key": "",
        "private_key_passphrase": "",
        "host_key": "",
    }
    assert admin_client.post(url, data).status_code == 302
    server.refresh_from_db()
    assert server.title == "hpc2" and server.private_key == "-----BEGIN KEY-----Zq8xW"
    admin_client.post(url, {**data, "clear_secrets": "on"})
    server.refresh_from_db()
    assert server.private_key == ""


@pytest.fixture
def ssh_server(sshd):
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3 -u")
    missing = Interpreter.objects.create(name="nope", path="/opt/nowhere/python9")
    server = Server.objects.create(
        title="test sshd", hostname=sshd.host, port=sshd.port, host_key=sshd.host_key
    )
    if sshd.password is None:  # not root: key login as the current user
        server.username, server.private_key = sshd.key_user, sshd.key_text
        server.save()
    server.interpreters.set([python3, missing])
    return server


def login(sshd) -> dict:
    if sshd.password is None:
        return {"username": "", "password": ""}
    return {"username": sshd.password_user, "password": sshd.password}


def test_connection_test_reports_login_host_key_and_interpreter_paths(
    admin_client, sshd, ssh_server
):
    assert action(admin_client, "test_connection", [ssh_server]).status_code == 200  # the form
    page = action(admin_client, "test_connection", [ssh_server], apply="1", **login(sshd))
    text = page.content.decode()
    user = sshd.password_user or sshd.key_user
    assert f"Login: {user} logged in with" in text
    assert "Host key: matches the key on record (SHA256:" in text
    assert "Interpreter python3: /usr/bin/python3" in text
    assert "Interpreter nope: /opt/nowhere/python9 not found" in text


def test_connection_test_reports_a_refused_login_and_an_unknown_host_key(
    admin_client, sshd, ssh_server
):
    if sshd.password is None:
        pytest.skip("password logins need root")
    page = action(
        admin_client,
        "test_connection",
        [ssh_server],
        apply="1",
        username=sshd.password_user,
        password="wrong",
    )
    assert "Login: " in page.content.decode() and "logged in" not in page.content.decode()
    Server.objects.filter(pk=ssh_server.pk).update(host_key="")
    page = action(admin_client, "test_connection", [ssh_server], apply="1", **login(sshd))
    assert "Host key: " in page.content.decode()
    assert "logged in" not in page.content.decode()
