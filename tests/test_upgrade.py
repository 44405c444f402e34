"""A database of django-remote-submission 2.1.0 upgrades with ``manage.py migrate``.

The test drops the app's tables, builds 2.1.0's (SQL as Django 2.x wrote it for 2.1.0's
migration 0001_initial, on SQLite and PostgreSQL), fills them, records 0001_initial as 2.1.0
did, runs ``migrate`` and checks the schema, the data, and that the jobs run again.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from django_remote_submission import upgrade
from django_remote_submission.models import Interpreter, Job, Log, Result, Server
from django_remote_submission.tasks import submit_job_to_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

APP = "django_remote_submission"
T = f"{APP}_"

# Column types of Django 2.x, per database: what 2.1.0's tables were made of.
TYPES = {
    "sqlite": {
        "id": "integer NOT NULL PRIMARY KEY AUTOINCREMENT",
        "time": "datetime",
        "uuid": "char(32)",
        "fk": 'integer NOT NULL REFERENCES "{}" ("id") DEFERRABLE INITIALLY DEFERRED',
    },
    "postgresql": {
        "id": "serial NOT NULL PRIMARY KEY",
        "time": "timestamp with time zone",
        "uuid": "uuid",
        "fk": "integer NOT NULL",
    },
}
FOREIGN_KEYS = [  # table, column, referenced table
    ("server_interpreters", "server_id", f"{T}server"),
    ("server_interpreters", "interpreter_id", f"{T}interpreter"),
    ("job", "interpreter_id", f"{T}interpreter"),
    ("job", "owner_id", "auth_user"),
    ("job", "server_id", f"{T}server"),
    ("log", "job_id", f"{T}job"),
    ("result", "job_id", f"{T}job"),
]


def ddl_2_1_0(vendor: str) -> list[str]:
    t = TYPES[vendor]
    stamps = f'"id" {t["id"]}, "created" {t["time"]} NOT NULL, "modified" {t["time"]} NOT NULL'

    def fk(table, column):
        target = next(ref for tab, col, ref in FOREIGN_KEYS if (tab, col) == (table, column))
        return f'"{column}" ' + t["fk"].format(target)

    statements = [
        f'CREATE TABLE "{T}interpreter" ({stamps}, "name" varchar(100) NOT NULL, '
        '"path" varchar(256) NOT NULL, "arguments" text NOT NULL)',
        f'CREATE TABLE "{T}server" ({stamps}, "title" varchar(100) NOT NULL, '
        '"hostname" varchar(100) NOT NULL, "port" integer NOT NULL)',
        f'CREATE TABLE "{T}server_interpreters" ("id" {t["id"]}, '
        f"{fk('server_interpreters', 'server_id')}, "
        f"{fk('server_interpreters', 'interpreter_id')})",
        f'CREATE TABLE "{T}job" ({stamps}, "title" varchar(250) NOT NULL, '
        f'"uuid" {t["uuid"]} NOT NULL, "program" text NOT NULL, '
        '"status" varchar(100) NOT NULL, "remote_directory" varchar(250) NOT NULL, '
        f'"remote_filename" varchar(250) NOT NULL, {fk("job", "interpreter_id")}, '
        f"{fk('job', 'owner_id')}, {fk('job', 'server_id')})",
        f'CREATE TABLE "{T}log" ("id" {t["id"]}, "time" {t["time"]} NOT NULL, '
        '"content" text NOT NULL, "stream" varchar(6) NOT NULL, '
        f"{fk('log', 'job_id')})",
        f'CREATE TABLE "{T}result" ({stamps}, "remote_filename" text NOT NULL, '
        f'"local_file" varchar(250) NOT NULL, {fk("result", "job_id")})',
    ]
    unique = f'"{T}server_interpreters_server_id_interpreter_id_0c5a1b2e_uniq"'
    if vendor == "postgresql":
        statements.append(
            f'ALTER TABLE "{T}server_interpreters" ADD CONSTRAINT {unique} '
            'UNIQUE ("server_id", "interpreter_id")'
        )
    else:
        statements.append(
            f'CREATE UNIQUE INDEX {unique} ON "{T}server_interpreters" '
            '("server_id", "interpreter_id")'
        )
    for table, column, target in FOREIGN_KEYS:
        statements.append(f'CREATE INDEX "{T}{table}_{column}_210" ON "{T}{table}" ("{column}")')
        if vendor == "postgresql":
            statements.append(
                f'ALTER TABLE "{T}{table}" ADD CONSTRAINT "{T}{table}_{column}_fk_210" '
                f'FOREIGN KEY ("{column}") REFERENCES "{target}" ("id") '
                "DEFERRABLE INITIALLY DEFERRED"
            )
    return statements


def stamp(text: str) -> str:
    """A timestamp literal as Django 2.x stored it (naive UTC on SQLite)."""
    return text if connection.vendor == "sqlite" else text + "+00"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def insert(table: str, **values) -> None:
    columns = ", ".join(f'"{name}"' for name in values)
    marks = ", ".join(["%s"] * len(values))
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{T}{table}" ({columns}) VALUES ({marks})', list(values.values())
        )


def schema() -> dict:
    """The app's tables as the database describes them: columns and constraints (by what
    they constrain; a constraint's name only for named indexes)."""
    out = {}
    with connection.cursor() as cursor:
        tables = sorted(t for t in connection.introspection.table_names(cursor) if t.startswith(T))
        for table in tables:
            columns = [
                (c.name, c.type_code, c.internal_size, c.null_ok, c.default)
                for c in connection.introspection.get_table_description(cursor, table)
            ]
            constraints = sorted(
                (
                    tuple(c["columns"] or ()),
                    bool(c["primary_key"]),
                    bool(c["unique"]),
                    tuple(c["foreign_key"] or ()),
                    bool(c["check"]),
                    bool(c["index"]),
                    name if name.endswith("_idx") else "",
                )
                for name, c in connection.introspection.get_constraints(cursor, table).items()
            )
            out[table] = (sorted(columns), constraints)
    return out


def drop_app_tables() -> None:
    with connection.cursor() as cursor:
        tables = [t for t in connection.introspection.table_names(cursor) if t.startswith(T)]
    with connection.schema_editor() as editor:  # SQLite: foreign keys unchecked meanwhile
        for table in tables:
            cascade = " CASCADE" if connection.vendor == "postgresql" else ""
            editor.execute(f'DROP TABLE IF EXISTS "{table}"{cascade}')
    MigrationRecorder(connection).migration_qs.filter(app=APP).delete()


@pytest.fixture
def fresh_schema():
    """This app's schema as ``migrate`` makes it; made again from scratch afterwards."""
    expected = schema()
    yield expected
    drop_app_tables()
    call_command("migrate", APP, verbosity=0)


@pytest.fixture
def database_2_1_0(fresh_schema, sshd, settings, tmp_path):
    """2.1.0's tables with a server (the test sshd), two interpreters, four jobs in each of
    2.1.0's states, logs and a result whose file is in the storage."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    call_command("migrate", APP, "zero", verbosity=0)
    with connection.schema_editor() as editor:
        for statement in ddl_2_1_0(connection.vendor):
            editor.execute(statement)
    owner = get_user_model().objects.create_user(sshd.password_user or sshd.key_user)
    t0, t1 = stamp("2018-03-01 10:00:00"), stamp("2018-03-01 10:05:00.250000")
    # 2.1.0's ListField stored str(list)
    python3 = dict(name="python3", path="/usr/bin/python3", arguments="['-u']")
    insert("interpreter", id=3, created=t0, modified=t0, **python3)
    insert(
        "interpreter", id=4, created=t0, modified=t0, name="bash", path="/bin/bash", arguments="[]"
    )
    insert(
        "server", id=5, created=t0, modified=t0, title="sshd", hostname=sshd.host, port=sshd.port
    )
    insert("server_interpreters", id=1, server_id=5, interpreter_id=3)
    insert("server_interpreters", id=2, server_id=5, interpreter_id=4)
    uuids = {}
    base = sshd.base_dir_pw or sshd.base_dir_key
    for pk, status in ((7, "success"), (8, "failure"), (9, "submitted"), (10, "initial")):
        uuids[pk] = uuid.uuid4()
        insert(
            "job",
            id=pk,
            created=t0,
            modified=t1,
            title=f"job {pk}",
            uuid=uuids[pk].hex,
            program='print("hello again")\nopen("out.txt", "w").write("again")\n',
            status=status,
            remote_directory=f"{base}/upgraded-{uuids[pk].hex[:8]}",
            remote_filename="job.py",
            interpreter_id=3,
            owner_id=owner.pk,
            server_id=5,
        )
    for pk, (stream, content) in enumerate(
        [("stdout", "héllo "), ("stderr", "warn\n"), ("stdout", "world\n"), ("stdout", "end\n")],
        start=20,
    ):
        insert("log", id=pk, time=t0, content=content, stream=stream, job_id=7)
    stored = f"results/{uuids[7]}/out.txt"
    (tmp_path / "media" / "results" / str(uuids[7])).mkdir(parents=True)
    (tmp_path / "media" / stored).write_bytes(b"RESULT")
    insert(
        "result",
        id=30,
        created=t1,
        modified=t1,
        remote_filename="out.txt",
        local_file=stored,
        job_id=7,
    )
    MigrationRecorder(connection).record_applied(APP, "0001_initial")
    return uuids


def test_migrate_brings_a_2_1_0_database_to_the_fresh_schema(database_2_1_0, fresh_schema):
    assert upgrade.is_2_1_0(connection)
    out = io.StringIO()
    call_command("migrate", APP, stdout=out)
    assert (
        "Upgrading the tables of django-remote-submission 2.1.0 to 0001_initial" in out.getvalue()
    )
    assert schema() == fresh_schema
    assert not upgrade.is_2_1_0(connection)
    recorded = {
        name for app, name in MigrationRecorder(connection).applied_migrations() if app == APP
    }
    assert recorded == {path.stem for path in upgrade_migrations()}


def upgrade_migrations():
    from pathlib import Path

    import django_remote_submission.migrations as package

    return sorted(p for p in Path(package.__path__[0]).glob("0*.py"))


def test_the_upgrade_ends_in_0001s_state(database_2_1_0, fresh_schema):
    """Every field of the five models ends as 0001 defines it (the same deconstruction)."""
    from django.db.migrations.loader import MigrationLoader

    before = MigrationLoader(None).project_state((APP, "0001_initial"))
    state = upgrade.upgrade(connection, before)
    target = upgrade.target_state()
    for name in upgrade.MODELS:
        got, want = state.models[APP, name], target.models[APP, name]
        assert {n: f.deconstruct() for n, f in got.fields.items()} == {
            n: f.deconstruct() for n, f in want.fields.items()
        }
        assert got.options == want.options
    call_command("migrate", APP, verbosity=0)
    assert schema() == fresh_schema


@pytest.mark.parametrize("offsets", ["one statement", "row by row"])
def test_the_data_of_2_1_0_survives(database_2_1_0, sshd, offsets, monkeypatch):
    if offsets == "row by row":  # as on databases without window functions in UPDATE
        monkeypatch.setattr(upgrade, "OFFSET_LENGTH", {})
    uuids = database_2_1_0
    call_command("migrate", APP, verbosity=0)
    server = Server.objects.get()
    assert (server.pk, server.title, server.hostname, server.host_key) == (5, "sshd", sshd.host, "")
    assert sorted(server.interpreters.values_list("name", "path", "arguments")) == [
        ("bash", "/bin/bash", []),
        ("python3", "/usr/bin/python3", ["-u"]),
    ]
    jobs = {j.pk: j for j in Job.objects.all()}
    assert {pk: (j.status, j.uuid, j.title) for pk, j in jobs.items()} == {
        7: ("success", uuids[7], "job 7"),
        8: ("failure", uuids[8], "job 8"),
        9: ("failure", uuids[9], "job 9"),
        10: ("initial", uuids[10], "job 10"),
    }
    changed = when("2018-03-01 10:05:00.250000")
    assert [jobs[pk].modified for pk in (7, 8, 10)] == [changed] * 3
    assert [jobs[pk].created for pk in (7, 8, 9, 10)] == [when("2018-03-01 10:00:00")] * 4
    assert (jobs[7].finished_at, jobs[8].finished_at, jobs[10].finished_at) == (
        changed,
        changed,
        None,
    )
    assert (jobs[7].error, jobs[8].error, jobs[9].error) == ("", "", upgrade.INTERRUPTED)
    assert jobs[9].finished_at is not None and jobs[9].can_submit
    assert (jobs[7].exit_code, jobs[7].options, jobs[7].submission) == (None, {}, "")
    assert list(Log.objects.order_by("pk").values_list("pk", "stream", "content", "offset")) == [
        (20, "stdout", "héllo ", 0),
        (21, "stderr", "warn\n", 0),
        (22, "stdout", "world\n", 7),  # "héllo " is 7 bytes
        (23, "stdout", "end\n", 13),
    ]
    result = Result.objects.get()
    assert (result.pk, result.remote_filename, result.size, result.sha256) == (30, "out.txt", 6, "")
    assert result.local_file.read() == b"RESULT"


def test_upgraded_jobs_run_again(database_2_1_0, sshd):
    call_command("migrate", APP, verbosity=0)
    call_command("drs_fetch_host_key", "sshd", "--save", stdout=io.StringIO())
    again = Job.objects.get(pk=7)
    results = submit_job_to_server(again.pk, password=sshd.password)
    again.refresh_from_db()
    assert (again.status, again.exit_code, again.error) == ("success", 0, "")
    assert list(again.logs.values_list("stream", "content")) == [("stdout", "hello again\n")]
    assert results == {"out.txt": again.results.get().pk}
    assert again.results.get().local_file.read() == b"again"
    new = Job.objects.create(
        title="new",
        program="echo $0 $#",
        remote_directory=again.remote_directory,
        remote_filename="new.sh",
        owner=again.owner,
        server=again.server,
        interpreter=Interpreter.objects.get(name="bash"),
    )
    assert new.pk == 11  # ids go on after 2.1.0's
    submit_job_to_server(new.pk, password=sshd.password)
    new.refresh_from_db()
    assert (new.status, "".join(new.logs.values_list("content", flat=True))) == (
        "success",
        "new.sh 0\n",
    )


def test_a_database_of_this_app_is_left_alone(fresh_schema):
    assert not upgrade.is_2_1_0(connection)
    out = io.StringIO()
    call_command("migrate", APP, stdout=out)
    assert "2.1.0" not in out.getvalue()
    assert schema() == fresh_schema


def test_2_1_0_arguments_become_lists():
    assert [upgrade._arguments(text) for text in ("['-u']", "[]", "", "['python', '-u']")] == [
        ["-u"],
        [],
        [],
        ["python", "-u"],
    ]
    assert upgrade._arguments("-u -B") == ["-u", "-B"]  # not a literal: split as a shell would
