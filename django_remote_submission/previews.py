"""What the job page shows of a result file inline, bounded whatever the file's size.

    preview = previews.of(result)
    preview.kind      # "image", "text", "table", "json" or "other"
    preview.text      # text and json: the first PREVIEW_BYTES, pretty-printed for JSON
    preview.rows      # table (CSV, TSV): the first PREVIEW_ROWS rows
    preview.truncated # more of the file than is shown

Images (PNG, JPEG, GIF, SVG) are shown with ``<img>`` from ``result_inline``, which serves
them with their own content type only, ``nosniff`` and a Content-Security-Policy that lets no
script run (an SVG opened on its own included). Only the first ``PREVIEW_BYTES`` of a file
are ever read; a bigger JSON file is shown as text.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import posixpath
from dataclasses import dataclass, field

from .conf import drs_settings
from .models import Result

IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
TEXT = {".txt", ".log", ".out", ".err", ".md", ".rst", ".py", ".sh", ".dat", ".ini", ".cfg"}
TABLES = {".csv": ",", ".tsv": "\t"}
MAX_COLUMNS = 50
MAX_CELL = 200
# What an image served inline may do: be drawn, nothing else (no script, no fetch, no form).
IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


@dataclass
class Preview:
    result: Result
    kind: str
    content_type: str = ""
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)
    truncated: bool = False


def extension(result: Result) -> str:
    return posixpath.splitext(result.remote_filename.lower())[1]


def image_type(result: Result) -> str | None:
    """The content type an image result is served inline with, None for anything else."""
    if result.size > drs_settings.PREVIEW_IMAGE_MAX_BYTES:
        return None
    return IMAGES.get(extension(result))


def _head(result: Result) -> tuple[bytes, bool]:
    limit = int(drs_settings.PREVIEW_BYTES)
    with result.local_file.open("rb") as f:
        data = f.read(limit + 1)
    return data[:limit], len(data) > limit


def _decode(data: bytes, truncated: bool) -> str:
    text = data.decode(errors="replace")
    return text.rstrip("\ufffd") if truncated else text  # not half a character at the cut


def _table(result: Result, delimiter: str) -> Preview:
    data, truncated = _head(result)
    text = _decode(data, truncated)
    lines = text.splitlines()
    if truncated and lines:
        lines = lines[:-1]  # the last line may be cut
    rows: list[list[str]] = []
    for row in csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter):
        if len(rows) == drs_settings.PREVIEW_ROWS:
            truncated = True
            break
        rows.append([cell[:MAX_CELL] for cell in row[:MAX_COLUMNS]])
    return Preview(result, "table", rows=rows, truncated=truncated)


def _json(result: Result) -> Preview:
    data, truncated = _head(result)
    if not truncated:
        try:
            pretty = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            pass
        else:
            return Preview(result, "json", text=pretty)
    return Preview(result, "text", text=_decode(data, truncated), truncated=truncated)


def of(result: Result) -> Preview:
    """How ``result`` is previewed; "other" (type and size only) when it is not."""
    ext = extension(result)
    guessed = mimetypes.guess_type(result.remote_filename)[0] or "application/octet-stream"
    try:
        if image := image_type(result):
            return Preview(result, "image", content_type=image)
        if ext in TABLES:
            return _table(result, TABLES[ext])
        if ext == ".json":
            return _json(result)
        if ext in TEXT:
            data, truncated = _head(result)
            return Preview(result, "text", text=_decode(data, truncated), truncated=truncated)
    except OSError:  # the file is gone from the storage: say what it was
        pass
    return Preview(result, "other", content_type=guessed)
