"""How long what a job leaves is kept: old logs move into storage, old results and jobs go.

    report = retention.apply()                       # as the DRS settings say
    report = retention.apply(archive_after_days=7, purge_jobs_after_days=365)
    report.as_dict()   # {"archived_jobs": 12, "archived_rows": 48210, "purged_results": 0, ...}

Run it daily: ``manage.py drs_retention`` (cron, a systemd timer) or the Celery task
``tasks.apply_retention`` (Celery beat). Three steps, each counted from the job's end
(``finished_at``) and only for finished jobs:

- ``ARCHIVE_LOGS_AFTER_DAYS`` (30; 0: never): the log rows of each such job move into one
  compressed file in storage (``archive.py``); the job's page, its log download, the API
  (``api/logs/?job=&after=``) and the websockets serve them from there, unchanged.
- ``PURGE_RESULTS_AFTER_DAYS`` (0: never): the job's result files and rows are deleted.
- ``PURGE_JOBS_AFTER_DAYS`` (0: never): the job is deleted with its log, archive, results
  and files; its audit trail stays (with the job's title) and records the purge.

Several runs at once (two workers, a cron beside beat) share the work: each job is locked
with ``SKIP LOCKED`` where the database has it, and rechecked under the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from . import archive, audit, db
from .conf import drs_settings
from .models import FINAL_STATES, Event, Job, Log, Result
from .results import delete_files_on_commit

logger = logging.getLogger(__name__)

BATCH = 100  # jobs per transaction of a purge, and per query of the archiver


@dataclass
class Report:
    """What one run of the retention did (or, with ``dry_run``, would do)."""

    archived_jobs: int = 0
    archived_rows: int = 0
    purged_results: int = 0
    purged_jobs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _finished_before(days: float, now: datetime | None) -> QuerySet[Job]:
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return Job.objects.filter(status__in=FINAL_STATES, finished_at__lt=cutoff)


def _batches(jobs: QuerySet[Job]) -> Iterator[list[Job]]:
    """The jobs in pk order, BATCH at a time (each batch read afresh)."""
    after = 0
    while batch := list(jobs.filter(pk__gt=after).order_by("pk")[:BATCH]):
        yield batch
        after = batch[-1].pk


def archive_logs(days: float, *, now: datetime | None = None, dry_run: bool = False) -> Report:
    """Move the log rows of jobs finished more than ``days`` ago into archive files."""
    report = Report()
    jobs = _finished_before(days, now).filter(
        Exists(Log.objects.filter(job=OuterRef("pk"))), log_archive__isnull=True
    )
    for batch in _batches(jobs):
        for job in batch:
            if dry_run:
                report.archived_jobs += 1
                report.archived_rows += job.logs.count()
                continue
            stored = archive.store(job)
            if stored is not None:
                report.archived_jobs += 1
                report.archived_rows += stored.rows
    return report


def _purge(jobs, purge_one, dry_run: bool) -> int:
    done = 0
    for batch in _batches(jobs):
        if dry_run:
            done += len(batch)
            continue
        with transaction.atomic():
            # Rechecked under the lock: a job resubmitted meanwhile is no longer final.
            still = jobs.filter(pk__in=[job.pk for job in batch])
            for job in db.lock_rows(still, skip_locked=True):
                purge_one(job)
                done += 1
    return done


def purge_results(days: float, *, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete the results (rows and files) of jobs finished more than ``days`` ago; returns
    how many jobs lost theirs."""
    jobs = _finished_before(days, now).filter(Exists(Result.objects.filter(job=OuterRef("pk"))))

    def purge(job: Job) -> None:
        results = list(job.results.all())
        job.results.all().delete()
        files = [r.local_file.name for r in results if r.local_file]
        if files:
            delete_files_on_commit(files, results[0].local_file.storage)

    return _purge(jobs, purge, dry_run)


def purge_jobs(days: float, *, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete the jobs finished more than ``days`` ago with everything they left."""

    def purge(job: Job) -> None:
        results = list(job.results.all())
        audit.record(
            Event.Action.delete,
            job=job,
            reason=f"Purged: finished more than {days:g} days ago (DRS['PURGE_JOBS_AFTER_DAYS']).",
        )
        job.delete()  # its log, archive (and the archive's file: see archive.py) and results
        files = [r.local_file.name for r in results if r.local_file]
        if files:
            delete_files_on_commit(files, results[0].local_file.storage)

    return _purge(_finished_before(days, now), purge, dry_run)


def apply(
    *,
    archive_after_days: float | None = None,
    purge_results_after_days: float | None = None,
    purge_jobs_after_days: float | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Report:
    """The three steps, with the DRS settings for the days not given (0: the step is off)."""
    if archive_after_days is None:
        archive_after_days = drs_settings.ARCHIVE_LOGS_AFTER_DAYS
    if purge_results_after_days is None:
        purge_results_after_days = drs_settings.PURGE_RESULTS_AFTER_DAYS
    if purge_jobs_after_days is None:
        purge_jobs_after_days = drs_settings.PURGE_JOBS_AFTER_DAYS
    report = Report()
    if purge_jobs_after_days:
        report.purged_jobs = purge_jobs(purge_jobs_after_days, now=now, dry_run=dry_run)
    if purge_results_after_days:
        report.purged_results = purge_results(purge_results_after_days, now=now, dry_run=dry_run)
    if archive_after_days:
        archived = archive_logs(archive_after_days, now=now, dry_run=dry_run)
        report.archived_jobs, report.archived_rows = archived.archived_jobs, archived.archived_rows
    if not dry_run and any(report.as_dict().values()):
        logger.info("Retention: %s", report.as_dict())
    return report
