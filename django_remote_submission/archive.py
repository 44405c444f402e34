"""A finished job's log as one compressed file in storage: written, read back, deleted.

    found = archive.store(job)              # LogArchive, its rows deleted; None if it changed
    for row in archive.rows(found, after=120):
        row                                 # {"id", "time", "stream", "content", "offset"}

``store`` writes the rows of the job's log (gzip members of about ``MEMBER_BYTES`` each, one
JSON object per line: ``zcat logs/<uuid>.jsonl.gz`` shows them) into storage, then creates
the ``LogArchive`` and deletes the rows it holds, provided the job has not changed (still
final, same end time, same rows): a job resubmitted or a row added meanwhile keeps its rows,
and the file is deleted again. Where the database locks rows (PostgreSQL), the job is locked
with ``SKIP LOCKED`` before its file is written: concurrent archivers each take other jobs,
and never wait for one another. On SQLite, which locks the whole database, the file is
written first and the lock taken only for the swap.

Rows keep their ids, so cursors (``after=`` of the API and the websockets) go on working
across the move; ``logs.read`` and ``logs.page`` serve both places transparently. Deleting a
``LogArchive`` (directly, or with its job) deletes its file once the transaction commits.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator

from django.core.files import File
from django.db import transaction
from django.db.models import Count, Max, Min
from django.db.models.signals import post_delete
from django.dispatch import receiver

from . import db
from .models import FINAL_STATES, Job, Log, LogArchive

logger = logging.getLogger(__name__)

MEMBER_BYTES = 1 << 20  # uncompressed bytes of JSON lines per gzip member
READ_ROWS = 200  # rows read from the database at a time while writing
FIELDS = ("id", "time", "stream", "content", "offset")


def _lines(job_pk: int, last_id: int) -> Iterator[tuple[int, bytes]]:
    """(id, JSON line) of the job's rows up to ``last_id``, in id order, a page at a time."""
    after = 0
    while True:
        page = list(
            Log.objects.filter(job_id=job_pk, id__gt=after, id__lte=last_id)
            .order_by("id")
            .values_list(*FIELDS)[:READ_ROWS]
        )
        if not page:
            return
        for pk, time, stream, content, offset in page:
            row = {"id": pk, "time": time.isoformat(), "stream": stream, "content": content}
            row["offset"] = offset
            yield pk, json.dumps(row, ensure_ascii=False).encode() + b"\n"
        after = page[-1][0]


def _write(lines: Iterable[tuple[int, bytes]], out) -> tuple[int, list[list[int]]]:
    """Write gzip members of about MEMBER_BYTES; return (rows, [[first id, offset], ...])."""
    count, size = 0, 0
    index: list[list[int]] = []
    member: list[bytes] = []

    def flush() -> None:
        nonlocal member, size
        if member:
            out.write(gzip.compress(b"".join(member), compresslevel=6, mtime=0))
            member, size = [], 0

    for pk, line in lines:
        if not member:
            index.append([pk, out.tell()])
        member.append(line)
        size += len(line)
        count += 1
        if size >= MEMBER_BYTES:
            flush()
    flush()
    return count, index


def store(job: Job) -> LogArchive | None:
    """Move the log of the finished ``job`` into storage; None when there was nothing to move,
    another archiver has the job, or it changed meanwhile (see the module doc)."""
    if job.status not in FINAL_STATES:
        raise ValueError(f"Job {job.pk} is {job.status}: only a finished job's log is archived.")
    unchanged = Job.objects.filter(pk=job.pk, status__in=FINAL_STATES, finished_at=job.finished_at)
    if not db.has_row_locks():
        # SQLite locks the whole database: write the file first, then take the lock only to
        # swap the rows for it (a concurrent archiver may have written the same file).
        archive = _write_file(job)
        return archive and _swap(archive, unchanged)
    with transaction.atomic():
        # The job stays locked while its file is written: other archivers skip it, and a
        # resubmission waits for the swap.
        if not db.lock_rows(unchanged, skip_locked=True):
            return None
        archive = _write_file(job)
        return archive and _swap(archive, unchanged)


def _write_file(job: Job) -> LogArchive | None:
    """The job's rows in a new file in storage; the LogArchive describing it, not saved."""
    if LogArchive.objects.filter(job_id=job.pk).exists():
        return None  # archived already; rows written since then stay in the database
    seen = Log.objects.filter(job_id=job.pk).aggregate(
        n=Count("id"), first=Min("id"), last=Max("id")
    )
    if not seen["n"]:
        return None
    archive = LogArchive(job=job, first_id=seen["first"], last_id=seen["last"])
    with tempfile.NamedTemporaryFile(prefix="drs-log-", suffix=".jsonl.gz") as tmp:
        archive.rows, archive.index = _write(_lines(job.pk, seen["last"]), tmp)
        archive.size = tmp.tell()
        tmp.seek(0)
        archive.file.save("", File(tmp), save=False)  # the name comes from log_archive_path
    return archive


def _swap(archive: LogArchive, unchanged) -> LogArchive | None:
    """Save the archive and delete the rows it holds, if the job has not changed."""
    try:
        with transaction.atomic():
            if (
                not db.lock_rows(unchanged)
                or LogArchive.objects.filter(job_id=archive.job_id).exists()
            ):
                raise _Changed()
            archive.save()
            rows = Log.objects.filter(job_id=archive.job_id, id__lte=archive.last_id)
            if rows.delete()[0] != archive.rows:  # a row committed meanwhile below the last id
                raise _Changed()
    except _Changed:
        archive.file.delete(save=False)
        return None
    except BaseException:
        archive.file.delete(save=False)
        raise
    return archive


class _Changed(Exception):
    """The job changed while its log was written out: it keeps its rows."""


def rows(
    archive: LogArchive,
    after: int = 0,
    *,
    before: int | None = None,
    streams: Iterable[str] | None = None,
) -> Iterator[dict]:
    """The archived rows with an id above ``after`` (and below ``before``; of ``streams``),
    oldest first. Only the members from the one holding ``after + 1`` are decompressed."""
    if after >= archive.last_id:
        return
    wanted = set(streams) if streams is not None else None
    firsts = [first for first, _offset in archive.index]
    member = max(0, bisect.bisect_right(firsts, after + 1) - 1)
    start = archive.index[member][1] if archive.index else 0
    try:
        handle = archive.file.storage.open(archive.file.name or "", "rb")
    except FileNotFoundError:
        logger.error("The log archive %s of job %s is missing", archive.file.name, archive.job_id)
        return
    with handle:
        handle.seek(start)
        with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
            for line in unzipped:
                row = json.loads(line)
                if row["id"] <= after:
                    continue
                if before is not None and row["id"] >= before:
                    return
                if wanted is None or row["stream"] in wanted:
                    yield row


@receiver(post_delete, sender=LogArchive)
def _delete_file(sender, instance: LogArchive, **kwargs) -> None:
    """The file goes with its row, once the transaction commits (it stays if it rolls back)."""
    name, storage = instance.file.name, instance.file.storage
    if name:
        transaction.on_commit(lambda: storage.delete(name))
