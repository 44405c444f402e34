"""The database under many workers: writes retried after the server dropped the connection,
a run that lost its job to another worker stores nothing more, each stale job claimed by one
sweep, and rows another transaction holds skipped (PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from django_remote_submission import db, runner
from django_remote_submission.logs import LeaseLost, LogWriter
from django_remote_submission.models import Job, Log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (make test-postgres)")


def drop_my_connection() -> None:
    """End this connection's server process from another session, as a restart of the
    server does."""
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"], port=s["PORT"], user=s["USER"], dbname=s["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_write_on_a_dropped_connection_is_retried(make_job, caplog):
    postgres_only()
    job = make_job("print(1)")
    drop_my_connection()
    with caplog.at_level(logging.WARNING, logger="django_remote_submission.db"):
        updated = db.retrying(
            lambda: Job.objects.filter(pk=job.pk).update(title="after"), "a test write"
        )
    assert updated == 1
    assert Job.objects.get(pk=job.pk).title == "after"
    lost, back = (r.getMessage() for r in caplog.records)
    assert lost.startswith("Database unavailable while storing a test write (OperationalError")
    assert back.startswith("The database is back after ") and back.endswith(
        " s: a test write stored."
    )


def test_a_log_batch_on_a_dropped_connection_is_stored_once(make_job):
    postgres_only()
    job = make_job("print(1)")
    writer = LogWriter(job)
    writer.feed("stdout", b"one\ntwo\n")
    drop_my_connection()
    writer.flush()
    writer.close()
    job.refresh_from_db()
    assert list(job.logs.values_list("content", flat=True)) == ["one\ntwo\n"]
    assert job.stdout_offset == 8


def test_inside_a_transaction_nothing_is_retried(make_job):
    postgres_only()
    job = make_job("print(1)")
    with pytest.raises(OperationalError), transaction.atomic():
        drop_my_connection()
        db.retrying(lambda: Job.objects.filter(pk=job.pk).update(title="x"), "a test write")
    connection.close()
    assert Job.objects.get(pk=job.pk).title != "x"


def test_a_run_that_lost_its_job_stores_nothing_more(make_job):
    job = make_job("print(1)")
    job.heartbeat = timezone.now()
    Job.objects.filter(pk=job.pk).update(status="running", heartbeat=job.heartbeat)
    writer = LogWriter(job)
    writer.feed("stdout", b"first\n")
    writer.flush()
    # Another worker took the job for dead and resumed it: the heartbeat is its own now.
    Job.objects.filter(pk=job.pk).update(heartbeat=timezone.now() + timedelta(seconds=1))
    writer.feed("stdout", b"second\n")
    with pytest.raises(LeaseLost):
        writer.flush()
    job.refresh_from_db()
    assert list(job.logs.values_list("content", flat=True)) == ["first\n"]
    assert job.stdout_offset == 6


def test_each_stale_job_is_claimed_by_one_sweep(make_job, settings):
    old = timezone.now() - timedelta(seconds=10 * settings.DRS["HEARTBEAT_INTERVAL"])
    jobs = [make_job("print(1)") for _ in range(30)]
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(status="running", heartbeat=old)
    fresh = make_job("print(1)")
    Job.objects.filter(pk=fresh.pk).update(status="running", heartbeat=timezone.now())
    claims: list[list[int]] = []

    def sweep() -> None:
        try:
            claims.append(runner.claim_stale_jobs())
        finally:
            connection.close()

    sweeps = [threading.Thread(target=sweep) for _ in range(4)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join(60)
    claimed = [pk for claim in claims for pk in claim]
    assert sorted(claimed) == sorted(j.pk for j in jobs)  # each once, by one sweep
    assert not Job.objects.filter(pk__in=claimed, heartbeat__isnull=False).exists()
    assert runner.claim_stale_jobs() == []  # claimed: left alone ...
    Job.objects.filter(pk=jobs[0].pk).update(modified=old)
    assert runner.claim_stale_jobs() == [jobs[0].pk]  # ... until its resume task is overdue


def test_rows_another_transaction_holds_are_skipped(make_job):
    postgres_only()
    held, free = make_job("print(1)"), make_job("print(2)")
    locked, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                db.lock_rows(Job.objects.filter(pk=held.pk))
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert locked.wait(30)
        with transaction.atomic():
            rows = db.lock_rows(Job.objects.filter(pk__in=[held.pk, free.pk]), skip_locked=True)
            assert [job.pk for job in rows] == [free.pk]
    finally:
        release.set()
        thread.join(30)
    assert not Log.objects.exists()
