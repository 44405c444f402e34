"""The app's signals, and the model signals its own writes send.

    from django.dispatch import receiver
    from django_remote_submission.models import Job
    from django_remote_submission.signals import job_state_changed, logs_stored

    @receiver(job_state_changed)
    def on_change(sender, job, old, new, actor, update_fields, **kwargs):
        if new == Job.STATUS.success:
            notify(job.owner, f"{job.title} succeeded")

    @receiver(logs_stored)
    def on_logs(sender, job, logs, **kwargs):
        index(log.content for log in logs)

``job_state_changed(sender=Job, job, old, new, actor, update_fields, using)``: every change,
``running`` included, once, in order, right after the change is written (a change that lost
a race to another writer is not sent). ``actor`` is who asked (None: a worker).

``logs_stored(sender=Log, job, logs, using)``: once per batch of ``Log`` rows the runner stores
(one ``bulk_create`` per batch, up to ``LOG_BATCH_BYTES``), after they are written.

Model signals, as 2.1.0 sent them with ``job.save()`` and ``Log.objects.create()``:

- ``Job``: ``pre_save`` then ``post_save`` (``created=False``, ``update_fields`` naming the
  columns written) when a run is submitted and when it ends (success, failure, cancelled):
  the two saves 2.1.0 made per run. The moves to ``queued`` and ``running``, states 2.1.0 did
  not have, are announced by ``job_state_changed`` only, so receivers written for 2.1.0 see
  the statuses they know, as often as they did.
- ``Log``: ``pre_save`` and ``post_save`` (``created=True``) for every row, those the runner
  stores in batches included (a batch holds whole lines, so rows are few).
- ``Result`` (and the one row ``copy_job_to_server`` writes): saved with ``save()``, so
  their signals are Django's own.

The state change is written before its signals are sent (a conditional ``UPDATE`` decides
which of two concurrent changes wins), so a ``Job`` ``pre_save`` receiver cannot change or
stop it: the instance it gets is a copy, and what it changes there is not saved (write
with ``Job.objects.filter(pk=instance.pk).update(...)``). A ``Log`` ``pre_save`` receiver
runs before its row is inserted: what it changes (e.g. ``content``) is stored.

For these signals, a receiver that raises is logged (logger
``django_remote_submission.signals``, with its traceback) and the other receivers still run:
a receiver cannot leave a job half-run, with processes on the host and no final state.
Receivers run where the change is made (mostly a worker) inside a savepoint, so a database
error in one cannot break the transaction around it (on PostgreSQL, where a failed statement
would, the receivers' writes are undone). ``Result`` receivers are Django's: one that raises
stops the stage-out and the job fails ("Internal error: ..."), without that file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from django.db import DatabaseError, router, transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import Signal

from .models import FINAL_STATES, Job, Log, Status

logger = logging.getLogger(__name__)

job_state_changed = Signal()
logs_stored = Signal()

# The app's own reactions to a change of state (metrics, the hand-out of free slots), called
# in order after the signal's receivers. Not receivers of the signal: with no receiver of the
# project's own, a change opens no transaction for them (a write lock, with SQLite's IMMEDIATE
# transactions, on every change of every job).
_reactions: list[Callable[..., None]] = []


def react(function: Callable[..., None]) -> None:
    """Call ``function(job=, old=, new=, actor=)`` after each change of a job's state (the
    app's own modules; a project connects to ``job_state_changed``)."""
    if function not in _reactions:
        _reactions.append(function)


# The moves 2.1.0 saved a job for: a run starts, a run ends.
SAVED_IN_2_1_0 = frozenset({Status.submitted, *FINAL_STATES})


def _send(signal: Signal, sender, **kwargs) -> None:
    """Call every receiver; one that raises is logged and does not stop the others."""
    if not signal.has_listeners(sender):
        return
    try:
        with transaction.atomic(using=kwargs["using"]):
            responses = signal.send_robust(sender, **kwargs)
    except DatabaseError:
        logger.exception("A %s receiver left a database error; its writes were undone", sender)
        return
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error("Signal receiver %r failed", receiver, exc_info=response)


def state_changed(job: Job, old: str, new: str, fields, actor=None) -> None:
    """Announce a change ``runner.move`` has written (``fields``: the columns it set)."""
    instance = copy.copy(job)
    using = router.db_for_write(Job, instance=job)
    update_fields = frozenset({"status", "modified", *fields})
    if new in SAVED_IN_2_1_0:
        for signal in (pre_save, post_save):
            extra = {"created": False} if signal is post_save else {}
            _send(
                signal,
                Job,
                instance=instance,
                raw=False,
                using=using,
                update_fields=update_fields,
                **extra,
            )
    _send(
        job_state_changed,
        Job,
        job=instance,
        old=old,
        new=new,
        actor=actor,
        update_fields=update_fields,
        using=using,
    )
    for reaction in _reactions:
        try:
            reaction(job=instance, old=old, new=new, actor=actor)
        except Exception:  # like a receiver: logged, never a half-run job
            logger.exception("Reacting to job %s becoming %s failed", job.pk, new)


def logs_saving(rows: list[Log]) -> None:
    """``pre_save`` of each row about to be bulk-inserted."""
    using = router.db_for_write(Log)
    for row in rows:
        _send(pre_save, Log, instance=row, raw=False, using=using, update_fields=None)


def logs_saved(job: Job, rows: list[Log]) -> None:
    """``post_save`` of each bulk-inserted row, then ``logs_stored`` for the batch."""
    using = router.db_for_write(Log)
    for row in rows:
        _send(
            post_save, Log, instance=row, created=True, raw=False, using=using, update_fields=None
        )
    _send(logs_stored, Log, job=job, logs=rows, using=using)
