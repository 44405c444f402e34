"""What one job may take from the site: the checks made before a byte is copied.

    limits.result_refusal(size=5 << 30, stored=0, storage=default_storage)
    # "5.0 GiB is over the limit of 1.0 GiB per file (DRS['RESULT_MAX_BYTES'])"
    limits.name_refusal("caf\\udce9.txt")      # "its name is not valid UTF-8"

Every limit is a ``DRS`` setting (see ``conf.py``); a refusal is a sentence that names the
limit, written into the job's log by the caller. Sizes come from the host's listing (the
apparent size, so a sparse file counts in full) and are checked again while copying, since
a file may still grow.
"""

from __future__ import annotations

import os
import shutil

from .conf import drs_settings

NAME_PART_MAX = 255  # bytes of one path component most file systems accept


def human_size(size: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def name_refusal(path: str, max_length: int) -> str | None:
    """Why a result named ``path`` (surrogate-escaped bytes) cannot be stored, or None."""
    try:
        raw = path.encode()
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "its name contains control characters (a newline, a tab, ...)"
    if any(len(part.encode()) > NAME_PART_MAX for part in path.split("/")):
        return f"a part of its name is longer than {NAME_PART_MAX} bytes"
    if len(raw) > max_length:
        return f"its name is longer than {max_length} bytes"
    return None


def free_space(storage) -> int | None:
    """Free bytes where ``storage`` writes, when it can tell (a FileSystemStorage)."""
    path = getattr(storage, "location", None)
    if not path:
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def result_refusal(size: int, stored: int, storage) -> str | None:
    """Why a result of ``size`` bytes may not be stored after ``stored`` bytes of the same
    run, or None."""
    per_file, per_job = drs_settings.RESULT_MAX_BYTES, drs_settings.RESULTS_MAX_BYTES
    if size > per_file:
        return (
            f"{human_size(size)} is over the limit of {human_size(per_file)} per file "
            "(DRS['RESULT_MAX_BYTES'])"
        )
    if stored + size > per_job:
        return (
            f"with it the job's results would exceed {human_size(per_job)} "
            "(DRS['RESULTS_MAX_BYTES'])"
        )
    floor = drs_settings.STORAGE_MIN_FREE_BYTES
    free = free_space(storage)
    if free is not None and free - size < floor:
        return (
            f"storing {human_size(size)} would leave less than {human_size(floor)} free on "
            "the storage (DRS['STORAGE_MIN_FREE_BYTES'])"
        )
    return None


def copy_cap(stored: int) -> int:
    """Bytes a copy may take at most after ``stored`` bytes of the same run."""
    return min(drs_settings.RESULT_MAX_BYTES, drs_settings.RESULTS_MAX_BYTES - stored)
