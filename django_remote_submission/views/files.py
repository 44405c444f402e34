"""Downloads: a job's log as text and its result files, streamed.

Under ASGI each chunk is read in a worker thread through an async iterator, so that a large
log or result file is never read whole into memory.
"""

from __future__ import annotations

import itertools
import mimetypes
import posixpath
from collections.abc import Iterator

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils.http import content_disposition_header

from .. import logs, previews
from ..models import Log
from .jobs import job_or_404

LOG_QUERY_ROWS = 200
FILE_CHUNK = 256 * 1024
STREAMS = tuple(Log.Stream.values)


def _streamed(
    request: HttpRequest,
    chunks: Iterator[bytes],
    content_type: str,
    filename: str,
    length: int | None = None,
) -> StreamingHttpResponse:
    """A download from a sync iterator; under ASGI each chunk is read in a worker thread."""
    if isinstance(request, ASGIRequest):

        async def read():
            while (chunk := await sync_to_async(next)(chunks, None)) is not None:
                yield chunk

        content = read()
    else:
        content = chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    if length is not None:
        response["Content-Length"] = str(length)
    return response


def _log_chunks(job_pk: int, streams: tuple[str, ...], mark_system: bool) -> Iterator[bytes]:
    """The log in chunks of LOG_QUERY_ROWS rows, from the database or the job's archive."""
    rows = logs.read(job_pk, streams=streams, page_rows=LOG_QUERY_ROWS)
    while chunk := list(itertools.islice(rows, LOG_QUERY_ROWS)):
        yield "".join(
            f"[{row['stream']}] {row['content']}"
            if mark_system and row["stream"] == Log.Stream.system
            else row["content"]
            for row in chunk
        ).encode()


@login_required
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    """The full log as text: all streams in arrival order, or one (``?stream=stderr``)."""
    job = job_or_404(request, pk)
    stream = request.GET.get("stream")
    streams = (stream,) if stream in STREAMS else STREAMS
    suffix = f"-{stream}" if stream in STREAMS else ""
    return _streamed(
        request,
        _log_chunks(job.pk, streams, mark_system=len(streams) > 1),
        "text/plain; charset=utf-8",
        f"job-{job.pk}{suffix}.log",
    )


def _file_chunks(f) -> Iterator[bytes]:
    try:
        while chunk := f.read(FILE_CHUNK):
            yield chunk
    finally:
        f.close()


@login_required
def result_inline(request: HttpRequest, pk: int, result_pk: int) -> HttpResponse:
    """An image result, to be drawn on the job page: its own type only, and no script runs
    (``previews.IMAGE_CSP``), an SVG opened on its own included."""
    job = job_or_404(request, pk)
    result = get_object_or_404(job.results, pk=result_pk)
    content_type = previews.image_type(result)
    if content_type is None:
        raise Http404("This result is not an image shown inline.")
    with result.local_file.open("rb") as f:
        response = HttpResponse(f.read(), content_type=content_type)
    response["Content-Security-Policy"] = previews.IMAGE_CSP
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = content_disposition_header(False, "preview")
    response["Cache-Control"] = "private, no-cache"
    return response


@login_required
def result_download(request: HttpRequest, pk: int, result_pk: int) -> HttpResponse:
    job = job_or_404(request, pk)
    result = get_object_or_404(job.results, pk=result_pk)
    name = posixpath.basename(result.remote_filename) or f"result-{result.pk}"
    f = result.local_file.open("rb")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return _streamed(request, _file_chunks(f), content_type, name, length=result.local_file.size)
