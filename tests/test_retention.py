"""Retention: the logs of jobs finished long ago move into one compressed file per job and are
served from there exactly as before (job page websocket, download, API); opt-in purges of old
results and jobs. Each reader is compared before and after the move."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_remote_submission import archive, logs, retention, runner, services
from django_remote_submission.models import Event, Job, Log, LogArchive, Result, Server
from django_remote_submission.routing import websocket_urlpatterns
from django_remote_submission.tasks import apply_retention

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


@pytest.fixture
def user():
    return get_user_model().objects.create_user("keeper", password="pw")


@pytest.fixture
def site(user, python3):
    server = Server.objects.create(title="archive", hostname="127.0.0.1")
    server.interpreters.set([python3])

    def job(days_ago: float | None, status: str = "success") -> Job:
        made = Job.objects.create(
            title="old",
            program="print(1)",
            owner=user,
            server=server,
            interpreter=python3,
            remote_directory="old",
            remote_filename="job.py",
        )
        finished = timezone.now() - days_ago * DAY if days_ago is not None else None
        Job.objects.filter(pk=made.pk).update(status=status, finished_at=finished)
        made.refresh_from_db()
        return made

    return job


def write_log(*jobs: Job, lines: int = 300) -> None:
    """Rows of the jobs interleaved (so their ids have gaps), of every stream, some long,
    some not UTF-8-clean (replacement characters), some without a newline."""
    for i in range(lines):
        for job in jobs:
            stream = ("stdout", "stdout", "stderr", "system")[i % 4]
            content = f"{job.pk}:{i} é ✓ \ufffd {'x' * (i * 37 % 900)}"
            Log.objects.create(
                job=job, stream=stream, content=content + ("\n" if i % 7 else ""), offset=i * 10
            )


def pages_of(job: Job, **kwargs) -> list[list[dict]]:
    pages, after = [], 0
    while page := logs.page(job.pk, after, **kwargs):
        pages.append(page)
        after = page[-1]["id"]
    return pages


def downloads(client: Client, job: Job) -> dict[str, bytes]:
    url = reverse("drs:job-log", args=[job.pk])
    return {
        stream: b"".join(
            client.get(url + (f"?stream={stream}" if stream else "")).streaming_content
        )
        for stream in ("", "stdout", "stderr", "system")
    }


def api_follow(client: Client, job: Job, after: int = 0, **params) -> list[dict]:
    rows = []
    while True:
        query = {"job": job.pk, "after": after, "page_size": 37, **params}
        answer = client.get("/api/logs/", query).json()
        rows += answer["results"]
        if answer["next"] is None:
            assert answer["after"] == (rows[-1]["id"] if rows else after)
            return rows
        after = answer["after"]


def websocket_history(user, job: Job, after: int = 0) -> list[dict]:
    async def scenario() -> list[dict]:
        communicator = WebsocketCommunicator(
            URLRouter(websocket_urlpatterns), f"/ws/job-log/{job.pk}/?after={after}"
        )
        communicator.scope["user"] = user
        assert (await communicator.connect())[0]
        rows = []
        try:
            assert (await communicator.receive_json_from())["type"] == "status"
            while not await communicator.receive_nothing(timeout=0.3):
                message = await communicator.receive_json_from()
                assert message["history"] is True
                rows += message["logs"]
                await communicator.send_json_to({"type": "ack", "seq": message["seq"]})
        finally:
            await communicator.disconnect()
            await get_channel_layer().flush()
        return rows

    return async_to_sync(scenario)()


def windows(client: Client, job: Job, middle: int) -> dict:
    """The job page's reads (api/logs/window/): the last page, every page by position, and
    pages beside the middle row."""

    def get(**query) -> dict:
        return client.get("/api/logs/window/", {"job": job.pk, "count": 29, **query}).json()

    last = get()
    pages = [get(start=start)["results"] for start in range(0, last["total"], 29)]
    return {
        "last": last,
        "pages": pages,
        "after the middle": get(after=middle),
        "before the middle": get(before=middle),
    }


def everything(client: Client, user, job: Job, middle: int) -> dict:
    """What each reader serves of the job's log."""
    return {
        "all": list(logs.read(job.pk)),
        "pages": pages_of(job, max_rows=23, max_chars=5000),
        "stderr pages": pages_of(job, streams=["stderr"], max_rows=10),
        "from the middle": list(logs.read(job.pk, middle)),
        "before": list(logs.read(job.pk, 0, before=middle)),
        "downloads": downloads(client, job),
        "api": api_follow(client, job),
        "api stderr": api_follow(client, job, stream="stderr"),
        "api from the middle": api_follow(client, job, after=middle),
        "windows": windows(client, job, middle),
        "websocket": websocket_history(user, job),
        "websocket after": websocket_history(user, job, after=middle),
    }


def test_old_logs_move_into_storage_and_are_served_as_before(
    site, user, settings, monkeypatch, tmp_path
):
    monkeypatch.setattr(archive, "MEMBER_BYTES", 4096)  # many gzip members: seeks are exercised
    old, recent, running, other = site(40), site(10), site(None, "running"), site(41)
    write_log(old, recent, running, other)
    client = Client()
    client.force_login(user)
    ids = list(old.logs.order_by("id").values_list("id", flat=True))
    middle = ids[len(ids) // 2]
    before = everything(client, user, old, middle)
    assert len(before["api"]) == len(ids) == 300
    assert sum(before["windows"]["pages"], []) == before["all"]
    assert before["windows"]["last"] == {"total": 300, "start": 290, "results": before["all"][290:]}

    out = StringIO()
    call_command("drs_retention", stdout=out)
    assert out.getvalue() == (
        "Archived the logs of 2 jobs (600 rows); purged the results of 0 jobs and 0 jobs.\n"
    )
    stored = LogArchive.objects.get(job=old)
    assert not old.logs.exists()
    assert recent.logs.count() == running.logs.count() == 300  # too recent, or not finished
    assert (stored.rows, stored.first_id, stored.last_id) == (300, ids[0], ids[-1])
    assert len(stored.index) > 10
    path = Path(settings.MEDIA_ROOT) / stored.file.name
    assert stored.file.name == f"logs/{old.uuid}.jsonl.gz" and path.stat().st_size == stored.size
    with gzip.open(path, "rt") as f:  # plain gzip: zcat reads it
        lines = [json.loads(line) for line in f]
    assert lines == before["all"] and [row["id"] for row in lines] == ids

    assert everything(client, user, old, middle) == before
    job_page = client.get(reverse("drs:job-detail", args=[old.pk]))
    assert job_page.status_code == 200


def test_archived_rows_keep_their_fields(site, user):
    job = site(40)
    write_log(job, lines=20)
    wanted = list(logs.read(job.pk))
    assert archive.store(job) is not None
    assert list(logs.read(job.pk)) == wanted
    assert set(wanted[0]) == {"id", "time", "stream", "content", "offset"}


def test_rows_stored_after_the_archive_follow_it(site):
    job = site(40)
    write_log(job, lines=10)
    archive.store(job)
    late = Log.objects.create(job=job, stream="system", content="afterwards\n")
    rows = list(logs.read(job.pk))
    assert len(rows) == 11 and rows[-1]["id"] == late.pk
    assert logs.page(job.pk, rows[-2]["id"]) == [rows[-1]]
    # Positions run on from the archive into the database, and back.
    assert logs.window(job.pk, count=4) == {"total": 11, "start": 8, "logs": rows[8:]}
    assert logs.window(job.pk, start=6, count=4)["logs"] == rows[6:10]
    assert logs.window(job.pk, before=late.pk, count=3)["logs"] == rows[7:10]
    assert logs.window(job.pk, after=rows[8]["id"], count=3)["logs"] == rows[9:]


def test_a_job_that_changes_while_its_log_is_written_keeps_its_rows(site, monkeypatch):
    job = site(40)
    write_log(job, lines=30)
    real = archive._write

    def resubmitted_meanwhile(lines, out):
        written = real(lines, out)
        Job.objects.filter(pk=job.pk).update(status="submitted", finished_at=None)
        return written

    monkeypatch.setattr(archive, "_write", resubmitted_meanwhile)
    assert archive.store(job) is None
    assert job.logs.count() == 30
    assert not LogArchive.objects.exists()


def test_resubmitting_or_deleting_an_archived_job_deletes_its_file(site, user, settings):
    first, second = site(40), site(40)
    write_log(first, second, lines=10)
    files = [Path(settings.MEDIA_ROOT) / archive.store(job).file.name for job in (first, second)]
    assert all(f.exists() for f in files)

    runner.lease(first.pk, "a new submission", {}, "")  # a new run replaces the old log
    assert not files[0].exists() and not LogArchive.objects.filter(job=first).exists()
    services.delete(second, user)
    assert not files[1].exists()


def test_purges_are_opt_in_and_keep_the_audit_trail(site, user, settings):
    old, older, recent = site(100), site(400), site(10)
    for job in (old, older, recent):
        write_log(job, lines=5)
        result = Result(job=job, remote_filename="out.txt", size=1)
        result.local_file.save("out.txt", ContentFile(b"1"), save=True)
    report = retention.apply(archive_after_days=0)  # the defaults purge nothing
    assert report.as_dict() == {
        "archived_jobs": 0,
        "archived_rows": 0,
        "purged_results": 0,
        "purged_jobs": 0,
    }
    names = {job.pk: job.results.get().local_file.name for job in (old, older, recent)}
    settings.DRS = {
        **settings.DRS,
        "PURGE_RESULTS_AFTER_DAYS": 90,
        "PURGE_JOBS_AFTER_DAYS": 365,
        "ARCHIVE_LOGS_AFTER_DAYS": 30,
    }
    assert retention.apply(dry_run=True).as_dict() == {
        "archived_jobs": 2,
        "archived_rows": 10,
        "purged_results": 2,
        "purged_jobs": 1,
    }
    assert apply_retention() == {
        "archived_jobs": 1,
        "archived_rows": 5,
        "purged_results": 1,
        "purged_jobs": 1,
    }
    media = Path(settings.MEDIA_ROOT)
    assert not Job.objects.filter(pk=older.pk).exists()
    assert not (media / names[older.pk]).exists()
    assert not old.results.exists() and not (media / names[old.pk]).exists()
    assert (media / names[recent.pk]).exists() and recent.results.exists()
    assert LogArchive.objects.filter(job=old).exists()
    purged = Event.objects.get(action=Event.Action.delete)
    assert purged.job is None and purged.job_title == "old" and "Purged" in purged.reason


@pytest.mark.postgres
def test_concurrent_archivers_archive_each_job_once(site, settings):
    jobs = [site(40) for _ in range(12)]
    write_log(*jobs, lines=40)
    reports, errors = [], []

    def archiver() -> None:
        try:
            reports.append(retention.archive_logs(30))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=archiver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert sum(r.archived_jobs for r in reports) == 12
    assert sum(r.archived_rows for r in reports) == 12 * 40
    assert LogArchive.objects.count() == 12 and not Log.objects.exists()
    media = Path(settings.MEDIA_ROOT)
    for job in jobs:  # one file each: no archiver left a second one behind
        name = LogArchive.objects.get(job=job).file.name
        assert [str(f.relative_to(media)) for f in media.glob(f"logs/{job.uuid}*")] == [name]
