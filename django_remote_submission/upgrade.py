"""Upgrading a database of django-remote-submission 2.1.0: ``manage.py migrate`` does it.

    python manage.py migrate
    #   Upgrading the tables of django-remote-submission 2.1.0 to this version's 0001 ... OK
    #   Applying django_remote_submission.0002_access_policy_and_audit... OK

2.1.0 recorded its tables as migration ``django_remote_submission.0001_initial``, the name of
this app's own first migration, so Django takes a 2.1.0 database for one that has this app's
0001 schema and would run the later migrations on 2.1.0's tables. Hence, before any
migration runs (``pre_migrate``), a database whose job table has exactly 2.1.0's columns
and whose history records 0001 is brought to this app's 0001 schema, every row kept, in
one transaction; the migrations after 0001 then run as on any other database. Released
migrations stay as they are, and the check costs one look at the job table's columns.

``UPGRADE`` is a migration outside the graph, run by Django's own schema editor (so it works
on every database Django supports). It starts from 2.1.0's tables (``SCHEMA_2_1_0``) and
alters or adds each field to its definition in 0001, reading those definitions from 0001
itself; ids become 64-bit (and PostgreSQL's serial columns identity columns, as 0001 makes
them). The data is converted on the way:

- ``Interpreter.arguments``: 2.1.0 stored Python literals (``"['-u']"``); now JSON.
- Jobs ``success`` and ``failure`` get ``finished_at`` = their last change (``modified``).
  Jobs 2.1.0 left ``submitted`` were running in a worker that the upgrade stopped: nothing
  can follow them, so they become ``failure`` with an error that says so (resubmit them).
- ``Log.offset``: the byte offset of each row in its stream, counted from 2.1.0's rows.
- ``Result.size``: the stored file's size where the storage has it (``sha256`` stays empty).
"""

from __future__ import annotations

import ast
import json
import shlex
import sqlite3
import sys
import uuid

from django.conf import settings
from django.db import connections, migrations, models
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ProjectState
from django.db.models import F
from django.utils import timezone

APP = "django_remote_submission"
MODELS = ("interpreter", "server", "job", "log", "result")
JOB_TABLE = f"{APP}_job"
# 2.1.0's job table, column for column: only a table exactly like it is upgraded.
JOB_COLUMNS_2_1_0 = frozenset(
    {
        "id",
        "created",
        "modified",
        "title",
        "uuid",
        "program",
        "status",
        "remote_directory",
        "remote_filename",
        "interpreter_id",
        "owner_id",
        "server_id",
    }
)
INTERRUPTED = (
    "Interrupted by the upgrade from django-remote-submission 2.1.0: the worker that ran "
    "it was stopped, and 2.1.0 left nothing to follow it with. Submit it again."
)


def _stamped(*fields) -> list:
    return [
        ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False)),
        ("created", models.DateTimeField(default=timezone.now, editable=False)),
        ("modified", models.DateTimeField(default=timezone.now, editable=False)),
        *fields,
    ]


def _fk(to: str, on_delete, related_name: str) -> models.ForeignKey:
    return models.ForeignKey(to, on_delete, related_name=related_name)


def schema_2_1_0() -> list[migrations.CreateModel]:
    """2.1.0's tables, as its migration 0001_initial made them (columns, types, keys)."""
    job = f"{APP}.job"
    return [
        migrations.CreateModel(
            "Interpreter",
            _stamped(
                ("name", models.CharField(max_length=100)),
                ("path", models.CharField(max_length=256)),
                ("arguments", models.TextField()),
            ),
        ),
        migrations.CreateModel(
            "Server",
            _stamped(
                ("title", models.CharField(max_length=100)),
                ("hostname", models.CharField(max_length=100)),
                ("port", models.IntegerField(default=22)),
                ("interpreters", models.ManyToManyField(f"{APP}.interpreter")),
            ),
        ),
        migrations.CreateModel(
            "Job",
            _stamped(
                ("title", models.CharField(max_length=250)),
                ("uuid", models.UUIDField(default=uuid.uuid4, editable=False)),
                ("program", models.TextField()),
                ("status", models.CharField(default="initial", max_length=100)),
                ("remote_directory", models.CharField(max_length=250)),
                ("remote_filename", models.CharField(max_length=250)),
                ("interpreter", _fk(f"{APP}.interpreter", models.PROTECT, "jobs")),
                ("owner", _fk(settings.AUTH_USER_MODEL, models.PROTECT, "jobs")),
                ("server", _fk(f"{APP}.server", models.PROTECT, "jobs")),
            ),
        ),
        migrations.CreateModel(
            "Log",
            [
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False)),
                ("time", models.DateTimeField(default=timezone.now, editable=False)),
                ("content", models.TextField()),
                ("stream", models.CharField(default="stdout", max_length=6)),
                ("job", _fk(job, models.CASCADE, "logs")),
            ],
        ),
        migrations.CreateModel(
            "Result",
            _stamped(
                ("remote_filename", models.TextField()),
                ("local_file", models.FileField(max_length=250, upload_to="results")),
                ("job", _fk(job, models.CASCADE, "results")),
            ),
        ),
    ]


# --- data ---------------------------------------------------------------------------------


def _arguments(text: str) -> list[str]:
    """2.1.0's ListField text (``str(list)``) as a list of strings."""
    try:
        value = ast.literal_eval(text) if text.strip() else []
    except (ValueError, SyntaxError):
        return shlex.split(text)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def arguments_to_json(apps, schema_editor) -> None:
    Interpreter = apps.get_model(APP, "Interpreter")
    db = schema_editor.connection.alias
    for pk, text in Interpreter.objects.using(db).values_list("pk", "arguments"):
        encoded = json.dumps(_arguments(text or ""))
        Interpreter.objects.using(db).filter(pk=pk).update(arguments=encoded)


def through_ids(apps, schema_editor) -> None:
    """The id of ``Server.interpreters``' table, as 0001 makes it (Django sizes it after
    ``DEFAULT_AUTO_FIELD``)."""
    Server = apps.get_model(APP, "Server")
    through = Server._meta.get_field("interpreters").remote_field.through
    new = through._meta.pk
    if type(new) is models.AutoField:
        return  # as 2.1.0 made it
    old = models.AutoField(auto_created=True, primary_key=True, serialize=False)
    old.set_attributes_from_name("id")
    old.model = through
    schema_editor.alter_field(through, old, new)


# Each log row's offset in one statement: the bytes of the rows before it in its stream.
_OFFSETS = """
UPDATE {log} SET {offset} = before.bytes FROM (
  SELECT id, COALESCE(SUM({length}) OVER (PARTITION BY job_id, stream ORDER BY id
    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bytes FROM {log}
) AS before WHERE {log}.id = before.id AND before.bytes <> 0
"""
OFFSET_LENGTH = {"postgresql": "octet_length(content)", "sqlite": "length(CAST(content AS BLOB))"}


def _log_offsets(Log, connection) -> None:
    """Each row's byte offset in its stream: the bytes of the rows before it."""
    quote = connection.ops.quote_name
    table, offset = quote(Log._meta.db_table), quote("offset")
    length = OFFSET_LENGTH.get(connection.vendor)
    if length and (connection.vendor != "sqlite" or sqlite3.sqlite_version_info >= (3, 33)):
        with connection.cursor() as cursor:
            cursor.execute(_OFFSETS.format(log=table, offset=offset, length=length))
        return
    update = f"UPDATE {table} SET {offset} = %s WHERE id = %s"
    offsets: dict[tuple[int, str], int] = {}
    batch: list[tuple[int, int]] = []
    rows = Log.objects.using(connection.alias).order_by("pk")
    with connection.cursor() as cursor:
        for pk, job_id, stream, content in rows.values_list(
            "pk", "job_id", "stream", "content"
        ).iterator(chunk_size=2000):
            key = (job_id, stream)
            before = offsets.get(key, 0)
            offsets[key] = before + len(content.encode("utf-8", "surrogatepass"))
            if before:
                batch.append((before, pk))
            if len(batch) >= 2000:
                cursor.executemany(update, batch)
                batch = []
        cursor.executemany(update, batch)


def _result_sizes(Result, db: str) -> None:
    for result in Result.objects.using(db).filter(size=0).exclude(local_file="").iterator():
        try:
            size = result.local_file.storage.size(result.local_file.name)
        except (OSError, NotImplementedError):
            continue  # not in the storage: the row stays as it was
        Result.objects.using(db).filter(pk=result.pk).update(size=size)


def convert_data(apps, schema_editor) -> None:
    db = schema_editor.connection.alias
    Job = apps.get_model(APP, "Job")
    Job.objects.using(db).filter(status__in=["success", "failure"]).update(
        finished_at=F("modified")
    )
    Job.objects.using(db).filter(status="submitted").update(
        status="failure", error=INTERRUPTED, finished_at=timezone.now()
    )
    _log_offsets(apps.get_model(APP, "Log"), schema_editor.connection)
    _result_sizes(apps.get_model(APP, "Result"), db)


def identity_columns(apps, schema_editor) -> None:
    """PostgreSQL: the serial ids 2.1.0's Django made become identity columns, as 0001's."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    Server = apps.get_model(APP, "Server")
    tables = [apps.get_model(APP, name)._meta.db_table for name in MODELS]
    tables.append(Server._meta.get_field("interpreters").remote_field.through._meta.db_table)
    quote = schema_editor.quote_name
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(
                "SELECT pg_get_serial_sequence(%s, 'id'), is_identity "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s AND column_name = 'id'",
                [quote(table), table],
            )
            sequence, identity = cursor.fetchone()
            if identity == "YES" or sequence is None:
                continue
            cursor.execute(f"ALTER TABLE {quote(table)} ALTER COLUMN id DROP DEFAULT")
            cursor.execute(f"DROP SEQUENCE {sequence}")
            cursor.execute(
                f"ALTER TABLE {quote(table)} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
            )
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 1), "
                f"max(id) IS NOT NULL) FROM {quote(table)}",
                [quote(table)],
            )


# --- the migration ------------------------------------------------------------------------


def target_state() -> ProjectState:
    """The state of this app's 0001_initial, the schema a 2.1.0 database is brought to."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return loader.project_state((APP, "0001_initial"), at_end=True)


def operations(target: ProjectState) -> list:
    """From 2.1.0's schema to ``target``'s: every field altered or added to its definition
    there (ids first, so that foreign keys follow), then options and indexes."""
    old_fields = {op.name_lower: {name for name, _ in op.fields} for op in schema_2_1_0()}
    states = [target.models[APP, name] for name in MODELS]
    ops: list = [migrations.RunPython(arguments_to_json)]
    ops += [migrations.AlterField(m.name, "id", m.fields["id"].clone()) for m in states]
    ops.append(migrations.RunPython(through_ids))
    for m in states:
        for name, field in m.fields.items():
            if name == "id":
                continue
            kept = name in old_fields[m.name_lower]
            op = migrations.AlterField if kept else migrations.AddField
            ops.append(op(m.name, name, field.clone()))
        keys = migrations.AlterModelOptions.ALTER_OPTION_KEYS
        ops.append(
            migrations.AlterModelOptions(m.name, {k: v for k, v in m.options.items() if k in keys})
        )
        ops += [migrations.AddIndex(m.name, index.clone()) for index in m.options["indexes"]]
        ops += [migrations.AddConstraint(m.name, c.clone()) for c in m.options["constraints"]]
    # Data last: on PostgreSQL, a table whose rows changed cannot be altered in the same
    # transaction (its deferred foreign-key checks are pending).
    ops += [migrations.RunPython(identity_columns), migrations.RunPython(convert_data)]
    return ops


def is_2_1_0(connection) -> bool:
    """The database has 2.1.0's tables, recorded as migration 0001_initial."""
    with connection.cursor() as cursor:
        if JOB_TABLE not in connection.introspection.table_names(cursor):
            return False
        description = connection.introspection.get_table_description(cursor, JOB_TABLE)
    if {column.name for column in description} != JOB_COLUMNS_2_1_0:
        return False
    return (APP, "0001_initial") in MigrationRecorder(connection).applied_migrations()


def upgrade(connection, state: ProjectState) -> ProjectState:
    """Bring 2.1.0's tables to this app's 0001 schema; ``state``: the project's state before
    it (the other apps' models). Returns the state after it."""
    state = state.clone()
    for name in MODELS:
        if (APP, name) in state.models:
            state.remove_model(APP, name)
    for op in schema_2_1_0():
        op.state_forwards(APP, state)
    migration = migrations.Migration("upgrade_from_2_1_0", APP)
    migration.operations = operations(target_state())  # type: ignore[misc]
    with connection.schema_editor(atomic=True) as editor:
        return migration.apply(state, editor)


def upgrade_before_migrate(sender, using, apps=None, verbosity=1, **kwargs) -> None:
    """``pre_migrate`` receiver: upgrade a 2.1.0 database before its migrations run."""
    connection = connections[using]
    if apps is None or not is_2_1_0(connection):
        return
    out = kwargs.get("stdout") or sys.stdout
    if verbosity:
        out.write("  Upgrading the tables of django-remote-submission 2.1.0 to 0001_initial...\n")
    upgrade(connection, ProjectState.from_apps(apps))
    if verbosity:
        out.write("  Upgraded from 2.1.0: servers, interpreters, jobs, logs and results kept.\n")
