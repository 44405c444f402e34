"""Pages: the job list, a job's live page, the submit form, log and result downloads.

    # urls.py of a project
    path("", include("django_remote_submission.urls"))    # namespace "drs"
    LOGIN_URL = "drs:login"                                # or the project's own login page

Every page needs a logged-in user and shows only the user's own jobs (staff: all jobs); a job
of someone else answers 404, like a missing one. The live parts (status badges, log lines)
come over the websockets of ``routing.py``; these views render the first state.

Downloads are streamed: under ASGI through an async iterator, so that a large log or result
file is never read whole into memory.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Iterator

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from .forms import JobForm, SubmitForm, can_cancel, can_submit, queue_cancel
from .models import Job, Log, Server

LOG_QUERY_ROWS = 200
QUEUED = "queued"  # tag of the "queued" notice, which the job page drops once the job runs
FILE_CHUNK = 256 * 1024
STREAMS = ("stdout", "stderr", "system")


def visible_jobs(request: HttpRequest):
    return Job.objects.visible_to(request.user).select_related("server", "interpreter", "owner")


def _job(request: HttpRequest, pk: int) -> Job:
    return get_object_or_404(visible_jobs(request), pk=pk)


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(visible_jobs(request).order_by("-created"), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request, "django_remote_submission/job_list.html", {"page": page, "jobs": page.object_list}
    )


@login_required
def job_row(request: HttpRequest, pk: int) -> HttpResponse:
    """One ``<tr>`` of the list, for a job the live list has not shown yet."""
    return render(request, "django_remote_submission/_job_row.html", {"job": _job(request, pk)})


def _detail_context(job: Job) -> dict:
    return {
        "job": job,
        "results": job.results.all(),
        "can_submit": can_submit(job),
        "can_cancel": can_cancel(job),
    }


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    context = _detail_context(job)
    context["submit_form"] = SubmitForm(user=request.user)
    return render(request, "django_remote_submission/job_detail.html", context)


@login_required
def job_results(request: HttpRequest, pk: int) -> HttpResponse:
    """The result list of a job page, fetched again when the job ends."""
    job = _job(request, pk)
    return render(request, "django_remote_submission/_results.html", _detail_context(job))


@login_required
def job_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = JobForm(request.POST)
        if form.is_valid():
            job = form.save(owner=request.user)
            if form.queued.error:
                messages.error(request, form.queued.error)
            else:
                messages.success(
                    request,
                    _("Job “%(title)s” queued.") % {"title": job.title},
                    extra_tags=QUEUED,
                )
            return redirect("drs:job-detail", pk=job.pk)
    else:
        initial = {}
        server_pk = request.GET.get("server", "")
        server = Server.objects.filter(pk=server_pk).first() if server_pk.isdigit() else None
        if server is not None:
            initial["server"] = server
        form = JobForm(initial=initial)
    return render(request, "django_remote_submission/job_form.html", {"form": form})


@login_required
@require_POST
def job_submit(request: HttpRequest, pk: int) -> HttpResponse:
    """Submit a job in its initial state, or resubmit a finished one."""
    job = _job(request, pk)
    form = SubmitForm(request.POST, user=request.user)
    if not can_submit(job):
        messages.error(
            request,
            _("The job is %(status)s: cancel it before resubmitting.")
            % {"status": job.get_status_display()},
        )
    elif form.is_valid():
        error = form.submit(job).error
        if error:
            messages.error(request, error)
        else:
            messages.success(request, _("Job queued."), extra_tags=QUEUED)
    return redirect("drs:job-detail", pk=job.pk)


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job(request, pk)
    if not can_cancel(job):
        messages.error(
            request, _("The job is %(status)s already.") % {"status": job.get_status_display()}
        )
    elif error := queue_cancel(job).error:
        messages.error(request, error)
    else:
        messages.success(request, _("Cancelling the job."))
    return redirect("drs:job-detail", pk=job.pk)


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
    last = 0
    while True:
        rows = list(
            Log.objects.filter(job_id=job_pk, id__gt=last, stream__in=streams)
            .order_by("id")
            .values_list("id", "stream", "content")[:LOG_QUERY_ROWS]
        )
        if not rows:
            return
        last = rows[-1][0]
        yield "".join(
            f"[{stream}] {content}" if mark_system and stream == "system" else content
            for _pk, stream, content in rows
        ).encode()


@login_required
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    """The full log as text: all streams in arrival order, or one (``?stream=stderr``)."""
    job = _job(request, pk)
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
def result_download(request: HttpRequest, pk: int, result_pk: int) -> HttpResponse:
    job = _job(request, pk)
    result = get_object_or_404(job.results, pk=result_pk)
    name = posixpath.basename(result.remote_filename) or f"result-{result.pk}"
    f = result.local_file.open("rb")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return _streamed(request, _file_chunks(f), content_type, name, length=result.local_file.size)
