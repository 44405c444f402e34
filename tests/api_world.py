"""The objects the API tests work on: three users, their jobs, logs and results.

Usage: ``w = build_world(); client(w, "owner").get(f"/api/jobs/{w.job.pk}/")``.

Roles: ``anonymous``, ``owner`` (alice: ``job``, ``done``, ``log``, ``result``, ``local_job``,
``api_token``, ``input`` of ``done``),
``other`` (bob: ``bob_job``, ``bob_log``, ``bob_result``), ``staff`` (``is_staff`` and no
permission: a plain user here), ``superuser`` and ``member`` (carol, in the group that
``group_server`` is for). ``local_server`` runs jobs on the worker's machine. No server is
reachable (port 9 of 127.0.0.1): nothing here logs in anywhere. Requests carry the role's
``rest_framework.authtoken`` key (``tokens``), which the API keeps accepting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from types import SimpleNamespace

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from django_remote_submission.models import (
    Input,
    Interpreter,
    Job,
    JobTemplate,
    Log,
    Result,
    Server,
    ServerAccount,
)
from django_remote_submission.tokens.models import PREFIX, ApiToken
from tests import factories

ROLES = ("anonymous", "owner", "other", "staff", "superuser")
RESULT_BYTES = b"\x00\x01 result bytes\n\xff"


@dataclass
class World:
    users: dict
    tokens: dict
    python3: Interpreter
    bash: Interpreter
    spare_interpreter: Interpreter
    server: Server
    spare_server: Server
    group_server: Server
    local_server: Server
    group: Group
    job: Job
    local_job: Job
    done: Job
    bob_job: Job
    account: ServerAccount
    log: Log
    bob_log: Log
    result: Result
    bob_result: Result
    api_token: ApiToken
    input: Input
    template: JobTemplate


def _job(owner, server, interpreter, **fields) -> Job:
    fields.setdefault("title", f"{owner.username}'s job")
    fields.setdefault("program", 'print("hi")')
    fields.setdefault("remote_directory", "/tmp/drs-api")
    return factories.job(owner, server, interpreter, **fields)


def _template(interpreter, server) -> JobTemplate:
    template = JobTemplate.objects.create(
        name="count", interpreter=interpreter, program="import sys\nprint(sys.argv)"
    )
    template.servers.set([server])
    template.parameters.create(name="n", type="integer", default="1")
    template.parameters.create(name="mode", type="choice", choices=["a", "b"])
    return template


def _input(job: Job, path: str, data: bytes) -> Input:
    row = Input(job=job, path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    row.file.save(path, ContentFile(data), save=True)
    return row


def _result(job: Job, name: str, data: bytes) -> Result:
    result = Result(
        job=job, remote_filename=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    result.local_file.save(name, ContentFile(data), save=True)
    return result


def build_world() -> World:
    User = get_user_model()
    users = {
        "owner": User.objects.create_user("alice"),
        "other": User.objects.create_user("bob"),
        "staff": User.objects.create_user("admin", is_staff=True),
        "superuser": User.objects.create_superuser("root-user"),
        "member": User.objects.create_user("carol"),
    }
    group = Group.objects.create(name="hpc-team")
    users["member"].groups.add(group)
    tokens = {role: Token.objects.create(user=user).key for role, user in users.items()}
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3", arguments=["-u"])
    bash = Interpreter.objects.create(name="bash", path="/bin/bash")
    spare_interpreter = Interpreter.objects.create(name="perl", path="/usr/bin/perl")
    server = Server.objects.create(title="nowhere", hostname="127.0.0.1", port=9)
    server.interpreters.set([python3])
    spare_server = Server.objects.create(title="spare", hostname="127.0.0.1", port=9)
    group_server = Server.objects.create(title="group only", hostname="127.0.0.1", port=9)
    group_server.interpreters.set([python3])
    group_server.allowed_groups.set([group])
    local_server = Server.objects.create(title="worker", hostname="localhost", local=True)
    local_server.interpreters.set([python3])
    alice, bob = users["owner"], users["other"]
    job = _job(alice, server, python3)
    done = _job(
        alice,
        server,
        python3,
        title="finished",
        status=Job.STATUS.success,
        exit_code=0,
        options={"timeout": 30.0, "log_policy": 2, "store_results": ["*.bin"]},
    )
    bob_job = _job(bob, server, python3)
    return World(
        users=users,
        tokens=tokens,
        python3=python3,
        bash=bash,
        spare_interpreter=spare_interpreter,
        server=server,
        spare_server=spare_server,
        group_server=group_server,
        local_server=local_server,
        group=group,
        job=job,
        local_job=_job(alice, local_server, python3, title="local"),
        account=ServerAccount.objects.create(user=alice, server=server),
        done=done,
        bob_job=bob_job,
        log=Log.objects.create(job=done, content="alice's line\n"),
        bob_log=Log.objects.create(job=bob_job, content="bob's line\n"),
        result=_result(done, "out/data.bin", RESULT_BYTES),
        bob_result=_result(bob_job, "bob.txt", b"bob's file\n"),
        api_token=ApiToken.objects.create(alice, prefix=PREFIX, name="alice's script")[0],
        input=_input(done, "in/data.csv", b"a,b\n1,2\n"),
        template=_template(python3, server),
    )


def client(world: World, role: str) -> APIClient:
    """An API client authenticated with the role's token (none for ``anonymous``)."""
    api = APIClient()
    if role != "anonymous":
        api.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[role]}")
    return api


class Recorder:
    """Stands in for a Celery task's ``delay``: records the calls, runs nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def delay(self, *args, **kwargs) -> None:
        self.calls.append((args, kwargs))


def fake_tasks() -> SimpleNamespace:
    """Usage: ``monkeypatch.setattr(services, "tasks", fake_tasks())`` (what is queued)."""
    return SimpleNamespace(submit_job_to_server=Recorder(), cancel_job=Recorder())
