"""Which files a job produced, and copying them into Django's storage.

    changed = new_or_modified(before, after)             # from DirectLauncher.listing()
    for path in select(changed, ["*.txt", "!tmp*"]): ...
    collect(transport, job, abs_directory, changed, patterns, exclude)

A file is a result when it is new or modified since the snapshot taken just before launch
(path, type, size, mtime, ctime and inode compared, at nanosecond precision: no sleep is
needed to tell a file written in the first milliseconds from the uploaded program). Files
are streamed into storage in chunks, hashed on the way, never read whole into memory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
from dataclasses import dataclass

from django.core.files import File

from .logs import write_notice
from .models import Job, Result
from .remote.base import Transport

CHUNK = 1 << 20
_TYPES = {"l": "symbolic link", "p": "named pipe", "s": "socket", "c": "device", "b": "device"}


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # find's %y: f, d, l, p, s, c, b
    size: int
    stamp: tuple[str, str, str]  # mtime, ctime, inode


def parse_listing(data: bytes) -> dict[str, Entry]:
    """Records of six NUL-terminated fields: path, type, size, mtime, ctime, inode."""
    fields = data.split(b"\0")
    entries = {}
    for i in range(0, len(fields) - 5, 6):
        path, kind, size, mtime, ctime, inode = (
            f.decode("utf-8", "surrogateescape") for f in fields[i : i + 6]
        )
        entries[path] = Entry(path, kind, int(size or 0), (mtime, ctime, inode))
    return entries


def new_or_modified(before: bytes, after: bytes) -> list[Entry]:
    old = parse_listing(before)
    return [e for path, e in sorted(parse_listing(after).items()) if old.get(path) != e]


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


class _HashingReader:
    """Reads through a file object, hashing and counting what passes."""

    def __init__(self, f, progress) -> None:
        self.f = f
        self.progress = progress
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        self.progress()
        return data


class _Upload(File):
    DEFAULT_CHUNK_SIZE = CHUNK


def collect(
    transport: Transport,
    job: Job,
    directory: str,
    entries: list[Entry],
    patterns: list[str] | None,
    exclude: set[str],
    progress=lambda: None,
) -> list[Result]:
    """Copy the regular files among ``entries`` that match ``patterns`` into storage.

    ``progress()`` is called as data arrives (the runner keeps its heartbeat with it).
    """
    results = []
    for entry in entries:
        if entry.path in exclude or any(entry.path.startswith(p + "/") for p in exclude):
            continue
        if entry.kind == "d" or not is_matching(entry.path, patterns):
            continue
        if entry.kind != "f":
            write_notice(
                job,
                f"Skipped result {entry.path}: a {_TYPES.get(entry.kind, 'special file')}"
                ", not a regular file.",
            )
            continue
        try:
            with transport.open(posixpath.join(directory, entry.path)) as f:
                reader = _HashingReader(f, progress)
                old = list(job.results.filter(remote_filename=entry.path))
                result = Result(job=job, remote_filename=entry.path)
                result.local_file.save(entry.path, _Upload(reader, name=entry.path), save=False)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            write_notice(job, f"Skipped result {entry.path}: {reason}.")
            continue
        result.size, result.sha256 = reader.size, reader.sha.hexdigest()
        result.save()
        for stale in old:  # a rerun replaces the result of the same name
            stale.local_file.delete(save=False)
            stale.delete()
        results.append(result)
    return results
