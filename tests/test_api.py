"""The REST API (django_remote_submission/api/): who may do what, bad input, a job end to end.

The permission matrix runs every endpoint and action as anonymous, owner, other user, staff
without permissions and superuser, and the access policy's cases (servers of a group, local
servers, login names, credentials) as those and a member of the group; the end-to-end tests
submit through the API to the real sshd with Celery eager.
"""

from __future__ import annotations

import pytest

from django_remote_submission import services
from django_remote_submission.models import Event, Job, Server
from tests.api_world import RESULT_BYTES, ROLES, build_world, client, fake_tasks

# Transactions as in production: what the views queue on commit is queued when they return.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.api_urls")]


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def queued(monkeypatch):
    """The Celery tasks the views queue, recorded instead of sent."""
    tasks = fake_tasks()
    monkeypatch.setattr(services, "tasks", tasks)
    return tasks


def new_job(w) -> dict:
    return {
        "title": "new",
        "program": "print(2)",
        "server": w.server.pk,
        "interpreter": w.python3.pk,
        "remote_directory": "/tmp/x",
        "remote_filename": "a.py",
    }


# --- permission matrix ----------------------------------------------------------------------
# (name, method, path, body, expected status for anonymous, owner, other, staff, superuser).
# "owner" owns w.job, w.done, w.local_job, w.log, w.result; "other" owns only their own
# objects; "staff" has is_staff and no permission: it is a user like "other" here.
# fmt: off
MATRIX = [
    ("servers list", "get", lambda w: "/api/servers/", None, (401, 200, 200, 200, 200)),
    ("server detail", "get", lambda w: f"/api/servers/{w.server.pk}/", None,
     (401, 200, 200, 200, 200)),
    ("server of a group", "get", lambda w: f"/api/servers/{w.group_server.pk}/", None,
     (401, 404, 404, 404, 200)),
    ("local server", "get", lambda w: f"/api/servers/{w.local_server.pk}/", None,
     (401, 404, 404, 404, 200)),
    ("server create", "post", lambda w: "/api/servers/",
     lambda w: {"title": "new", "hostname": "h.example.org"}, (401, 403, 403, 403, 201)),
    ("server put", "put", lambda w: f"/api/servers/{w.server.pk}/",
     lambda w: {"title": "x", "hostname": "h.example.org", "interpreters": [w.python3.pk]},
     (401, 403, 403, 403, 200)),
    ("server patch", "patch", lambda w: f"/api/servers/{w.server.pk}/",
     lambda w: {"title": "renamed"}, (401, 403, 403, 403, 200)),
    ("server delete", "delete", lambda w: f"/api/servers/{w.spare_server.pk}/", None,
     (401, 403, 403, 403, 204)),
    ("server delete in use", "delete", lambda w: f"/api/servers/{w.server.pk}/", None,
     (401, 403, 403, 403, 409)),
    ("interpreters list", "get", lambda w: "/api/interpreters/", None, (401, 200, 200, 200, 200)),
    ("interpreter detail", "get", lambda w: f"/api/interpreters/{w.python3.pk}/", None,
     (401, 200, 200, 200, 200)),
    ("interpreter create", "post", lambda w: "/api/interpreters/",
     lambda w: {"name": "ruby", "path": "/usr/bin/ruby"}, (401, 403, 403, 403, 201)),
    ("interpreter put", "put", lambda w: f"/api/interpreters/{w.bash.pk}/",
     lambda w: {"name": "bash", "path": "/bin/bash", "arguments": ["-e"]},
     (401, 403, 403, 403, 200)),
    ("interpreter patch", "patch", lambda w: f"/api/interpreters/{w.bash.pk}/",
     lambda w: {"arguments": ["-x"]}, (401, 403, 403, 403, 200)),
    ("interpreter delete", "delete", lambda w: f"/api/interpreters/{w.spare_interpreter.pk}/",
     None, (401, 403, 403, 403, 204)),
    ("interpreter delete in use", "delete", lambda w: f"/api/interpreters/{w.python3.pk}/", None,
     (401, 403, 403, 403, 409)),
    ("jobs list", "get", lambda w: "/api/jobs/", None, (401, 200, 200, 200, 200)),
    ("job detail", "get", lambda w: f"/api/jobs/{w.job.pk}/", None, (401, 200, 404, 404, 200)),
    ("job create", "post", lambda w: "/api/jobs/", new_job, (401, 201, 201, 201, 201)),
    ("job create on a group's server", "post", lambda w: "/api/jobs/",
     lambda w: {**new_job(w), "server": w.group_server.pk}, (401, 400, 400, 400, 201)),
    ("job create on a local server", "post", lambda w: "/api/jobs/",
     lambda w: {**new_job(w), "server": w.local_server.pk}, (401, 400, 400, 400, 201)),
    ("job put", "put", lambda w: f"/api/jobs/{w.job.pk}/", new_job, (401, 200, 404, 404, 200)),
    ("job patch", "patch", lambda w: f"/api/jobs/{w.job.pk}/", lambda w: {"title": "t2"},
     (401, 200, 404, 404, 200)),
    ("job moved to a local server", "patch", lambda w: f"/api/jobs/{w.job.pk}/",
     lambda w: {"server": w.local_server.pk}, (401, 400, 404, 404, 200)),
    ("job delete", "delete", lambda w: f"/api/jobs/{w.done.pk}/", None,
     (401, 204, 404, 404, 204)),
    ("job submit", "post", lambda w: f"/api/jobs/{w.job.pk}/submit/",
     lambda w: {"password": "pw"}, (401, 202, 404, 404, 202)),
    ("job submit without a credential", "post", lambda w: f"/api/jobs/{w.job.pk}/submit/",
     lambda w: {}, (401, 403, 404, 404, 202)),
    ("job submit under another login", "post", lambda w: f"/api/jobs/{w.job.pk}/submit/",
     lambda w: {"password": "pw", "username": "root"}, (401, 403, 404, 404, 202)),
    ("local job submit", "post", lambda w: f"/api/jobs/{w.local_job.pk}/submit/",
     lambda w: {}, (401, 403, 404, 404, 202)),
    ("job cancel", "post", lambda w: f"/api/jobs/{w.job.pk}/cancel/", None,
     (401, 202, 404, 404, 202)),
    ("job resubmit", "post", lambda w: f"/api/jobs/{w.done.pk}/resubmit/",
     lambda w: {"password": "pw"}, (401, 202, 404, 404, 202)),
    ("logs list", "get", lambda w: "/api/logs/", None, (401, 200, 200, 200, 200)),
    ("log detail", "get", lambda w: f"/api/logs/{w.log.pk}/", None, (401, 200, 404, 404, 200)),
    ("log window", "get", lambda w: f"/api/logs/window/?job={w.job.pk}", None,
     (401, 200, 404, 404, 200)),
    ("log create", "post", lambda w: "/api/logs/", lambda w: {"content": "x"},
     (401, 405, 405, 405, 405)),
    ("log delete", "delete", lambda w: f"/api/logs/{w.log.pk}/", None,
     (401, 405, 405, 405, 405)),
    ("results list", "get", lambda w: "/api/results/", None, (401, 200, 200, 200, 200)),
    ("result detail", "get", lambda w: f"/api/results/{w.result.pk}/", None,
     (401, 200, 404, 404, 200)),
    ("result download", "get", lambda w: f"/api/results/{w.result.pk}/download/", None,
     (401, 200, 404, 404, 200)),
    ("result delete", "delete", lambda w: f"/api/results/{w.result.pk}/", None,
     (401, 405, 405, 405, 405)),
    ("events list", "get", lambda w: "/api/events/", None, (401, 200, 200, 200, 200)),
    ("tokens list", "get", lambda w: "/api/tokens/", None, (401, 200, 200, 200, 200)),
    ("token detail", "get", lambda w: f"/api/tokens/{w.api_token.pk}/", None,
     (401, 200, 404, 404, 200)),
    # A token (here rest_framework.authtoken's) never makes one: that needs the password.
    ("token create", "post", lambda w: "/api/tokens/", lambda w: {"name": "t"},
     (401, 403, 403, 403, 403)),
    ("token revoke", "delete", lambda w: f"/api/tokens/{w.api_token.pk}/", None,
     (401, 204, 404, 404, 204)),
]
# fmt: on


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), [pytest.param(*row[1:], id=row[0]) for row in MATRIX]
)
def test_permission_matrix(world, queued, role, method, path, body, expected):
    api = client(world, role)
    response = getattr(api, method)(path(world), body(world) if body else None, format="json")
    assert response.status_code == expected[ROLES.index(role)], response.content
    if role == "anonymous":
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("path", "mine"),
    [
        (
            "/api/jobs/",
            lambda w: {"owner": {w.job.pk, w.done.pk, w.local_job.pk}, "other": {w.bob_job.pk}},
        ),
        ("/api/logs/", lambda w: {"owner": {w.log.pk}, "other": {w.bob_log.pk}}),
        ("/api/results/", lambda w: {"owner": {w.result.pk}, "other": {w.bob_result.pk}}),
    ],
)
def test_users_list_only_their_own_and_superusers_list_all(world, path, mine):
    seen = {
        role: {row["id"] for row in client(world, role).get(path).json()["results"]}
        for role in ("owner", "other", "staff", "superuser")
    }
    expected = mine(world)
    assert seen["owner"] == expected["owner"]
    assert seen["other"] == expected["other"]
    assert seen["staff"] == set()
    assert seen["superuser"] == expected["owner"] | expected["other"]


def test_view_job_permission_shows_every_job_but_allows_no_change(world, queued):
    from django.contrib.auth.models import Permission

    viewer = world.users["staff"]
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    api = client(world, "staff")
    assert api.get(f"/api/jobs/{world.bob_job.pk}/").status_code == 200
    assert api.get(f"/api/logs/{world.bob_log.pk}/").status_code == 200
    assert api.post(f"/api/jobs/{world.bob_job.pk}/cancel/").status_code == 403
    assert (
        api.patch(f"/api/jobs/{world.bob_job.pk}/", {"title": "x"}, format="json").status_code
        == 403
    )
    assert queued.cancel_job.calls == []


def test_a_member_of_the_group_uses_its_server(world, queued):
    carol = client(world, "member")
    servers = {row["id"] for row in carol.get("/api/servers/").json()["results"]}
    assert servers == {world.server.pk, world.spare_server.pk, world.group_server.pk}
    response = carol.post(
        "/api/jobs/", {**new_job(world), "server": world.group_server.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    job = response.json()["id"]
    assert (
        carol.post(f"/api/jobs/{job}/submit/", {"password": "pw"}, format="json").status_code == 202
    )
    assert queued.submit_job_to_server.calls == [
        ((job,), {"username": "carol", "login_with": "password", "remote": True, "password": "pw"})
    ]


def test_refusals_say_why_and_queue_nothing(world, queued):
    alice = client(world, "owner")
    response = alice.post(f"/api/jobs/{world.job.pk}/submit/", {}, format="json")
    assert response.json() == {
        "detail": "Enter the password of alice on nowhere, or make a key for this server on "
        "the “My SSH keys” page."
    }
    response = alice.post(f"/api/jobs/{world.local_job.pk}/submit/", {}, format="json")
    assert response.json() == {
        "detail": "Running jobs on the worker's own machine (worker) needs the permission "
        "“run_locally”."
    }
    response = alice.post(
        f"/api/jobs/{world.job.pk}/submit/", {"password": "pw", "username": "root"}, format="json"
    )
    assert response.json() == {
        "detail": "Only users with the permission “choose_login” may choose the login name "
        "or a key file."
    }
    assert queued.submit_job_to_server.calls == []
    refusals = Event.objects.filter(action=Event.Action.submit)
    assert not refusals.exists()


def test_granted_permissions_open_shared_credentials_local_runs_and_login_names(world, queued):
    from django.contrib.auth.models import Permission

    alice = world.users["owner"]
    for codename in ("use_shared_credentials", "run_locally", "choose_login"):
        alice.user_permissions.add(Permission.objects.get(codename=codename))
    api = client(world, "owner")
    assert api.post(f"/api/jobs/{world.job.pk}/submit/", {}, format="json").status_code == 202
    Job.objects.filter(pk=world.job.pk).update(status="success")
    body = {"password": "pw", "username": "svc"}
    assert api.post(f"/api/jobs/{world.job.pk}/resubmit/", body, format="json").status_code == 202
    assert api.post(f"/api/jobs/{world.local_job.pk}/submit/", {}, format="json").status_code == 202
    assert [kwargs for _args, kwargs in queued.submit_job_to_server.calls] == [
        {"username": "alice", "login_with": "shared", "remote": True},
        {"username": "svc", "login_with": "password", "remote": True, "password": "pw"},
        {"username": "alice", "login_with": "local", "remote": False},
    ]


def test_filters_cannot_reach_foreign_objects(world):
    bob = client(world, "other")
    assert bob.get(f"/api/jobs/?owner={world.users['owner'].pk}").json()["results"] == []
    assert bob.get(f"/api/logs/?job={world.done.pk}").status_code == 400
    assert (
        bob.get(f"/api/logs/?job={world.done.pk}").json() == bob.get("/api/logs/?job=999999").json()
    )
    assert bob.get(f"/api/results/?job={world.done.pk}").status_code == 400


def test_session_authentication_works_and_needs_csrf_for_writes(world):
    from rest_framework.test import APIClient

    api = APIClient(enforce_csrf_checks=True)
    api.force_login(world.users["owner"])
    assert api.get(f"/api/jobs/{world.job.pk}/").status_code == 200
    response = api.patch(f"/api/jobs/{world.job.pk}/", {"title": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_schema_and_docs_are_served(world):
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/jobs/{id}/submit/", "/api/logs/", "/api/results/{id}/download/"} <= set(paths)
    components = schema.json()["components"]["schemas"]
    assert {"WsLogsMessage", "WsStatusMessage"} <= set(components)
    assert "password" not in components["Job"]["properties"]
    assert "private_key" not in components["Server"]["properties"]
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200 and b'"/api/schema/"' in docs.content


# --- jobs: creation, edits, actions ---------------------------------------------------------


def test_create_job_belongs_to_the_requester(world):
    data = {**new_job(world), "owner": world.users["superuser"].pk, "status": "success"}
    response = client(world, "other").post("/api/jobs/", data, format="json")
    assert response.status_code == 201
    job = Job.objects.get(pk=response.json()["id"])
    assert job.owner == world.users["other"] and job.status == Job.STATUS.initial
    assert response.json()["logs_url"].endswith(f"/api/logs/?job={job.pk}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda w: {"interpreter": w.bash.pk}, "interpreter"),
        (lambda w: {"remote_filename": "dir/job.py"}, "remote_filename"),
        (lambda w: {"remote_filename": ".."}, "remote_filename"),
        (lambda w: {"server": 999999}, "server"),
        (lambda w: {"title": ""}, "title"),
    ],
)
def test_create_job_rejects_bad_fields(world, change, field):
    response = client(world, "owner").post(
        "/api/jobs/", {**new_job(world), **change(world)}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_interpreter_not_offered_by_the_server_is_a_field_error(world):
    response = client(world, "owner").patch(
        f"/api/jobs/{world.job.pk}/", {"interpreter": world.bash.pk}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "interpreter": [
            "The interpreter bash (/bin/bash) is not offered by the server nowhere <127.0.0.1:9>."
        ]
    }


@pytest.mark.parametrize("state", ["submitted", "running"])
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("patch", "", {"title": "x"}),
        ("put", "", None),
        ("delete", "", None),
        ("post", "submit/", {"password": "pw"}),
        ("post", "resubmit/", {"password": "pw"}),
    ],
)
def test_active_job_cannot_be_changed_or_submitted(world, queued, state, method, suffix, body):
    Job.objects.filter(pk=world.job.pk).update(status=state)
    api = client(world, "owner")
    data = new_job(world) if method == "put" else body
    response = getattr(api, method)(f"/api/jobs/{world.job.pk}/{suffix}", data, format="json")
    assert response.status_code == 409
    assert state in response.json()["detail"]
    assert queued.submit_job_to_server.calls == []
    assert Job.objects.get(pk=world.job.pk).title == world.job.title


def test_finished_job_cannot_be_cancelled_and_initial_job_not_resubmitted(world, queued):
    api = client(world, "owner")
    response = api.post(f"/api/jobs/{world.done.pk}/cancel/")
    assert response.status_code == 409
    assert response.json() == {"detail": "The job has already finished (success)."}
    response = api.post(f"/api/jobs/{world.job.pk}/resubmit/", {"password": "pw"}, format="json")
    assert response.status_code == 409
    assert "(submit it instead)" in response.json()["detail"]
    assert queued.cancel_job.calls == queued.submit_job_to_server.calls == []


def test_submit_queues_the_task_with_the_options(world, queued):
    body = {
        "password": "hunter2 ",
        "timeout": 2.5,
        "log_policy": "total",
        "store_results": ["*.csv", "!tmp*"],
    }
    response = client(world, "owner").post(f"/api/jobs/{world.job.pk}/submit/", body, format="json")
    assert response.status_code == 202
    assert response.json()["id"] == world.job.pk
    assert queued.submit_job_to_server.calls == [
        (
            (world.job.pk,),
            {
                "username": "alice",
                "login_with": "password",
                "remote": True,
                "password": "hunter2 ",
                "timeout": 2.5,
                "log_policy": 2,
                "store_results": ["*.csv", "!tmp*"],
            },
        )
    ]


def test_submit_without_password_uses_the_user_s_own_key(world, queued):
    from django_remote_submission import keys

    account = world.account
    account.username = "alice42"
    account.save()
    keys.generate(account)
    api = client(world, "owner")
    assert api.post(f"/api/jobs/{world.job.pk}/submit/").status_code == 202
    assert (
        api.post(f"/api/jobs/{world.job.pk}/submit/", {"password": ""}, format="json").status_code
        == 202
    )
    expected = {"username": "alice42", "login_with": "account", "remote": True}
    assert queued.submit_job_to_server.calls == [((world.job.pk,), expected)] * 2


def test_resubmit_reuses_the_previous_options_but_not_the_login(world, queued):
    Job.objects.filter(pk=world.done.pk).update(
        options={**world.done.options, "username": "root", "login_with": "shared"}
    )
    response = client(world, "owner").post(
        f"/api/jobs/{world.done.pk}/resubmit/", {"password": "pw"}, format="json"
    )
    assert response.status_code == 202
    assert queued.submit_job_to_server.calls == [
        (
            (world.done.pk,),
            {
                "username": "alice",
                "login_with": "password",
                "remote": True,
                "password": "pw",
                "timeout": 30.0,
                "log_policy": 2,
                "store_results": ["*.bin"],
            },
        )
    ]


def test_cancel_queues_the_task(world, queued):
    response = client(world, "owner").post(f"/api/jobs/{world.job.pk}/cancel/")
    assert response.status_code == 202
    assert queued.cancel_job.calls == [((world.job.pk,), {})]


def test_submit_the_broker_cannot_take_answers_503_and_the_job_fails_with_the_reason(
    world, broker_down
):
    response = client(world, "owner").post(
        f"/api/jobs/{world.job.pk}/submit/", {"password": "pw"}, format="json"
    )
    assert response.status_code == 503
    world.job.refresh_from_db()
    assert world.job.status == Job.STATUS.failure
    assert response.json() == {"detail": world.job.error}
    assert world.job.error.startswith("Could not queue the job: the Celery broker (redis://")


def test_a_program_sent_with_crlf_is_stored_with_lf(world, queued):
    body = {**new_job(world), "program": "echo a\r\necho b\r\n"}
    response = client(world, "owner").post("/api/jobs/", body, format="json")
    assert response.status_code == 201
    assert Job.objects.get(pk=response.json()["id"]).program == "echo a\necho b\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 1e12}, "timeout"),
        ({"log_policy": "loud"}, "log_policy"),
        ({"log_policy": 3}, "log_policy"),
        ({"log_policy": True}, "log_policy"),
        ({"log_policy": "LIVE"}, "log_policy"),
        ({"store_results": "*.txt"}, "store_results"),
        ({"store_results": [""]}, "store_results"),
        ({"store_results": [None]}, "store_results"),
        ({"store_results": {"a": 1}}, "store_results"),
    ],
)
def test_submit_rejects_bad_options(world, queued, body, field):
    response = client(world, "owner").post(
        f"/api/jobs/{world.job.pk}/submit/", {"password": "pw", **body}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert queued.submit_job_to_server.calls == []


@pytest.mark.parametrize("body", ["[1, 2]", "not json", '"text"'])
def test_malformed_bodies_are_400(world, queued, body):
    response = client(world, "owner").post(
        f"/api/jobs/{world.job.pk}/submit/", body, content_type="application/json"
    )
    assert response.status_code == 400


def test_passwords_and_keys_are_never_echoed(world, queued):
    secret, key = "pa55-never-shown", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"
    staff = client(world, "superuser")
    responses = [
        client(world, "owner").post(
            f"/api/jobs/{world.job.pk}/submit/", {"password": secret}, format="json"
        ),
        client(world, "owner").post(
            f"/api/jobs/{world.done.pk}/resubmit/", {"password": secret}, format="json"
        ),
        client(world, "owner").post(
            f"/api/jobs/{world.job.pk}/submit/", {"password": secret, "timeout": -1}, format="json"
        ),
        staff.post(
            "/api/servers/",
            {"title": "k", "hostname": "h", "private_key": key, "private_key_passphrase": secret},
            format="json",
        ),
        staff.patch(f"/api/servers/{world.server.pk}/", {"private_key": key}, format="json"),
        staff.get(f"/api/servers/{world.server.pk}/"),
        staff.get("/api/servers/"),
        client(world, "owner").get(f"/api/jobs/{world.job.pk}/"),
    ]
    for response in responses:
        assert response.status_code < 500
        assert secret.encode() not in response.content and b"PRIVATE KEY" not in response.content
        assert b'"private_key"' not in response.content
    assert responses[5].json()["has_private_key"] is True
    assert Server.objects.get(pk=world.server.pk).private_key == key


def test_server_port_and_interpreter_arguments_are_validated(world):
    staff = client(world, "superuser")
    response = staff.patch(f"/api/servers/{world.server.pk}/", {"port": 70000}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["port"]
    response = staff.patch(
        f"/api/interpreters/{world.bash.pk}/", {"arguments": "-u"}, format="json"
    )
    assert response.status_code == 400 and list(response.json()) == ["arguments"]


# --- lists: filters, ordering, pagination ---------------------------------------------------


def test_job_filters(world):
    Job.objects.filter(pk=world.bob_job.pk).update(status="running")
    staff = client(world, "superuser")

    def ids(query):
        response = staff.get(f"/api/jobs/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids("status=running") == {world.bob_job.pk}
    assert ids("status=running&status=success") == {world.bob_job.pk, world.done.pk}
    assert ids(f"owner={world.users['owner'].pk}") == {
        world.job.pk,
        world.done.pk,
        world.local_job.pk,
    }
    assert ids(f"server={world.server.pk}") == {world.job.pk, world.done.pk, world.bob_job.pk}
    assert ids("created_before=2000-01-01T00:00:00Z") == set()
    assert ids("created_after=2000-01-01T00:00:00Z") == ids("")
    # ISO 8601 allows offsets that PostgreSQL refuses (beyond 15:59): compared in UTC.
    assert ids("created_after=0532-03-12T19:25:06-17:12") == ids("")
    assert ids(f"uuid={world.job.uuid}") == {world.job.pk}
    assert staff.get("/api/jobs/?status=bogus").status_code == 400
    assert staff.get("/api/jobs/?created_after=yesterday").status_code == 400


def test_job_ordering_and_page_size(world):
    staff = client(world, "superuser")
    rows = staff.get("/api/jobs/?ordering=id&page_size=2").json()
    assert rows["count"] == 4
    assert [r["id"] for r in rows["results"]] == [world.job.pk, world.done.pk]
    assert "page=2" in rows["next"]
    assert staff.get("/api/jobs/?page=9").status_code == 404


def test_log_filters(world):
    from django_remote_submission.models import Log

    Log.objects.create(job=world.done, content="err\n", stream="stderr")
    api = client(world, "owner")
    rows = api.get(f"/api/logs/?job={world.done.pk}&stream=stderr").json()["results"]
    assert [r["content"] for r in rows] == ["err\n"]
    assert api.get("/api/logs/?after=x").status_code == 400
    assert api.get("/api/logs/?stream=stdin").status_code == 400


def test_log_window_pages_by_position_and_beside_rows(world):
    from django_remote_submission.models import Log

    job = world.done
    Log.objects.filter(job=job).delete()
    rows = [Log.objects.create(job=job, content=f"line {i}\n") for i in range(12)]
    Log.objects.create(job=world.job, content="another job's\n")  # a gap in the ids
    rows += [Log.objects.create(job=job, content=f"line {i}\n") for i in range(12, 25)]
    api = client(world, "owner")

    def window(**query) -> dict:
        answer = api.get("/api/logs/window/", {"job": job.pk, "count": 10, **query})
        assert answer.status_code == 200, answer.content
        page = answer.json()
        page["results"] = [row["content"] for row in page.pop("results")]
        return page

    lines = [f"line {i}\n" for i in range(25)]
    # The last page: from the largest multiple of count below the number of rows.
    assert window() == {"total": 25, "start": 20, "results": lines[20:]}
    assert window(start=10) == {"total": None, "start": 10, "results": lines[10:20]}
    assert window(start=30)["results"] == []
    assert window(after=rows[8].pk)["results"] == lines[9:19]
    assert window(before=rows[15].pk)["results"] == lines[5:15]
    assert window(before=rows[3].pk)["results"] == lines[:3]
    assert set(api.get("/api/logs/window/", {"job": job.pk}).json()["results"][0]) == {
        "id",
        "time",
        "stream",
        "content",
        "offset",
    }
    for bad in ({}, {"job": "x"}, {"job": job.pk, "count": 501}, {"job": job.pk, "count": 0}):
        assert api.get("/api/logs/window/", bad).status_code == 400
    both = {"job": job.pk, "start": 1, "after": rows[0].pk}
    assert api.get("/api/logs/window/", both).status_code == 400
    assert api.get("/api/logs/window/", {"job": 10**9}).status_code == 404


def test_logs_follow_with_after(world):
    from django_remote_submission.models import Log

    job = world.done
    rows = [Log.objects.create(job=job, content=f"line {i}\n") for i in range(5)]
    api = client(world, "owner")
    seen, after, answers = [], None, 0
    while True:
        query = f"job={job.pk}&page_size=2" + (f"&after={after}" if after is not None else "")
        page = api.get(f"/api/logs/?{query}").json()
        answers += 1
        seen += [r["content"] for r in page["results"]]
        after = page["after"]
        if page["next"] is None:
            break
        assert f"after={after}" in page["next"]
    assert seen == ["alice's line\n"] + [f"line {i}\n" for i in range(5)]
    assert answers == 3 and after == rows[-1].pk
    # Caught up: nothing new, the cursor stays; a new row comes next.
    assert api.get(f"/api/logs/?job={job.pk}&after={after}").json() == {
        "after": after,
        "next": None,
        "results": [],
    }
    new = Log.objects.create(job=job, content="late\n")
    page = api.get(f"/api/logs/?job={job.pk}&after={after}").json()
    assert [r["id"] for r in page["results"]] == [new.pk] and page["after"] == new.pk


# --- results ---------------------------------------------------------------------------------


def test_download_streams_the_exact_file(world):
    response = client(world, "owner").get(
        f"/api/results/{world.result.pk}/download/", HTTP_ACCEPT="application/octet-stream"
    )
    assert response.status_code == 200
    assert response.streaming
    assert b"".join(response.streaming_content) == RESULT_BYTES
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert response["Content-Length"] == str(len(RESULT_BYTES))


def test_download_of_a_file_gone_from_storage_is_404(world):
    world.result.local_file.storage.delete(world.result.local_file.name)
    response = client(world, "owner").get(
        f"/api/results/{world.result.pk}/download/", HTTP_ACCEPT="application/octet-stream"
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "The file of this result is no longer stored."}


def test_deleting_a_job_deletes_its_result_files(world):
    storage, name = world.result.local_file.storage, world.result.local_file.name
    assert storage.exists(name)
    assert client(world, "owner").delete(f"/api/jobs/{world.done.pk}/").status_code == 204
    assert not storage.exists(name)


# --- end to end through the real sshd (conftest's ``eager``: .delay runs inline) ------------
# ``celery_app`` first: an eager run caches the app's result backend, which must already be
# the run's redis, or later tests with a real worker wait on the wrong backend.

PROGRAM = """\
import sys
for i in range(3):
    print(f"line {i}", flush=True)
print("warning", file=sys.stderr, flush=True)
with open("out.bin", "wb") as f:
    f.write(bytes(range(256)) * 3)
with open("skip.log", "w") as f:
    f.write("not a result")
"""


def test_new_user_submits_follows_logs_and_downloads_results(
    sshd, server, owner, celery_app, eager
):
    """The issue's 'done when': only the schema, a token and HTTP."""
    import uuid

    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    schema = api.get("/api/schema/?format=json").json()
    assert "/api/jobs/{id}/submit/" in schema["paths"]
    secrets = {"password": sshd.password}
    if sshd.password is None:  # not root: the key user, with the key stored on the server
        from django.contrib.auth.models import Permission

        Server.objects.filter(pk=server.pk).update(private_key=sshd.key_text)
        owner.user_permissions.add(Permission.objects.get(codename="use_shared_credentials"))
        secrets = {}
    base = sshd.base_dir_pw or sshd.base_dir_key
    job = api.post(
        "/api/jobs/",
        {
            "title": "e2e",
            "program": PROGRAM,
            "server": server.pk,
            "interpreter": next(
                i["id"]
                for i in api.get("/api/interpreters/").json()["results"]
                if i["name"] == "python3"
            ),
            "remote_directory": f"{base}/{uuid.uuid4().hex[:10]}",
            "remote_filename": "job.py",
        },
        format="json",
    )
    assert job.status_code == 201, job.content
    job = job.json()

    response = api.post(
        f"/api/jobs/{job['id']}/submit/",
        {**secrets, "timeout": 60, "log_policy": "live", "store_results": ["*.bin"]},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "success", response.json()["error"]
    assert response.json()["exit_code"] == 0
    if sshd.password:
        assert sshd.password.encode() not in response.content

    out, err, after = "", "", None
    while True:
        query = f"?job={job['id']}&page_size=1" + (f"&after={after}" if after else "")
        page = api.get(f"/api/logs/{query}").json()
        for row in page["results"]:
            if row["stream"] == "stdout":
                out += row["content"]
            elif row["stream"] == "stderr":
                err += row["content"]
        after = page["after"]
        if not page["next"]:
            break
    assert (out, err) == ("line 0\nline 1\nline 2\n", "warning\n")

    results = api.get(job["results_url"]).json()["results"]
    assert [r["remote_filename"] for r in results] == ["out.bin"]
    download = api.get(results[0]["download_url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == bytes(range(256)) * 3
    assert results[0]["size"] == 768

    again = api.post(f"/api/jobs/{job['id']}/resubmit/", secrets, format="json")
    assert again.status_code == 202 and again.json()["status"] == "success"
    assert again.json()["options"] == {
        "timeout": 60.0,
        "log_policy": 1,
        "store_results": ["*.bin"],
        "resources": None,
    }


def test_cancel_of_a_job_never_submitted_cancels_it(world, celery_app, eager):
    response = client(world, "owner").post(f"/api/jobs/{world.job.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"] == "Cancelled before it was submitted."


# --- accounts: a user's login and key on a server ("My SSH keys") ----------------------------


def test_accounts_are_the_user_s_own_and_set_the_login(world, queued):
    alice, bob = client(world, "owner"), client(world, "other")
    assert [a["id"] for a in alice.get("/api/accounts/").json()["results"]] == [world.account.pk]
    assert bob.get("/api/accounts/").json()["results"] == []
    assert bob.get(f"/api/accounts/{world.account.pk}/").status_code == 404
    response = alice.patch(f"/api/accounts/{world.account.pk}/", {"username": "ada"}, format="json")
    assert response.status_code == 200 and response.json()["login"] == "ada"
    created = bob.post(
        "/api/accounts/", {"server": world.server.pk, "username": "b0b"}, format="json"
    )
    assert created.status_code == 201 and created.json()["login"] == "b0b"
    again = bob.post("/api/accounts/", {"server": world.server.pk}, format="json")
    assert again.status_code == 409
    refused = bob.post("/api/accounts/", {"server": world.local_server.pk}, format="json")
    assert refused.status_code == 400 and list(refused.json()) == ["server"]
    assert [e.action for e in Event.objects.filter(actor=world.users["owner"])] == ["account"]


def test_a_key_is_made_once_shown_public_only_and_install_reports_the_host_s_refusal(world):
    alice = client(world, "owner")
    made = alice.post(f"/api/accounts/{world.account.pk}/key/")
    assert made.status_code == 200
    assert made.json()["public_key"].startswith("ssh-ed25519 ")
    assert made.json()["has_key"] is True and made.json()["installed"] is None
    assert b"PRIVATE" not in made.content
    response = alice.post(
        f"/api/accounts/{world.account.pk}/install/", {"password": "pw"}, format="json"
    )
    assert response.status_code == 502  # port 9 of 127.0.0.1: nobody answers
    assert response.json()["detail"].startswith("Connection refused by 127.0.0.1:9")
    actions = Event.objects.filter(actor=world.users["owner"]).values_list("action", flat=True)
    assert list(actions) == ["key_created"]


def test_every_action_is_in_the_audit_trail(world, queued):
    from django_remote_submission import runner

    alice = client(world, "owner")
    pk = alice.post("/api/jobs/", new_job(world), format="json").json()["id"]
    alice.post(f"/api/jobs/{pk}/submit/", {"password": "pw"}, format="json")
    job = Job.objects.get(pk=pk)
    runner.move(job, Job.STATUS.submitted)  # what a worker does
    runner.move(job, Job.STATUS.running, login="alice")
    runner.move(job, Job.STATUS.failure, error="The program exited with status 3.")
    alice.patch(f"/api/jobs/{pk}/", {"title": "renamed"}, format="json")
    alice.post(f"/api/jobs/{pk}/resubmit/", {"password": "pw"}, format="json")
    alice.post(f"/api/jobs/{pk}/cancel/")  # still "failure" here: refused, not recorded
    Job.objects.filter(pk=pk).update(status="running")
    alice.post(f"/api/jobs/{pk}/cancel/")
    Job.objects.filter(pk=pk).update(status="success")
    alice.delete(f"/api/jobs/{pk}/")
    rows = Event.objects.filter(job_title__in=["new", "renamed"]).order_by("time", "id")
    assert [
        (e.action, e.from_state, e.to_state, e.actor and e.actor.username, e.login, e.reason)
        for e in rows
    ] == [
        ("create", "initial", "", "alice", "", ""),
        ("submit", "initial", "", "alice", "alice", ""),
        ("state", "initial", "submitted", None, "", ""),
        ("state", "submitted", "running", None, "alice", ""),
        ("state", "running", "failure", None, "", "The program exited with status 3."),
        ("edit", "failure", "", "alice", "", "title"),
        ("resubmit", "failure", "", "alice", "alice", ""),
        ("cancel", "running", "", "alice", "", ""),
        ("delete", "success", "", "alice", "", ""),
    ]
    assert {e.client for e in rows if e.actor} == {"127.0.0.1"}
    assert all(e.job_id is None for e in rows)  # the job is gone, its history stays
    seen = client(world, "owner").get("/api/events/").json()["results"]
    # Once the job is gone, its owner still sees what they did (not the workers' rows).
    assert [e["action"] for e in seen] == [
        "create",
        "submit",
        "edit",
        "resubmit",
        "cancel",
        "delete",
    ]
    assert len(client(world, "superuser").get("/api/events/?page_size=100").json()["results"]) >= 9
