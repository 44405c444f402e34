"""Signals: Job pre_save/post_save as 2.1.0 sent them, job_state_changed for every change,
Log rows and their batches, Result rows; receivers that raise or change what they get."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.db.models.signals import post_save, pre_save

from django_remote_submission import runner
from django_remote_submission.models import Job, Log, Result
from django_remote_submission.signals import job_state_changed, logs_stored
from django_remote_submission.tasks import cancel_job, copy_job_to_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def received():
    """Usage: ``received.connect(signal, sender)``; ``received.calls``: what arrived."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple] = []
            self.connected: list[tuple] = []

        def connect(self, signal, sender, receiver=None):
            def record(sender, **kwargs):
                self.calls.append((signal, kwargs))

            receiver = receiver or record
            signal.connect(receiver, sender=sender, weak=False)
            self.connected.append((signal, receiver, sender))
            return receiver

    recorder = Recorder()
    yield recorder
    for signal, receiver, sender in recorder.connected:
        signal.disconnect(receiver, sender=sender)


def saves(received) -> list[tuple]:
    """(signal name, status of the instance, status in the database, update_fields)."""
    out = []
    for signal, kw in received.calls:
        name = "pre_save" if signal is pre_save else "post_save"
        db_status = Job.objects.filter(pk=kw["instance"].pk).values_list("status", flat=True)[0]
        out.append((name, kw["instance"].status, db_status, kw["update_fields"]))
    return out


def test_a_run_sends_pre_and_post_save_when_submitted_and_when_it_ends(make_job, submit, received):
    job = make_job("print('hi')")
    seen = []

    def look(sender, instance, **kwargs):  # the database holds the change already
        seen.append((instance.status, Job.objects.get(pk=instance.pk).status))

    received.connect(pre_save, Job, look)
    received.connect(post_save, Job)
    submit(job)
    assert seen == [("submitted", "submitted"), ("success", "success")]
    (_, submitted), (_, ended) = received.calls
    assert [kw["instance"].status for _, kw in received.calls] == ["submitted", "success"]
    assert (submitted["created"], submitted["raw"], submitted["using"]) == (False, False, "default")
    assert {"status", "modified", "submission", "run_dir", "credential"} <= set(
        submitted["update_fields"]
    )
    assert ended["update_fields"] == frozenset(
        {"status", "modified", "exit_code", "error", "finished_at", "credential"}
    )
    assert ended["instance"].exit_code == 0


def test_job_state_changed_sends_every_change_in_order(make_job, submit, received, owner):
    job = make_job("print('hi')")
    received.connect(job_state_changed, Job)
    submit(job)
    job.refresh_from_db()
    changes = [(kw["old"], kw["new"], kw["actor"], kw["job"].pk) for _, kw in received.calls]
    assert changes == [
        ("initial", "submitted", None, job.pk),
        ("submitted", "running", None, job.pk),
        ("running", "success", None, job.pk),
    ]
    assert received.calls[1][1]["update_fields"] == frozenset(
        {"status", "modified", "pid", "run_dir", "started_at", "deadline", "options", "heartbeat"}
    )


def test_the_actor_of_a_change_is_sent(make_job, received, owner):
    job = make_job("print(1)")
    received.connect(job_state_changed, Job)
    received.connect(post_save, Job)
    runner.move(job, Job.STATUS.cancelled, actor=owner, error="Not wanted.")
    (_, post), (_, change) = received.calls
    assert (change["old"], change["new"], change["actor"]) == ("initial", "cancelled", owner)
    assert post["instance"].error == "Not wanted."


def test_a_cancel_before_submission_sends_one_save(make_job, received):
    job = make_job("print(1)")
    received.connect(post_save, Job)
    cancel_job(job.pk)
    assert [(kw["instance"].status, kw["instance"].error) for _, kw in received.calls] == [
        ("cancelled", "Cancelled before it was submitted.")
    ]


def test_copy_job_to_server_sends_the_two_saves_of_2_1_0(make_job, sshd, received):
    job = make_job("print(1)")
    received.connect(post_save, Job)
    copy_job_to_server(job.pk, password=sshd.password)
    assert [kw["instance"].status for _, kw in received.calls] == ["submitted", "success"]


def test_a_change_that_lost_a_race_sends_nothing(make_job, received):
    job = make_job("print(1)")
    received.connect(pre_save, Job)
    received.connect(post_save, Job)
    received.connect(job_state_changed, Job)
    stale = Job.objects.get(pk=job.pk)
    runner.move(job, Job.STATUS.cancelled)
    assert runner.move(stale, Job.STATUS.submitted) is False
    assert [(s, kw.get("new")) for s, kw in received.calls] == [
        (pre_save, None),
        (post_save, None),
        (job_state_changed, "cancelled"),
    ]


def test_a_receiver_that_raises_is_logged_and_the_run_goes_on(make_job, submit, received, caplog):
    def broken(sender, instance, **kwargs):
        raise RuntimeError(f"receiver bug at {instance.status}")

    job = make_job("print('hi')")
    received.connect(pre_save, Job, broken)
    received.connect(post_save, Job)
    with caplog.at_level(logging.ERROR, logger="django_remote_submission.signals"):
        submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert [kw["instance"].status for _, kw in received.calls] == ["submitted", "success"]
    errors = [r for r in caplog.records if r.name == "django_remote_submission.signals"]
    assert [str(r.exc_info[1]) for r in errors] == [
        "receiver bug at submitted",
        "receiver bug at success",
    ]
    assert all(r.exc_info[2] is not None for r in errors)  # with the traceback


def test_a_pre_save_receiver_cannot_change_the_job(make_job, submit, received):
    def meddle(sender, instance, **kwargs):
        instance.title = "changed by a receiver"
        instance.status = "bogus"

    job = make_job("print('hi')")
    received.connect(pre_save, Job, meddle)
    submit(job)
    job.refresh_from_db()
    assert (job.status, job.title) == (
        Job.STATUS.success,
        "test_a_pre_save_receiver_cannot_change_the_job",
    )


@pytest.mark.postgres
def test_a_database_error_in_a_receiver_is_undone_alone(make_job, submit, received, caplog):
    def bad_sql(sender, instance, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM no_such_table")

    job = make_job("print('hi')")
    received.connect(post_save, Job, bad_sql)
    with caplog.at_level(logging.ERROR, logger="django_remote_submission.signals"):
        submit(job)
    job.refresh_from_db()
    assert (job.status, "".join(job.logs.values_list("content", flat=True))) == ("success", "hi\n")
    assert len([r for r in caplog.records if r.name == "django_remote_submission.signals"]) == 2


def test_log_rows_send_their_saves_and_each_batch_logs_stored(make_job, submit, received):
    received.connect(post_save, Log)
    received.connect(logs_stored, Log)
    job = make_job(
        "import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\n"
        "print('two', file=sys.stderr, flush=True)\ntime.sleep(0.3)\nprint('three')\n"
    )
    submit(job)
    rows = list(job.logs.order_by("pk"))
    assert [(r.stream, r.content) for r in rows] == [
        ("stdout", "one\n"),
        ("stderr", "two\n"),
        ("stdout", "three\n"),
    ]
    saved = [kw for s, kw in received.calls if s is post_save]
    assert [(kw["instance"].pk, kw["created"]) for kw in saved] == [(r.pk, True) for r in rows]
    batches = [kw for s, kw in received.calls if s is logs_stored]
    assert [[log.pk for log in kw["logs"]] for kw in batches] == [[r.pk] for r in rows]
    assert {kw["job"].pk for kw in batches} == {job.pk}
    order = [
        ("save" if s is post_save else "batch", kw.get("instance", kw.get("logs")))
        for s, kw in received.calls
    ]
    assert [kind for kind, _ in order] == ["save", "batch"] * 3  # each row saved, then its batch


def test_a_log_pre_save_receiver_changes_what_is_stored(make_job, submit, received):
    def redact(sender, instance, **kwargs):
        instance.content = instance.content.replace("s3cret", "******")

    job = make_job("print('token s3cret')")
    received.connect(pre_save, Log, redact)
    submit(job)
    assert list(job.logs.values_list("content", flat=True)) == ["token ******\n"]


def test_each_result_sends_one_post_save(make_job, submit, received):
    job = make_job("open('a.txt', 'w').write('A')\nopen('b.txt', 'w').write('BB')\n")
    received.connect(post_save, Result)
    submit(job)
    got = [
        (kw["instance"].remote_filename, kw["instance"].size, kw["created"])
        for _, kw in received.calls
    ]
    assert got == [("a.txt", 1, True), ("b.txt", 2, True)]
