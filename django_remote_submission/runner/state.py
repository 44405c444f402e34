"""The job state machine's moves, and taking a job for a run (its lease).

    runner.move(job, Status.running, login="ada")   # False when another process moved it first
    job, run_it = runner.lease(job.pk, submission, options, credential)

Only these functions change a job's state: each change is a conditional UPDATE, recorded in
the audit trail and announced (websockets, signals).
"""

from __future__ import annotations

import hashlib

from django.db import transaction
from django.utils import timezone

from .. import db, events, signals
from ..conf import drs_settings
from ..logs import clear_logs
from ..models import (
    ACTIVE_STATES,
    FINAL_STATES,
    FRESH_RUN,
    TRANSITIONS,
    Event,
    Job,
    Result,
    Status,
)
from ..results import delete_files_on_commit


class IllegalTransition(Exception):
    """A move the state machine (``TRANSITIONS``) does not allow: a bug of the caller."""


class StateChanged(Exception):
    """Another process changed the job's state first: this run leaves the job alone."""


class AlreadyRunning(Exception):
    """A new submission of a job whose run is still alive."""


class HandedOver(Exception):
    """The worker shuts down: the run released its job for another worker to follow."""


def move(job: Job, to: str, *, login: str = "", actor=None, **fields) -> bool:
    """Change the job's state and record it in the audit trail (``login``: the login the run
    used; ``actor``: who asked, None for a worker); then send the signals of the change (see
    ``signals``).

    A conditional update: returns False, writing nothing, when another process changed the
    job's state first (a lost race); raises ``IllegalTransition`` for a move the state
    machine does not allow. A write cut by a lost database connection is retried (see
    ``db.retrying``).
    """
    old = job.status
    if to not in TRANSITIONS[job.status]:
        raise IllegalTransition(f"A job cannot go from {job.status} to {to}.")
    now = timezone.now()
    if to in FINAL_STATES:
        fields.setdefault("finished_at", now)
        fields.setdefault("credential", "")

    def write() -> bool:
        with transaction.atomic():
            updated = Job.objects.filter(pk=job.pk, status=job.status).update(
                status=to, modified=now, **fields
            )
            if not updated:
                return False
            Event.objects.create(
                time=now,
                action=Event.Action.state,
                job_id=job.pk,
                job_title=job.title[:250],
                server_id=job.server_id,
                actor=actor,
                from_state=job.status,
                to_state=to,
                login=login[:150],
                reason=fields.get("error", "") or fields.get("wait_reason", ""),
            )
            return True

    moved = Job.objects.filter(pk=job.pk, status=to, modified=now).exists
    if db.retrying(write, f"job {job.pk} becoming {to}", done=moved) is False:
        return False  # (None: a lost answer to a commit that moved it)
    job.status, job.modified = to, now
    for name, value in fields.items():
        setattr(job, name, value)
    transaction.on_commit(lambda: events.status_changed(job))
    signals.state_changed(job, old, to, fields, actor)
    return True


def note_scheduler_state(job: Job, shown: str) -> None:
    """Record what the scheduler says of the job (not a change of the job's state: no audit
    event) and tell the pages."""
    shown = shown[:255]
    if not shown or shown == job.scheduler_state:
        return
    Job.objects.filter(pk=job.pk).update(scheduler_state=shown)
    job.scheduler_state = shown
    transaction.on_commit(lambda: events.status_changed(job))


def lease(job_pk: int, submission: str, options: dict, credential: str) -> tuple[Job, bool]:
    """Take the job for this submission. Returns (job, run_it).

    The row is locked (``select_for_update``) and every state change is a conditional
    update, so of two deliveries of one submission only one runs it; the other returns.
    ``AlreadyRunning`` for a new submission of a job whose run is alive.
    """
    job = Job.objects.get(pk=job_pk)
    if job.status == Status.initial:
        # Never ran: nothing to clear, and ``move`` is a conditional UPDATE, so this one
        # statement takes the job (a second delivery loses the race). A transaction of
        # several statements would queue every concurrent job behind SQLite's write lock.
        won = move(
            job,
            Status.submitted,
            submission=submission,
            run_dir=_run_dir(job, submission),
            options=options,
            credential=credential,
            heartbeat=timezone.now(),
        )
        return (job, True) if won else (Job.objects.get(pk=job_pk), False)
    return _lease_again(job_pk, submission, options, credential)


def _run_dir(job: Job, submission: str) -> str:
    """The run directory of one submission: a redelivery of it finds the same directory."""
    tag = hashlib.sha256(submission.encode()).hexdigest()[:12]
    return f"{drs_settings.RUN_ROOT}/{job.uuid}.{tag}"


def _lease_again(job_pk: int, submission: str, options: dict, credential: str):
    """A redelivery (resumed when its worker died), or a new run of a finished job."""
    with transaction.atomic():
        # The row is locked (on SQLite, written to first: that takes the write lock before
        # any read, so two leases cannot deadlock upgrading a read lock).
        (job,) = db.lock_rows(Job.objects.filter(pk=job_pk))
        if job.submission == submission and job.status != Status.initial:
            if job.status in FINAL_STATES or not job.is_stale:
                return job, False  # done already, or the other delivery is on it
            job.heartbeat = timezone.now()  # from now on the run writes only while it is this
            Job.objects.filter(pk=job.pk).update(heartbeat=job.heartbeat)
            return job, True  # its worker died: resume the run
        if job.status in ACTIVE_STATES and not job.is_stale:
            raise AlreadyRunning(
                f"Job {job.pk} is already {job.status}; cancel it before resubmitting."
            )
        clear_logs(job)
        # The files go once the new run is committed: should the move below fail, the old
        # rows come back and their files are still there.
        files = [name for name in job.results.values_list("local_file", flat=True) if name]
        job.results.all().delete()
        delete_files_on_commit(files, Result._meta.get_field("local_file").storage)
        won = move(
            job,
            Status.submitted,
            submission=submission,
            run_dir=_run_dir(job, submission),
            options=options,
            credential=credential,
            heartbeat=timezone.now(),
            **FRESH_RUN,
        )
        return job, won
