"""Personal API tokens (django_remote_submission/tokens/): made with the password, shown once,
stored as a digest; expiry, revocation and the read-only scope; who sees and revokes them; the
audit trail; the "My API tokens" page; websockets opened with a token.

The whole stack (a client generated from the schema, a script on a real daphne) is in
``test_api_client.py``.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Permission
from django.test import Client
from django.utils import timezone
from knox.crypto import hash_token
from rest_framework.test import APIClient

from django_remote_submission import consumers, events, services
from django_remote_submission.models import Event, Interpreter, Job, Log, Server
from django_remote_submission.routing import websocket_urlpatterns
from django_remote_submission.tokens import services as tokens
from django_remote_submission.tokens.authentication import LAST_USED_RESOLUTION
from django_remote_submission.tokens.models import ApiToken
from tests.api_world import fake_tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls")]

PASSWORD = "tokens-Passw0rd"
TTL = 90 * 24 * 3600


@pytest.fixture
def people():
    User = get_user_model()
    return {name: User.objects.create_user(name, password=PASSWORD) for name in ("alice", "bob")}


@pytest.fixture
def job(people):
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3")
    server = Server.objects.create(title="nowhere", hostname="127.0.0.1", port=9)
    server.interpreters.set([python3])
    return Job.objects.create(
        title="alice's job",
        owner=people["alice"],
        server=server,
        interpreter=python3,
        program="print(1)",
        remote_directory="/tmp/drs-tokens",
        remote_filename="job.py",
    )


@pytest.fixture
def queued(monkeypatch):
    recorded = fake_tasks()
    monkeypatch.setattr(services, "tasks", recorded)
    return recorded


def basic(username: str, password: str = PASSWORD) -> APIClient:
    api = APIClient()
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    api.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    return api


def bearer(key: str, keyword: str = "Bearer") -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
    return api


def make(username: str, **body) -> dict:
    response = basic(username).post("/api/tokens/", {"name": "script", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- made, shown once, stored as a digest -----------------------------------------------------


def test_a_token_made_with_the_password_is_shown_once_and_stored_as_a_digest(people):
    made = make("alice", name="cron")
    key = made["token"]
    assert key.startswith("drs_") and len(key) == 4 + 64
    row = ApiToken.objects.get(pk=made["id"])
    assert row.digest == hash_token(key) and row.token_key == key[:15]
    assert not ApiToken.objects.filter(digest=key).exists()
    assert made["prefix"] == key[:15] and made["name"] == "cron" and made["user"] == "alice"
    assert made["read_only"] is False and made["last_used"] is None

    listed = bearer(key).get("/api/tokens/").json()["results"]
    assert [t["id"] for t in listed] == [made["id"]]
    assert "token" not in listed[0] and key not in str(listed)
    assert bearer(key).get(f"/api/tokens/{made['id']}/").json().get("token") is None


@pytest.mark.parametrize("keyword", ["Bearer", "Token", "bearer"])
def test_both_keywords_log_in(people, keyword):
    key = make("alice")["token"]
    response = bearer(key, keyword).get("/api/jobs/")
    assert response.status_code == 200, response.content


def test_a_session_makes_tokens_too(people):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(people["alice"])
    assert browser.post("/api/tokens/", {"name": "x"}, format="json").status_code == 403  # CSRF
    browser = APIClient()
    browser.force_login(people["alice"])
    assert browser.post("/api/tokens/", {"name": "x"}, format="json").status_code == 201


def test_a_token_never_makes_a_token_and_a_wrong_password_makes_none(people):
    key = make("alice")["token"]
    response = bearer(key).post("/api/tokens/", {"name": "more"}, format="json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Make tokens with your password (HTTP basic) or a session, not with a token."
    }
    response = basic("alice", "wrong").post("/api/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 401
    assert ApiToken.objects.count() == 1


def test_the_lifetime_is_the_site_ttl_or_fewer_days(people, settings):
    before = timezone.now()
    made = ApiToken.objects.get(pk=make("alice")["id"])
    assert before + timedelta(seconds=TTL) <= made.expiry <= timezone.now() + timedelta(seconds=TTL)
    week = ApiToken.objects.get(pk=make("alice", days=7)["id"])
    assert week.expiry - week.created == pytest.approx(timedelta(days=7), abs=timedelta(seconds=5))
    response = basic("alice").post("/api/tokens/", {"name": "x", "days": 91}, format="json")
    assert response.status_code == 400
    assert response.json() == {"days": ["At most 90 days on this site."]}

    settings.DRS = {**settings.DRS, "API_TOKEN_TTL": 3600}
    short = ApiToken.objects.get(pk=make("alice")["id"])
    assert short.expiry - short.created == pytest.approx(
        timedelta(hours=1), abs=timedelta(seconds=5)
    )
    response = basic("alice").post("/api/tokens/", {"name": "x", "days": 2}, format="json")
    assert response.json() == {"days": ["At most 1 day on this site."]}


# --- refused: expired, revoked, read-only -----------------------------------------------------


def test_an_expired_token_answers_401(people):
    made = make("alice")
    ApiToken.objects.filter(pk=made["id"]).update(expiry=timezone.now() - timedelta(seconds=1))
    response = bearer(made["token"]).get("/api/jobs/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Token expired."}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_revoked_token_answers_401_and_so_does_a_made_up_one(people):
    made = make("alice")
    assert bearer(made["token"]).get("/api/jobs/").status_code == 200
    assert basic("alice").delete(f"/api/tokens/{made['id']}/").status_code == 204
    response = bearer(made["token"]).get("/api/jobs/")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token."})
    response = bearer("drs_" + "0" * 64).get("/api/jobs/")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token."})


def test_a_token_revokes_itself(people):
    made = make("alice")
    assert bearer(made["token"]).delete(f"/api/tokens/{made['id']}/").status_code == 204
    assert bearer(made["token"]).get("/api/jobs/").status_code == 401


def test_the_token_of_a_deactivated_user_answers_401(people):
    key = make("alice")["token"]
    get_user_model().objects.filter(username="alice").update(is_active=False)
    response = bearer(key).get("/api/jobs/")
    assert (response.status_code, response.json()) == (401, {"detail": "User inactive or deleted."})


def test_a_read_only_token_reads_but_cannot_submit_or_change_anything(people, job, queued):
    key = make("alice", read_only=True)["token"]
    api = bearer(key)
    assert api.get(f"/api/jobs/{job.pk}/").status_code == 200
    assert api.head("/api/jobs/").status_code == 200
    assert api.options("/api/jobs/").status_code == 200
    refused = {"detail": "This API token is read-only: it may only read (GET, HEAD, OPTIONS)."}
    for method, path, body in [
        ("post", f"/api/jobs/{job.pk}/submit/", {"password": "pw"}),
        ("post", f"/api/jobs/{job.pk}/cancel/", None),
        ("patch", f"/api/jobs/{job.pk}/", {"title": "renamed"}),
        ("delete", f"/api/jobs/{job.pk}/", None),
        ("post", "/api/jobs/", {"title": "new"}),
        ("delete", f"/api/tokens/{ApiToken.objects.get().pk}/", None),
    ]:
        response = getattr(api, method)(path, body, format="json")
        assert (response.status_code, response.json()) == (403, refused), (method, path)
    assert queued.submit_job_to_server.calls == [] and queued.cancel_job.calls == []
    job.refresh_from_db()
    assert (job.title, job.status) == ("alice's job", "initial")
    assert (
        bearer(make("alice")["token"])
        .post(f"/api/jobs/{job.pk}/submit/", {"password": "pw"}, format="json")
        .status_code
        == 202
    )


# --- who sees and revokes which tokens ---------------------------------------------------------


def test_users_see_and_revoke_only_their_own_tokens(people):
    mine = make("alice")
    bobs = make("bob")
    api = bearer(mine["token"])
    assert [t["id"] for t in api.get("/api/tokens/").json()["results"]] == [mine["id"]]
    assert api.get(f"/api/tokens/{bobs['id']}/").status_code == 404
    assert api.delete(f"/api/tokens/{bobs['id']}/").status_code == 404
    assert bearer(bobs["token"]).get("/api/jobs/").status_code == 200


def test_permissions_not_is_staff_open_every_token(people):
    User = get_user_model()
    staff = User.objects.create_user("staffer", password=PASSWORD, is_staff=True)
    alices = make("alice")
    api = bearer(make("staffer")["token"])
    assert len(api.get("/api/tokens/").json()["results"]) == 1  # is_staff alone: own only

    staff.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    listed = api.get("/api/tokens/").json()["results"]
    assert sorted(t["user"] for t in listed) == ["alice", "staffer"]
    alice_id = people["alice"].pk
    assert [t["id"] for t in api.get(f"/api/tokens/?user={alice_id}").json()["results"]] == [
        alices["id"]
    ]
    response = api.delete(f"/api/tokens/{alices['id']}/")
    assert (response.status_code, response.json()) == (
        403,
        {"detail": "You may not revoke this token."},
    )

    staff.user_permissions.add(Permission.objects.get(codename="delete_apitoken"))
    assert api.delete(f"/api/tokens/{alices['id']}/").status_code == 204
    assert bearer(alices["token"]).get("/api/jobs/").status_code == 401


# --- the audit trail ----------------------------------------------------------------------------


def test_making_the_first_use_and_revoking_are_audited_once_each(people):
    made = make("alice", name="cron", read_only=True)
    api = bearer(made["token"])
    for _ in range(3):
        assert api.get("/api/jobs/").status_code == 200
    staff = get_user_model().objects.create_user("auditor", password=PASSWORD)
    staff.user_permissions.add(Permission.objects.get(codename="delete_apitoken"))
    assert basic("auditor").delete(f"/api/tokens/{made['id']}/").status_code == 204

    named = f"“cron” ({made['prefix']}…, read-only) of alice"
    rows = list(Event.objects.values_list("action", "actor__username", "reason", "client", "job"))
    assert rows == [
        (Event.Action.token_created, "alice", named, "127.0.0.1", None),
        (Event.Action.token_used, "alice", named, "127.0.0.1", None),
        (Event.Action.token_revoked, "auditor", named, "127.0.0.1", None),
    ]
    # Alice reads hers in the audit trail of the API (this request is another first use).
    other = make("alice", name="reader")
    events = bearer(other["token"]).get("/api/events/?action=token_used").json()
    assert [e["reason"] for e in events["results"]] == [
        named,
        f"“reader” ({other['prefix']}…) of alice",
    ]


def test_last_used_is_kept_to_the_minute(people):
    made = make("alice")
    api = bearer(made["token"])
    api.get("/api/jobs/")
    first = ApiToken.objects.get().last_used
    api.get("/api/jobs/")
    assert ApiToken.objects.get().last_used == first
    ApiToken.objects.update(last_used=first - LAST_USED_RESOLUTION)
    api.get("/api/jobs/")
    assert ApiToken.objects.get().last_used > first
    assert Event.objects.filter(action=Event.Action.token_used).count() == 1


# --- the page ------------------------------------------------------------------------------------


def test_the_tokens_page_makes_shows_once_lists_and_revokes(people):
    browser = Client()
    browser.force_login(people["alice"])
    page = browser.get("/tokens/").content.decode()
    assert '<a href="/tokens/">My API tokens</a>' in page
    assert "No tokens yet." in page and 'value="90"' in page

    made = browser.post("/tokens/", {"name": "weekly report", "read_only": "on", "days": "30"})
    assert made.status_code == 200
    token = ApiToken.objects.get()
    shown = made.content.decode()
    key = shown.split('data-role="token-key">', 1)[1].split("<", 1)[0]
    assert key.startswith(token.token_key) and token.digest == hash_token(key)
    assert (token.name, token.read_only, token.user) == ("weekly report", True, people["alice"])
    assert token.expiry - token.created == pytest.approx(
        timedelta(days=30), abs=timedelta(seconds=5)
    )

    again = browser.get("/tokens/").content.decode()
    assert key not in again and "weekly report" in again and "read-only" in again
    assert f"{token.token_key}…" in again and "never" in again
    assert bearer(key).get("/api/jobs/").status_code == 200
    assert "never" not in browser.get("/tokens/").content.decode()

    too_long = browser.post("/tokens/", {"name": "x", "days": "91"})
    assert too_long.status_code == 400 and ApiToken.objects.count() == 1

    other = Client()
    other.force_login(people["bob"])
    assert other.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert "weekly report" not in other.get("/tokens/").content.decode()

    revoked = browser.post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert "The token “weekly report” was revoked." in revoked.content.decode()
    assert not ApiToken.objects.exists()
    assert bearer(key).get("/api/jobs/").status_code == 401
    assert [e.action for e in Event.objects.order_by("id")] == [
        Event.Action.token_created,
        Event.Action.token_used,
        Event.Action.token_revoked,
    ]


def test_the_tokens_page_needs_a_login():
    response = Client().get("/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_tokens_are_revoked_in_the_admin_with_an_audit_row(people):
    root = get_user_model().objects.create_superuser("root-user", password=PASSWORD)
    made = make("alice")
    admin = Client()
    admin.force_login(root)
    url = f"/admin/drs_tokens/apitoken/{made['id']}/delete/"
    assert admin.post(url, {"post": "yes"}).status_code == 302
    assert not ApiToken.objects.exists()
    assert Event.objects.filter(action=Event.Action.token_revoked, actor=root).count() == 1
    assert admin.get("/admin/drs_tokens/apitoken/add/").status_code == 403


# --- websockets ----------------------------------------------------------------------------------

application = URLRouter(websocket_urlpatterns)


def run(scenario) -> None:
    async def wrapped():
        try:
            await scenario()
        finally:
            await get_channel_layer().flush()

    async_to_sync(wrapped)()


def script_socket(path: str, header: str) -> WebsocketCommunicator:
    """A socket as a script opens it: no session (anonymous), a token in the handshake."""
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"authorization", header.encode())]
    )
    communicator.scope["user"] = AnonymousUser()
    return communicator


def test_a_script_follows_a_job_with_a_token_in_the_handshake(people, job):
    key = make("alice", read_only=True)["token"]
    Log.objects.create(job=job, content="stored\n")

    async def scenario():
        communicator = script_socket(f"/ws/job-log/{job.pk}/", f"Bearer {key}")
        assert (await communicator.connect())[0]
        status = await communicator.receive_json_from()
        assert (status["type"], status["job"]["id"]) == ("status", job.pk)
        logs = await communicator.receive_json_from()
        assert [r["content"] for r in logs["logs"]] == ["stored\n"]
        await communicator.send_json_to({"type": "ack", "seq": logs["seq"]})
        await communicator.disconnect()

        user = script_socket("/ws/job-user/", f"Token {key}")
        assert (await user.connect())[0]
        jobs = await user.receive_json_from()
        assert [j["id"] for j in jobs["jobs"]] == [job.pk]
        await user.disconnect()

    run(scenario)


@pytest.mark.parametrize("how", ["made up", "expired", "of another user"])
def test_a_socket_with_a_bad_token_is_closed_with_4401_or_4403(people, job, how):
    key = make("bob" if how == "of another user" else "alice")["token"]
    if how == "made up":
        key = "drs_" + "1" * 64
    if how == "expired":
        ApiToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    expected = consumers.CLOSE_FORBIDDEN if how == "of another user" else 4401

    async def scenario():
        communicator = script_socket(f"/ws/job-log/{job.pk}/", f"Bearer {key}")
        assert (await communicator.connect())[0]
        message = await communicator.receive_output()
        assert (message["type"], message["code"]) == ("websocket.close", expected)
        await communicator.disconnect()

    run(scenario)


def test_revoking_a_token_closes_its_sockets_with_4401(people, job):
    made = make("alice")

    async def scenario():
        from channels.db import database_sync_to_async

        communicator = script_socket(f"/ws/job-log/{job.pk}/", f"Bearer {made['token']}")
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # the status

        def revoke_then_submit():
            tokens.revoke(ApiToken.objects.get(), people["alice"])
            Job.objects.filter(pk=job.pk).update(status="submitted")
            job.refresh_from_db()
            events.status_changed(job)

        await database_sync_to_async(revoke_then_submit)()
        output = await communicator.receive_output(timeout=5)
        assert (output["type"], output["code"]) == (
            "websocket.close",
            consumers.CLOSE_UNAUTHENTICATED,
        )
        await communicator.disconnect()

    run(scenario)


# --- a project without the tokens app --------------------------------------------------------

WITHOUT_TOKENS = """
import django
from django.core.management import call_command
django.setup()
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import NoReverseMatch, reverse
try:
    reverse("drs:token-list")
    raise SystemExit("the tokens page exists")
except NoReverseMatch:
    pass
user = get_user_model().objects.create_user("alice", password="pw")
browser = Client()
browser.force_login(user)
page = browser.get("/").content.decode()
assert "My SSH keys" in page and "My API tokens" not in page, page
assert browser.get("/api/jobs/").status_code == 200
assert browser.get("/api/tokens/").status_code == 404
schema = browser.get("/api/schema/?format=json").json()
assert "apiToken" not in schema["components"]["securitySchemes"], schema
from rest_framework.authtoken.models import Token
key = Token.objects.create(user=user).key
assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/jobs/").status_code == 200
print("ok")
"""


def test_a_project_without_the_tokens_app_works_as_before(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_without_tokens",
        "DRS_TEST_TMP": str(tmp_path),
        "DRS_TEST_DB": str(tmp_path / "db.sqlite3"),
        "CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
    }
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TOKENS],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_the_tokens_app_without_knox_says_what_is_missing():
    import subprocess
    import sys

    code = (
        "import django; from django.conf import settings; settings.configure(INSTALLED_APPS="
        "['django.contrib.contenttypes', 'django.contrib.auth', "
        "'django_remote_submission.tokens']); django.setup()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: django_remote_submission.tokens needs "
        'django-rest-knox: add "knox" to INSTALLED_APPS.'
    )
