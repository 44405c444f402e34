"""Which files a job produced, and copying them into Django's storage within the limits.

    records, truncated, problems = launcher.listing(directory, run_dir)
    entries = parse_records(records)               # new or modified since the launch
    collect(transport, job, abs_directory, entries, ["*.txt", "!tmp*"], exclude)

A file is a result when it is new or modified since the snapshot taken just before launch
(path, type, size, mtime, ctime and inode compared, at nanosecond precision: no sleep is
needed to tell a file written in the first milliseconds from the uploaded program). Files
are streamed into storage in chunks, hashed on the way, never read whole into memory.

What the host lists is the job's doing, so it is checked before a byte is copied (see
``limits``): symbolic links and special files, names that are not valid UTF-8 or that no
storage can hold, and files over a size limit are skipped with a ``system`` log row each,
and the other results are still stored. A copy that fails midway leaves nothing behind: what
storage holds for a job is exactly what its ``Result`` rows list.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import posixpath
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, cast

from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.db import transaction

from . import limits, metrics
from .conf import drs_settings
from .logs import write_notice
from .models import Job, Result
from .remote.base import Transport

CHUNK = 1 << 20
HASH_ASIDE = 1 << 16  # pieces at least this big are hashed in a thread of their own
NOTICES_MAX = 50  # "skipped" rows written per stage-out; the rest are counted in one row
_TYPES = {"l": "symbolic link", "p": "named pipe", "s": "socket", "c": "device", "b": "device"}


@dataclass(frozen=True)
class Entry:
    path: str  # the name's bytes, decoded with surrogateescape (so any name round-trips)
    kind: str  # find's %y: f, d, l, p, s, c, b
    size: int  # apparent size: a sparse file counts in full

    @property
    def shown(self) -> str:
        """The name for people: invalid UTF-8 bytes as ``\\xNN``, control characters escaped."""
        text = self.path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_records(data: bytes) -> Iterator[Entry]:
    """Entries of NUL-terminated ``type size mtime ctime inode path`` records; an incomplete
    or malformed record (a listing cut at its limit) is left out."""
    start = 0
    while (end := data.find(b"\0", start)) >= 0:
        fields = data[start:end].split(b" ", 5)
        start = end + 1
        if len(fields) == 6 and fields[1].isdigit() and len(fields[0]) == 1 and fields[5]:
            path = fields[5].decode("utf-8", "surrogateescape")
            yield Entry(path, fields[0].decode("ascii", "replace"), int(fields[1]))


def is_matching(filename: str, patterns: list[str] | None = None) -> bool:
    """fnmatch ``patterns`` applied in order; ``!pattern`` excludes; None means everything."""
    if patterns is None:
        patterns = ["*"]
    matching = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatch(filename, pattern[1:]):
                matching = False
        elif fnmatch.fnmatch(filename, pattern):
            matching = True
    return matching


class _TooLarge(Exception):
    pass


class _Sha256:
    """sha256 of the pieces given, computed beside the copy: hashlib lets go of the GIL for
    big pieces, so one piece is hashed on another core while the next one is received (the
    hash in the same thread added half a second to a 200 MiB result). One piece at a time
    is in flight; small pieces are hashed at once."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def update(self, data: bytes) -> None:
        self._wait()
        if len(data) < HASH_ASIDE:
            self.sha.update(data)
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="drs-sha256")
        self._pending = self._thread.submit(self.sha.update, data)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def hexdigest(self) -> str:
        self._wait()
        return self.sha.hexdigest()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)


class _HashingReader:
    """Reads through a file object, hashing and counting what passes, up to ``cap`` bytes."""

    def __init__(self, f, progress: Callable[[], object], cap: int) -> None:
        self.f = f
        self.progress = progress
        self.cap = cap
        self.sha = _Sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.size += len(data)
        if self.size > self.cap:
            raise _TooLarge
        self.sha.update(data)
        self.progress()
        return data


class _Upload(File):
    DEFAULT_CHUNK_SIZE = CHUNK


class _Notices:
    """``system`` rows for skipped results: the first NOTICES_MAX, then one that counts."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if self.count <= NOTICES_MAX:
            write_notice(self.job, text)

    def close(self) -> None:
        if self.count > NOTICES_MAX:
            more = self.count - NOTICES_MAX
            write_notice(self.job, f"{more} more results were skipped (not listed one by one).")


def _candidates(
    entries: Iterable[Entry], patterns, exclude: set[str], notices: _Notices, counted: list
) -> Iterator[Entry]:
    """Regular files among ``entries`` that match ``patterns``; others that match are noted."""
    for entry in entries:
        if entry.path in exclude or any(entry.path.startswith(p + "/") for p in exclude):
            continue
        if entry.kind == "d" or not is_matching(entry.path, patterns):
            continue
        if entry.kind != "f":
            kind = _TYPES.get(entry.kind, "special file")
            notices.add(f"Skipped result {entry.shown}: a {kind}, not a regular file.")
            continue
        counted[0] += 1
        yield entry


def collect(
    transport: Transport,
    job: Job,
    directory: str,
    entries: Iterable[Entry],
    patterns: list[str] | None,
    exclude: set[str],
    progress: Callable[[], object] = lambda: None,
) -> list[Result]:
    """Copy the regular files among ``entries`` that match ``patterns`` into storage.

    At most ``RESULTS_MAX_FILES`` files, the first by name. ``progress()`` is called as data
    arrives (the runner keeps its heartbeat with it).
    """
    notices = _Notices(job)
    counted = [0]
    most = int(drs_settings.RESULTS_MAX_FILES)
    chosen = heapq.nsmallest(
        most, _candidates(entries, patterns, exclude, notices, counted), key=lambda e: e.path
    )
    results, stored = [], 0
    for entry in chosen:
        result = _store(transport, job, directory, entry, stored, notices, progress)
        if result is not None:
            stored += result.size
            results.append(result)
    if counted[0] > most:
        write_notice(
            job,
            f"Stored at most {most} result files (DRS['RESULTS_MAX_FILES']): {counted[0] - most} "
            f"more new files stay on the host in {directory}.",
        )
    notices.close()
    return results


def _store(transport, job, directory, entry: Entry, stored: int, notices, progress):
    """One result into storage and its row; None (and a notice) when it is skipped."""
    result = Result(job=job, remote_filename=entry.path)
    field = result.local_file.field
    reason = limits.name_refusal(entry.path, (field.max_length or 100) - len(job_prefix(job))) or (
        limits.result_refusal(entry.size, stored, field.storage)
    )
    if reason:
        notices.add(f"Skipped result {entry.shown}: {reason}.")
        return None
    try:
        _copy(transport, result, posixpath.join(directory, entry.path), stored, progress)
    except _TooLarge:
        cap = limits.human_size(limits.copy_cap(stored))
        notices.add(f"Skipped result {entry.shown}: it grew past {cap} while being copied.")
        return None
    except SuspiciousFileOperation as exc:
        notices.add(f"Skipped result {entry.shown}: the storage refused its name ({exc}).")
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        notices.add(f"Skipped result {entry.shown}: {reason}.")
        return None
    _replace_older(result)
    return result


def job_prefix(job: Job) -> str:
    return f"{drs_settings.RESULTS_PREFIX}/{job.uuid}/"


def _copy(transport, result: Result, path: str, stored: int, progress) -> None:
    """Stream ``path`` into storage and save the row; on any failure nothing stays stored."""
    field = result.local_file.field
    storage = field.storage
    name = storage.get_available_name(
        field.generate_filename(result, result.remote_filename), max_length=field.max_length
    )
    reader = None
    try:
        with transport.open(path) as f:
            reader = _HashingReader(f, progress, limits.copy_cap(stored))
            result.local_file.name = storage.save(
                name, _Upload(cast(IO[bytes], reader), name=name), max_length=field.max_length
            )
        result.size, result.sha256 = reader.size, reader.sha.hexdigest()
        result.save()
    except BaseException:
        if storage.exists(name):
            storage.delete(name)
        raise
    finally:
        if reader is not None:
            reader.sha.close()
            metrics.transferred(result.job, "result").inc(reader.size)


def _replace_older(result: Result) -> None:
    """A second stage-out of the same run (after a lost link) replaces earlier copies."""
    older = list(
        Result.objects.filter(job_id=result.job_id, remote_filename=result.remote_filename)
        .exclude(pk=result.pk)
        .order_by("pk")
    )
    for old in older:
        old.delete()
        delete_files_on_commit([old.local_file.name], old.local_file.storage)


def delete_files_on_commit(names: Iterable[str | None], storage) -> None:
    """Delete stored files once the current transaction commits (at once in autocommit)."""

    names = list(names)

    def delete() -> None:
        for name in names:
            if name:
                storage.delete(name)

    transaction.on_commit(delete)
