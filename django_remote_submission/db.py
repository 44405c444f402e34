"""Database writes that survive a restart of the database server, and row locks that use what
the database offers.

    from django_remote_submission import db

    db.retrying(lambda: Job.objects.filter(pk=pk).update(heartbeat=now), "a heartbeat")
    with transaction.atomic():
        for job in db.lock_rows(Job.objects.filter(status="success"), skip_locked=True): ...

``retrying(write, what)`` runs ``write()``; when the connection to the database is lost (the
server restarted, a fail-over, a network cut: ``OperationalError`` or ``InterfaceError``), it
drops the connection and runs ``write()`` again with backoff (0.2 s, doubling up to 5 s) for
up to ``DRS["DB_RETRY_FOR"]`` seconds. The outcome of a commit whose answer was lost is
unknown: ``done()``, when given, is asked before each new attempt and returns True when the
lost attempt did commit (a write without ``done`` must be safe to run twice). Inside a
transaction nothing is retried: the transaction is gone, and its owner decides.

``lock_rows(queryset, skip_locked=True)`` is ``SELECT ... FOR UPDATE SKIP LOCKED`` where the
database has it (PostgreSQL): rows another transaction holds are left to it, so concurrent
sweeps share the work instead of queueing. SQLite has no row locks: there the rows are
written to (a no-op ``UPDATE``), which takes its database-wide write lock before they are
read, so that two transactions never deadlock upgrading a read lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import F, QuerySet

from .conf import drs_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
LOST = (OperationalError, InterfaceError)
FIRST_DELAY, MAX_DELAY = 0.2, 5.0


def retrying(write: Callable[[], T], what: str, done: Callable[[], bool] | None = None) -> T | None:
    """``write()``, run again after a lost connection (see the module doc); returns its value,
    or None when ``done()`` says a lost attempt committed."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        return write()
    limit = float(drs_settings.DB_RETRY_FOR)
    started, delay, attempt = time.monotonic(), FIRST_DELAY, 0
    while True:
        try:
            if attempt and done is not None and done():
                logger.warning("The database is back: %s had been stored.", what)
                return None
            value = write()
        except LOST as exc:
            connection.close()  # a broken connection is dropped; the next query opens another
            waited = time.monotonic() - started
            if waited > limit:
                raise
            if not attempt:
                logger.warning(
                    "Database unavailable while storing %s (%s: %s); retrying for up to %g s.",
                    what,
                    type(exc).__name__,
                    str(exc).strip(),
                    limit,
                )
            attempt += 1
            time.sleep(min(delay, max(0.0, limit - waited) + 0.01))
            delay = min(delay * 2, MAX_DELAY)
            continue
        if attempt:
            logger.warning(
                "The database is back after %.1f s: %s stored.", time.monotonic() - started, what
            )
        return value


def lock_rows(queryset: QuerySet, *, skip_locked: bool = False) -> list:
    """The rows of ``queryset``, locked until the current transaction ends (see the module doc).

    With ``skip_locked``, rows locked by another transaction are not returned (PostgreSQL;
    elsewhere every row is returned once the lock is held).
    """
    features = connections[queryset.db].features
    if not features.has_select_for_update:
        pk = queryset.model._meta.pk.attname
        queryset.update(**{pk: F(pk)})  # SQLite: take the write lock before reading
        return list(queryset)
    if skip_locked and features.has_select_for_update_skip_locked:
        return list(queryset.select_for_update(skip_locked=True))
    return list(queryset.select_for_update())


def has_row_locks(alias: str = "default") -> bool:
    """Whether the database locks rows (``SELECT ... FOR UPDATE``); SQLite locks it whole."""
    return connections[alias].features.has_select_for_update
