"""The pages: who sees which job, the submit form, submit / cancel, log and result downloads."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.urls import reverse

from django_remote_submission import tasks
from django_remote_submission.models import Interpreter, Job, Log, Result, Server
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """Usage: ``queued["submit"]``: the calls the views made to the Celery tasks' ``delay``."""
    calls = {"submit": [], "cancel": []}
    monkeypatch.setattr(
        tasks.submit_job_to_server, "delay", lambda *a, **kw: calls["submit"].append((a, kw))
    )
    monkeypatch.setattr(tasks.cancel_job, "delay", lambda *a, **kw: calls["cancel"].append(a))
    return calls


@pytest.fixture
def interpreters():
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3", arguments=["-u"])
    bash = Interpreter.objects.create(name="bash", path="/bin/bash")
    return python3, bash


@pytest.fixture
def local(interpreters):
    server = Server.objects.create(title="localhost", hostname="localhost", local=True)
    server.interpreters.set(interpreters)
    return server


@pytest.fixture
def remote(interpreters):
    server = Server.objects.create(title="hpc", hostname="hpc.example.org")
    server.interpreters.set(interpreters[:1])
    return server


@pytest.fixture
def users():
    """alice and bob; staff: ``is_staff`` and no permission; root: a superuser."""
    User = get_user_model()
    found = {
        name: User.objects.create_user(name, password="pw", is_staff=name == "staff")
        for name in ("alice", "bob", "staff")
    }
    found["root"] = User.objects.create_superuser("root", password="pw")
    return found


def grant(user, *codenames: str) -> None:
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


@pytest.fixture
def make_job(remote, interpreters):
    def make(owner, **fields):
        server = fields.pop("server", remote)
        fields.setdefault("remote_directory", "drs-jobs/x")
        return factories.job(owner, server, interpreters[0], **fields)

    return make


def client_for(client, user):
    client.force_login(user)
    return client


def test_pages_need_a_login(client, users, make_job):
    job = make_job(users["alice"])
    for url in (
        reverse("drs:job-list"),
        reverse("drs:job-detail", args=[job.pk]),
        reverse("drs:job-create"),
        reverse("drs:job-log", args=[job.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("drs:login"))


def test_list_shows_own_jobs_only_and_view_job_shows_all(client, users, make_job):
    make_job(users["alice"], title="alice's")
    make_job(users["bob"], title="bob's")
    page = client_for(client, users["alice"]).get(reverse("drs:job-list")).content.decode()
    assert "alice&#x27;s" in page and "bob&#x27;s" not in page
    assert 'data-ws="/ws/job-user/"' in page
    page = client_for(client, users["staff"]).get(reverse("drs:job-list")).content.decode()
    assert "alice&#x27;s" not in page and "bob&#x27;s" not in page  # is_staff alone: nothing
    grant(users["staff"], "view_job")
    page = client_for(client, users["staff"]).get(reverse("drs:job-list")).content.decode()
    assert "alice&#x27;s" in page and "bob&#x27;s" in page


def test_foreign_job_pages_and_downloads_answer_404(client, users, make_job):
    job = make_job(users["bob"])
    result = Result.objects.create(job=job, remote_filename="out.txt", size=2)
    result.local_file.save("out.txt", ContentFile(b"hi"))
    client_for(client, users["alice"])
    for url in (
        reverse("drs:job-detail", args=[job.pk]),
        reverse("drs:job-row", args=[job.pk]),
        reverse("drs:job-results", args=[job.pk]),
        reverse("drs:job-log", args=[job.pk]),
        reverse("drs:result-download", args=[job.pk, result.pk]),
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("drs:job-cancel", args=[job.pk])).status_code == 404
    assert client.post(reverse("drs:job-submit", args=[job.pk])).status_code == 404
    client_for(client, users["staff"])
    assert client.get(reverse("drs:job-detail", args=[job.pk])).status_code == 404
    client_for(client, users["root"])
    assert client.get(reverse("drs:job-detail", args=[job.pk])).status_code == 200
    assert client.get(reverse("drs:result-download", args=[job.pk, result.pk])).status_code == 200


def test_detail_shows_state_error_results_and_live_hooks(client, users, make_job):
    job = make_job(
        users["alice"], status="failure", exit_code=3, error="The program exited with status 3."
    )
    result = Result.objects.create(job=job, remote_filename="sub/out.csv", size=5, sha256="ab" * 32)
    result.local_file.save("sub/out.csv", ContentFile(b"a,b\n1"))
    page = (
        client_for(client, users["alice"])
        .get(reverse("drs:job-detail", args=[job.pk]))
        .content.decode()
    )
    assert f'data-ws="/ws/job-log/{job.pk}/"' in page
    assert 'data-status="failure"' in page
    assert "The program exited with status 3." in page
    assert reverse("drs:result-download", args=[job.pk, result.pk]) in page
    assert "sub/out.csv" in page and "5 bytes" in page
    assert reverse("drs:job-log", args=[job.pk]) in page
    assert "Resubmit" in page
    assert "django_remote_submission/job_detail.js" in page


def test_full_log_download_streams_every_row_in_order(client, users, make_job):
    job = make_job(users["alice"])
    rows = [("stdout", "one\n"), ("stderr", "oops\n"), ("system", "note\n"), ("stdout", "two\n")]
    Log.objects.bulk_create([Log(job=job, stream=s, content=c) for s, c in rows * 150])
    client_for(client, users["alice"])
    response = client.get(reverse("drs:job-log", args=[job.pk]))
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="job-{job.pk}.log"'
    assert b"".join(response.streaming_content).decode() == (
        "one\noops\n[system] note\ntwo\n" * 150
    )
    response = client.get(reverse("drs:job-log", args=[job.pk]) + "?stream=stderr")
    assert b"".join(response.streaming_content).decode() == "oops\n" * 150


def test_result_download_is_the_stored_file(client, users, make_job):
    job = make_job(users["alice"])
    data = bytes(range(256)) * 4096  # 1 MiB, several chunks
    result = Result.objects.create(job=job, remote_filename="data/out.bin", size=len(data))
    result.local_file.save("data/out.bin", ContentFile(data))
    response = client_for(client, users["alice"]).get(
        reverse("drs:result-download", args=[job.pk, result.pk])
    )
    assert response["Content-Disposition"] == 'attachment; filename="out.bin"'
    assert response["Content-Length"] == str(len(data))
    assert b"".join(response.streaming_content) == data


def test_submit_form_creates_the_job_and_queues_it_with_the_password(
    client, users, remote, interpreters, queued, django_capture_on_commit_callbacks
):
    client_for(client, users["alice"])
    form = client.get(reverse("drs:job-create")).content.decode()
    assert f'data-servers="{remote.pk}"' in form  # interpreters say which servers offer them
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("drs:job-create"),
            {
                "title": "hello",
                "server": remote.pk,
                "interpreter": interpreters[0].pk,
                "program": "print('hi')",
                "remote_directory": "drs-jobs/a",
                "remote_filename": "",
                "auth": "password",
                "password": "s3cret",
                "timeout": "60",
            },
        )
    job = Job.objects.get(title="hello")
    assert response.status_code == 302
    assert response["Location"] == reverse("drs:job-detail", args=[job.pk])
    assert job.owner == users["alice"] and job.remote_filename == "job.py"
    assert queued["submit"] == [
        (
            (job.pk,),
            {
                "username": "alice",
                "login_with": "password",
                "remote": True,
                "password": "s3cret",
                "timeout": 60,
            },
        )
    ]
    assert [e.action for e in job.events.all()] == ["create", "submit"]


def test_submit_form_refuses_an_interpreter_the_server_lacks_and_a_missing_password(
    client, users, remote, interpreters, queued
):
    client_for(client, users["alice"])
    response = client.post(
        reverse("drs:job-create"),
        {
            "title": "x",
            "server": remote.pk,
            "interpreter": interpreters[1].pk,
            "program": "echo",
            "remote_directory": "d",
            "auth": "password",
            "password": "",
        },
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "interpreter" in errors and "password" in errors
    assert not Job.objects.exists() and queued["submit"] == []


def test_local_server_runs_without_ssh_and_stored_credential_needs_no_password(
    client, users, local, remote, interpreters, queued, django_capture_on_commit_callbacks
):
    from django_remote_submission import keys
    from django_remote_submission.models import ServerAccount

    grant(users["alice"], "run_locally")
    keys.generate(ServerAccount.objects.create(user=users["alice"], server=remote))
    client_for(client, users["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("drs:job-create"),
            {
                "title": "here",
                "server": local.pk,
                "interpreter": interpreters[1].pk,
                "program": "echo hi",
                "remote_directory": "d",
                "auth": "password",
            },
        )
        client.post(
            reverse("drs:job-create"),
            {
                "title": "there",
                "server": remote.pk,
                "interpreter": interpreters[0].pk,
                "program": "print(1)",
                "remote_directory": "d",
                "auth": "stored",
                "password": "x",
            },
        )
    here, there = Job.objects.get(title="here"), Job.objects.get(title="there")
    assert here.remote_filename == "job.sh"
    assert queued["submit"] == [
        ((here.pk,), {"username": "alice", "login_with": "local", "remote": False}),
        ((there.pk,), {"username": "alice", "login_with": "account", "remote": True}),
    ]


def test_a_plain_user_is_offered_neither_local_servers_nor_the_shared_login(
    client, users, local, remote, interpreters, queued
):
    client_for(client, users["alice"])
    form = client.get(reverse("drs:job-create")).context["form"]
    assert list(form.fields["server"].queryset) == [remote]
    assert f'data-servers="{remote.pk}"' in str(form["interpreter"])
    response = client.post(
        reverse("drs:job-create"),
        new_job_form(local, interpreters[1], auth="password", password="pw"),
    )
    assert "server" in response.context["form"].errors
    response = client.post(reverse("drs:job-create"), new_job_form(remote, interpreters[0]))
    assert response.context["form"].non_field_errors() == [
        "Enter the password of alice on hpc, or make a key for this server on the “My SSH "
        "keys” page."
    ]
    assert not Job.objects.exists() and queued["submit"] == []


def test_resubmit_reuses_the_options_and_cancel_queues_a_cancel(
    client, users, make_job, queued, django_capture_on_commit_callbacks
):
    job = make_job(
        users["alice"],
        status="success",
        options={
            "timeout": 30.0,
            "log_policy": 1,
            "store_results": ["*.txt"],
            "remote": True,
            "username": "ada",
            "key_filename": None,
        },
    )
    client_for(client, users["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("drs:job-submit", args=[job.pk]), {"password": "pw"})
    assert response.status_code == 302
    assert queued["submit"] == [
        (
            (job.pk,),
            {
                "username": "alice",
                "login_with": "password",
                "remote": True,
                "password": "pw",
                "timeout": 30.0,
                "log_policy": 1,
                "store_results": ["*.txt"],
            },
        )
    ]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("drs:job-cancel", args=[job.pk]))
    assert queued["cancel"] == []  # a finished job is not cancelled
    Job.objects.filter(pk=job.pk).update(status="running")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("drs:job-cancel", args=[job.pk]))
        client.post(reverse("drs:job-submit", args=[job.pk]), {"password": "pw"})
    assert queued["cancel"] == [(job.pk,)]
    assert len(queued["submit"]) == 1  # a running job is not resubmitted
    assert [e.action for e in job.events.all()] == ["resubmit", "cancel"]


def test_login_page_logs_in_and_goes_to_the_list(client, users):
    response = client.post(reverse("drs:login"), {"username": "alice", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == reverse("drs:job-list")
    assert client.get(reverse("drs:job-list")).status_code == 200


@pytest.mark.django_db
def test_the_rest_api_is_mounted_under_the_app_urls(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("api-user", password="p"))
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"openapi" in schema.content
    assert client.get("/api/jobs/").json()["results"] == []


def test_only_users_with_choose_login_choose_the_login_name(
    client, users, make_job, queued, django_capture_on_commit_callbacks
):
    job = make_job(users["alice"])
    client_for(client, users["alice"])
    page = client.get(reverse("drs:job-detail", args=[job.pk])).content.decode()
    assert 'name="username"' not in page
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("drs:job-submit", args=[job.pk]), {"username": "root", "password": "p"})
    assert queued["submit"][0][1]["username"] == "alice"
    for staff in (users["staff"], users["alice"]):  # is_staff alone is not enough
        page = client_for(client, staff).get(reverse("drs:job-detail", args=[job.pk]))
        assert 'name="username"' not in page.content.decode()
    grant(users["alice"], "choose_login")
    client_for(client, users["alice"])
    page = client.get(reverse("drs:job-detail", args=[job.pk])).content.decode()
    assert 'name="username"' in page
    Job.objects.filter(pk=job.pk).update(status="failure")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("drs:job-submit", args=[job.pk]), {"username": "svc", "password": "p"})
    assert queued["submit"][1][1]["username"] == "svc"


def new_job_form(server, interpreter, **fields) -> dict:
    return {
        "title": "crlf",
        "server": server.pk,
        "interpreter": interpreter.pk,
        "program": "print(1)",
        "remote_directory": "d",
        "auth": "stored",
        **fields,
    }


def password_form(server, interpreter, **fields) -> dict:
    return new_job_form(server, interpreter, auth="password", password="pw", **fields)


def test_a_program_typed_in_the_form_is_stored_with_lf_line_ends(
    client, users, remote, interpreters, queued
):
    client_for(client, users["alice"])
    program = 'x=1\r\nif [ "$x" = 1 ]; then\r\n  echo one\rfi\r\n'
    client.post(reverse("drs:job-create"), password_form(remote, interpreters[0], program=program))
    assert Job.objects.get().program == 'x=1\nif [ "$x" = 1 ]; then\n  echo one\nfi\n'


def test_a_program_saved_in_the_admin_is_stored_with_lf_line_ends(rf, users, make_job):
    from django.contrib import admin

    job = make_job(users["alice"])
    request = rf.get("/")
    request.user = users["staff"]
    form_class = admin.site._registry[Job].get_form(request, job)
    form = form_class(
        {
            "title": job.title,
            "owner": job.owner.pk,
            "server": job.server.pk,
            "interpreter": job.interpreter.pk,
            "program": "echo a\r\necho b\r\n",
            "remote_directory": job.remote_directory,
            "remote_filename": job.remote_filename,
        },
        instance=job,
    )
    assert form.is_valid(), form.errors
    assert form.save().program == "echo a\necho b\n"


def test_the_orm_keeps_a_cr_the_program_needs(make_job, users):
    job = make_job(users["alice"])
    Job.objects.filter(pk=job.pk).update(program="printf 'a\\rb'\r\n")
    job.refresh_from_db()
    assert job.program == "printf 'a\\rb'\r\n"


@pytest.mark.django_db(transaction=True)
def test_a_bash_program_typed_with_crlf_runs(client, users, local, interpreters, tmp_path):
    from django_remote_submission.tasks import submit_job_to_server

    grant(users["alice"], "run_locally")
    client_for(client, users["alice"])
    program = 'for i in 1 2; do\r\n  echo "line $i"\r\ndone\r\n'
    fields = new_job_form(
        local, interpreters[1], program=program, remote_directory=str(tmp_path / "job")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks.submit_job_to_server, "delay", lambda *a, **kw: None)
        client.post(reverse("drs:job-create"), fields)
    job = Job.objects.get()
    submit_job_to_server(job.pk, remote=False)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert "".join(job.logs.filter(stream="stdout").values_list("content", flat=True)) == (
        "line 1\nline 2\n"
    )


@pytest.mark.django_db(transaction=True)
def test_a_job_the_broker_cannot_take_fails_with_the_reason_and_the_form_says_so(
    client, users, remote, interpreters, broker_down
):
    client_for(client, users["alice"])
    response = client.post(
        reverse("drs:job-create"),
        new_job_form(remote, interpreters[0], auth="password", password="s3cret"),
        follow=True,
    )
    assert response.status_code == 200
    job = Job.objects.get()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith("Could not queue the job: the Celery broker (redis://127.0.0.1:")
    assert "Start the broker and a worker, then submit it again." in job.error
    assert "s3cret" not in job.error
    [message] = response.context["messages"]
    assert message.level_tag == "error" and str(message) == job.error
    assert "queued." not in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_resubmission_or_cancel_the_broker_cannot_take_leaves_the_job_as_it_was(
    client, users, make_job, broker_down
):
    done = make_job(users["alice"], status="success")
    client_for(client, users["alice"])
    response = client.post(
        reverse("drs:job-submit", args=[done.pk]), {"password": "pw"}, follow=True
    )
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "Could not queue the job" in str(message)
    done.refresh_from_db()
    assert done.status == Job.STATUS.success
    Job.objects.filter(pk=done.pk).update(status="running")
    response = client.post(reverse("drs:job-cancel", args=[done.pk]), follow=True)
    [message] = response.context["messages"]
    assert "Could not queue the cancel" in str(message)


@pytest.mark.parametrize(
    ("role", "sees_job", "servers"),
    [
        ("alice", True, {"hpc"}),  # the owner, a plain user
        ("bob", False, {"hpc"}),  # another plain user
        ("member", False, {"hpc", "group only"}),  # in the group of "group only"
        ("staff", False, {"hpc"}),  # is_staff and no permission
        ("root", True, {"hpc", "group only", "localhost"}),  # a superuser
    ],
)
def test_page_access_matrix(
    client, users, make_job, remote, local, interpreters, role, sees_job, servers
):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="hpc-team")
    only = Server.objects.create(title="group only", hostname="g.example.org")
    only.interpreters.set(interpreters)
    only.allowed_groups.set([group])
    users["member"] = get_user_model().objects.create_user("member")
    users["member"].groups.add(group)
    job = make_job(users["alice"])
    client_for(client, users[role])
    detail = client.get(reverse("drs:job-detail", args=[job.pk]))
    assert detail.status_code == (200 if sees_job else 404)
    form = client.get(reverse("drs:job-create")).context["form"]
    assert {s.title for s in form.fields["server"].queryset} == servers
    keys_page = client.get(reverse("drs:key-list")).content.decode()
    assert ("group only" in keys_page) == ("group only" in servers)
    assert "localhost" not in keys_page  # no SSH keys for the worker's own machine
    response = client.post(reverse("drs:job-cancel", args=[job.pk]))
    assert response.status_code == (302 if sees_job else 404)
