"""A job's output into ``Log`` rows: exact bytes, whole lines, batched.

    writer = LogWriter(job, LogPolicy.LOG_LIVE)
    writer.feed("stdout", b"partial li")      # nothing stored yet
    writer.feed("stdout", b"ne\\nmore")
    writer.flush_if_due()                     # stores "partial line\\n" once the batch is due
    writer.close()                            # stores the rest ("more")

Bytes are decoded incrementally (a character split between two reads is never an error;
invalid bytes and NUL bytes, which PostgreSQL's text columns refuse, become U+FFFD). With
``LOG_LIVE`` a row holds whole lines of one stream; a batch is stored as soon as it holds a
whole line, but at most once per ``LOG_FLUSH_INTERVAL`` s unless it holds
``LOG_BATCH_BYTES``, with one ``bulk_create`` and one broadcast, and the job's byte offsets
move in the same transaction, so a resumed stream starts exactly where the rows end. With
``LOG_TOTAL`` a stream is stored as one row when the job ends (rows of ``LOG_ROW_BYTES`` at
most). No buffer grows with the output: past ``LOG_MAX_BYTES`` (both streams together)
nothing more is kept, and ``full`` tells the runner to stop reading.

Reading, wherever the rows are (the database, or the job's archive file once the retention
moved them: see ``archive.py``), as ``events.log_payload`` dicts, oldest first:

    for row in read(job.pk, after=120, streams=["stderr"]): ...
    page(job.pk, after=120, max_rows=500, max_chars=256 * 1024)   # one bounded page
    window(job.pk, count=200)              # a log view's page: the last one, or by position
    window(job.pk, before=9120, count=200) # ... or the rows before (after) one it has
"""

from __future__ import annotations

import codecs
import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from . import archive, db, events, metrics, signals
from .conf import drs_settings
from .models import Job, Log, LogArchive


class LeaseLost(Exception):
    """Another worker follows the job now (this run was taken for dead): this run stops
    without storing anything more."""

    def __init__(self, job_pk: int) -> None:
        super().__init__(f"Job {job_pk} is followed by another worker now; this run stops.")


class LogPolicy:
    """What to keep of a job's output (the original's names and values)."""

    LOG_NONE = 0  # nothing
    LOG_LIVE = 1  # rows as the output arrives
    LOG_TOTAL = 2  # one row per stream when the job ends

    @classmethod
    def validate(cls, value) -> int:
        if value not in (cls.LOG_NONE, cls.LOG_LIVE, cls.LOG_TOTAL):
            raise ValueError(
                f"Unknown log policy {value!r}: use LogPolicy.LOG_NONE, LOG_LIVE or LOG_TOTAL."
            )
        return value


class _Stream:
    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.offset = offset  # bytes handed to the decoder so far
        self.buf = bytearray()
        self.since: float | None = None  # monotonic time the oldest pending byte arrived
        self.arrived = timezone.now()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def ready(self) -> bool:
        """Holds what ``take`` stores before the end: a whole line, or an over-long one."""
        return self.buf.rfind(b"\n") >= 0 or len(self.buf) >= drs_settings.LOG_MAX_LINE_BYTES

    @property
    def committed(self) -> int:
        """Offset up to which the output is stored (the decoder may hold a split character)."""
        return self.offset - len(self.decoder.getstate()[0])

    def take(self, final: bool, limit: int) -> list[tuple[int, str]]:
        """Remove what is ready from the buffer: [(byte offset, text), ...] in row-sized pieces."""
        if final:
            cut = len(self.buf)
        else:
            cut = self.buf.rfind(b"\n") + 1
            if not cut and len(self.buf) >= drs_settings.LOG_MAX_LINE_BYTES:
                cut = len(self.buf)
        pieces = []
        start = 0
        while start < cut:
            end = cut
            if end - start > limit:
                nl = self.buf.rfind(b"\n", start, start + limit)
                end = nl + 1 if nl >= start else start + limit
            text = self.decoder.decode(bytes(self.buf[start:end]), final=final and end == cut)
            text = text.replace("\0", "\ufffd")
            if text:
                pieces.append((self.offset + start, text))
            start = end
        del self.buf[:cut]
        self.offset += cut
        if not self.buf:
            self.since = None
        return pieces

    def take_rows(self, limit: int) -> list[tuple[int, str]]:
        """Whole rows of about ``limit`` bytes (cut at a line end when there is one), leaving
        the rest in the buffer."""
        pieces = []
        while len(self.buf) >= limit:
            nl = self.buf.rfind(b"\n", 0, limit)
            end = nl + 1 if nl >= 0 else limit
            text = self.decoder.decode(bytes(self.buf[:end])).replace("\0", "\ufffd")
            pieces.append((self.offset, text))
            del self.buf[:end]
            self.offset += end
        return pieces

    def rewind(self) -> int:
        """Drop what is not stored; return the offset to read again from."""
        start = self.committed
        self.buf.clear()
        self.since = None
        self.offset = start
        self.decoder.reset()
        return start


class LogWriter:
    """Turns chunks of output into Log rows according to a ``LogPolicy``."""

    def __init__(self, job: Job, policy: int = LogPolicy.LOG_LIVE) -> None:
        self.job = job
        self.policy = LogPolicy.validate(policy)
        self.streams = {
            "stdout": _Stream("stdout", job.stdout_offset),
            "stderr": _Stream("stderr", job.stderr_offset),
        }
        self.stored_at = float("-inf")  # monotonic time of the last store
        self.max_bytes = int(drs_settings.LOG_MAX_BYTES)
        self.fed = job.stdout_offset + job.stderr_offset  # bytes of both streams taken in
        self.dropped = False  # bytes arrived past LOG_MAX_BYTES
        self.received = metrics.transferred(job, "log")

    @property
    def full(self) -> bool:
        """``LOG_MAX_BYTES`` are in: nothing more will be kept, stop reading."""
        return self.fed >= self.max_bytes

    def feed(self, stream: str, data: bytes) -> None:
        s = self.streams[stream]
        self.received.inc(len(data))
        if self.policy == LogPolicy.LOG_NONE:
            s.offset += len(data)
            return
        room = self.max_bytes - self.fed
        if len(data) > room:
            data = data[: max(0, room)]
            self.dropped = True
        self.fed += len(data)
        if not data:
            return
        if s.since is None:
            s.since = time.monotonic()
            s.arrived = timezone.now()
        s.buf += data

    def due_in(self) -> float | None:
        """Seconds until the pending batch must be stored (None: nothing pending)."""
        if self.policy == LogPolicy.LOG_TOTAL:
            row = int(drs_settings.LOG_ROW_BYTES)
            return 0.0 if any(len(s.buf) >= row for s in self.streams.values()) else None
        if self.policy != LogPolicy.LOG_LIVE:
            return None
        # A partial line waits for its end: were it due, the runner's loop would spin.
        pending = [s.since for s in self.streams.values() if s.since is not None and s.ready]
        if not pending:
            return None
        if any(len(s.buf) >= drs_settings.LOG_BATCH_BYTES for s in self.streams.values()):
            return 0.0
        # At once after a quiet spell, then at most once per interval: a lone line reaches
        # the browser without waiting, a flood is still stored in batches.
        return max(0.0, self.stored_at + drs_settings.LOG_FLUSH_INTERVAL - time.monotonic())

    def flush_if_due(self) -> None:
        due = self.due_in()
        if due is not None and due <= 0:
            self.flush()

    def flush(self, final: bool = False) -> list[Log]:
        """Store what is ready (whole lines; everything when ``final``)."""
        rows = []
        limit = int(drs_settings.LOG_ROW_BYTES)
        oldest = None  # when the oldest byte of the batch arrived (monotonic)
        for s in self.streams.values():
            arrived, since = s.arrived, s.since
            if self.policy == LogPolicy.LOG_TOTAL and not final:
                pieces = s.take_rows(limit)
            else:
                pieces = s.take(final, limit)
            if pieces and since is not None:
                oldest = since if oldest is None else min(oldest, since)
            for offset, text in pieces:
                rows.append(
                    Log(
                        job_id=self.job.pk, stream=s.name, content=text, offset=offset, time=arrived
                    )
                )
            if s.buf:
                s.arrived = timezone.now()
        self._store(rows)
        if rows and oldest is not None:
            metrics.log_stored(self.job, time.monotonic() - oldest)
        return rows

    def _store(self, rows: list[Log]) -> None:
        out, err = self.streams["stdout"].committed, self.streams["stderr"].committed
        if not rows and (out, err) == (self.job.stdout_offset, self.job.stderr_offset):
            return
        now, mine = timezone.now(), self.job.heartbeat
        signals.logs_saving(rows)
        stored = Job.objects.filter(pk=self.job.pk, stdout_offset=out, stderr_offset=err)

        def store() -> None:
            with transaction.atomic():
                # Only while the job's heartbeat is still the one this run wrote: a run that
                # lost the job to another worker stores nothing more (see LeaseLost).
                if not Job.objects.filter(pk=self.job.pk, heartbeat=mine).update(
                    stdout_offset=out, stderr_offset=err, heartbeat=now
                ):
                    raise LeaseLost(self.job.pk)
                if rows:
                    Log.objects.bulk_create(rows)

        done = stored.filter(heartbeat=now).exists
        db.retrying(store, f"the log of job {self.job.pk}", done=done)
        self.job.stdout_offset, self.job.stderr_offset, self.job.heartbeat = out, err, now
        self.stored_at = time.monotonic()
        if rows:
            signals.logs_saved(self.job, rows)
        if rows and all(row.pk for row in rows):  # else the consumers read them from the database
            events.logs_stored(self.job, rows)

    def rewind(self) -> tuple[int, int]:
        """After a lost connection: store whole lines, drop the rest, return resume offsets."""
        if self.policy == LogPolicy.LOG_LIVE:
            self.flush()
        for s in self.streams.values():
            s.rewind()
        out, err = self.streams["stdout"].offset, self.streams["stderr"].offset
        self.fed = out + err
        return out, err

    def close(self) -> None:
        """The streams ended: store everything left, partial last lines included."""
        self.flush(final=True)


def write_notice(job: Job, message: str) -> Log:
    """A message of the app itself about the job (stream "system"), e.g. a skipped result."""
    row = Log(job=job, stream=Log.Stream.system, content=message + "\n")
    signals.logs_saving([row])
    db.retrying(lambda: Log.objects.bulk_create([row]), f"a notice of job {job.pk}")
    signals.logs_saved(job, [row])
    events.logs_stored(job, [row])
    return row


# --- reading a log, wherever it is -----------------------------------------------------------


def clear_logs(job: Job) -> None:
    """Delete the job's log: its rows, and its archive (the file once the transaction commits)."""
    job.logs.all().delete()
    LogArchive.objects.filter(job_id=job.pk).delete()


def _archive_of(job_pk: int, after: int) -> LogArchive | None:
    """The job's archive, if it holds rows above ``after``."""
    return LogArchive.objects.filter(job_id=job_pk, last_id__gt=after).first()


def _stored(job_pk: int, after: int, before: int | None, streams) -> QuerySet:
    rows = Log.objects.filter(job_id=job_pk, id__gt=after).order_by("id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    return rows.filter(stream__in=streams) if streams is not None else rows


def read(
    job_pk: int,
    after: int = 0,
    *,
    before: int | None = None,
    streams: Iterable[str] | None = None,
    page_rows: int = 500,
) -> Iterator[dict]:
    """Every row of the job's log with an id above ``after`` (below ``before``; of ``streams``),
    oldest first, as ``events.log_payload`` dicts: from its archive (see ``archive.py``), then
    from the database, ``page_rows`` at a time."""
    found = _archive_of(job_pk, after)
    if found is not None:
        for row in archive.rows(found, after, before=before, streams=streams):
            after = row["id"]
            yield row
        after = max(after, found.last_id)
    while True:
        page = list(_stored(job_pk, after, before, streams)[:page_rows])
        if not page:
            return
        yield from (events.log_payload(row) for row in page)
        after = page[-1].pk


def page(
    job_pk: int,
    after: int = 0,
    *,
    before: int | None = None,
    streams: Iterable[str] | None = None,
    max_rows: int = 500,
    max_chars: int = 256 * 1024,
) -> list[dict]:
    """The next rows of ``read``: at most ``max_rows``, and no more once ``max_chars``
    characters are reached (at least one row). Database rows are sized before they are read."""
    rows: list[dict] = []
    chars = 0
    found = _archive_of(job_pk, after)
    if found is not None:
        for row in archive.rows(found, after, before=before, streams=streams):
            if rows and (len(rows) >= max_rows or chars + len(row["content"]) > max_chars):
                return rows
            rows.append(row)
            chars += len(row["content"])
        after = max(rows[-1]["id"] if rows else after, found.last_id)
    stored = _stored(job_pk, after, before, streams)
    sizes = stored.annotate(chars=Length("content")).values_list("id", "chars")
    last = None
    for pk, size in sizes[: max(0, max_rows - len(rows))]:
        if (rows or last is not None) and chars + size > max_chars:
            break
        last, chars = pk, chars + size
    if last is not None:
        rows += [events.log_payload(row) for row in stored.filter(id__lte=last)]
    return rows


WINDOW_ROWS = 500  # at most this many rows in one ``window``


def window(
    job_pk: int,
    *,
    start: int | None = None,
    after: int | None = None,
    before: int | None = None,
    count: int = 200,
) -> dict:
    """One page of the job's log for a view that shows only part of it (at most
    ``WINDOW_ROWS`` rows, oldest first): ``{"total": ..., "start": ..., "logs": [...]}``.

    - ``after=<id>``: the ``count`` rows that follow that row; ``before=<id>``: the ``count``
      rows before it (a view paging from rows it has). Cheap: a range read of the (job, id)
      index. ``total`` and ``start`` are None.
    - ``start=<position>``: the rows from that position (0 is the first row): an offset in
      the index, proportional to ``start`` (a jump). ``total`` is None.
    - neither: the last page, the rows from the largest multiple of ``count`` below the
      number of rows; ``total`` is that number, counted up to the last row returned (pass
      its id as a websocket's ``after``: the rows that follow are at positions ``total``,
      ``total + 1``, ...).

    An archive's rows (see ``archive.py``) come first; positions and ``before`` in it are
    found by decompressing it from its start."""
    count = max(1, min(count, WINDOW_ROWS))
    found = LogArchive.objects.filter(job_id=job_pk).first()
    archived = found.rows if found is not None else 0
    stored = Log.objects.filter(job_id=job_pk)
    if found is not None:
        stored = stored.filter(id__gt=found.last_id)
    total = None
    if after is not None:
        rows = list(itertools.islice(read(job_pk, after, page_rows=count), count))
    elif before is not None:
        newest = stored.filter(id__lt=before).order_by("-id")[:count]
        rows = [events.log_payload(row) for row in newest][::-1]
        if len(rows) < count and found is not None and before > found.first_id:
            older = deque(archive.rows(found, before=before), maxlen=count - len(rows))
            rows = list(older) + rows
    else:
        if start is None:
            last = stored.order_by("-id").values_list("id", flat=True).first()
            if last is not None:
                stored = stored.filter(id__lte=last)
            total = archived + (stored.count() if last is not None else 0)
            start = max(0, total - 1) // count * count
            if start >= archived:  # the usual case: read backwards from the last row
                newest = stored.order_by("-id")[: total - start]
                rows = [events.log_payload(row) for row in newest][::-1]
                return {"total": total, "start": start, "logs": rows}
        rows = []
        if start < archived and found is not None:
            rows = list(itertools.islice(archive.rows(found), start, min(archived, start + count)))
        if len(rows) < count:
            first = max(0, start - archived)
            more = stored.order_by("id")[first : first + count - len(rows)]
            rows += [events.log_payload(row) for row in more]
    return {"total": total, "start": start, "logs": rows}
