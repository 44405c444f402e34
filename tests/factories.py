"""The one place tests make users, interpreters, servers and jobs (fixtures build on these).

    alice = factories.user("alice")
    py = factories.interpreter()                      # /usr/bin/python3 -u
    hpc = factories.server(sshd, py)                  # the test sshd, host key on record
    job = factories.job(alice, hpc, py, program="print(1)", remote_directory="/tmp/x")

Every field has a default that a test overrides by keyword.
"""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model

from django_remote_submission.models import Interpreter, Job, Server


def user(name: str, *, staff: bool = False, superuser: bool = False, **fields):
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(name, **fields)
    return User.objects.create_user(name, is_staff=staff, **fields)


def interpreter(name: str = "python3", path: str = "/usr/bin/python3", arguments=None):
    if arguments is None:
        arguments = ["-u"] if name == "python3" else []
    return Interpreter.objects.create(name=name, path=path, arguments=arguments)


def server(sshd=None, *interpreters: Interpreter, **fields) -> Server:
    """The test sshd (``sshd``) with its host key on record, or ``hostname=...`` etc."""
    if sshd is not None:
        fields = {"hostname": sshd.host, "port": sshd.port, "host_key": sshd.host_key, **fields}
    fields.setdefault("title", fields.get("hostname", "server"))
    made = Server.objects.create(**fields)
    if interpreters:
        made.interpreters.set(interpreters)
    return made


def job(owner, server: Server, interpreter: Interpreter, **fields) -> Job:
    fields.setdefault("title", f"job of {owner}")
    fields.setdefault("program", "print(1)")
    fields.setdefault("remote_directory", f"drs-jobs/{uuid.uuid4().hex[:10]}")
    fields.setdefault("remote_filename", "job.py")
    return Job.objects.create(owner=owner, server=server, interpreter=interpreter, **fields)


def log_lines(job: Job, count: int, *, batch: int = 50_000) -> None:
    """``count`` stdout rows ``line <i>\\n`` (i from 0) for ``job``, bulk-inserted in id order:
    a million in a few seconds on SQLite."""
    from django.db import connection, transaction
    from django.utils import timezone

    from django_remote_submission.models import Log

    table, offset_ = (connection.ops.quote_name(n) for n in (Log._meta.db_table, "offset"))
    sql = (
        f"INSERT INTO {table} (job_id, time, stream, content, {offset_})"
        " VALUES (%s, %s, 'stdout', %s, %s)"
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    offset = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for first in range(0, count, batch):
            params = []
            for i in range(first, min(count, first + batch)):
                text = f"line {i}\n"
                params.append((job.pk, now, text, offset))
                offset += len(text)
            cursor.executemany(sql, params)
