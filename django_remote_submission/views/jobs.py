"""Pages of jobs: the list, a job's live page with its timeline, the new-job form, submit and
cancel.

Every page needs a logged-in user and shows only the jobs the user may see (their own; all
with the permission ``view_job``): another job answers 404, like a missing one. The live
parts (status badges, log lines) come over the websockets of ``routing.py``; these views
render the first state. Submit, resubmit and cancel go through ``services``.
"""

from __future__ import annotations

import shlex
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from .. import audit, dashboard, inputs, policy, previews, resources, services
from ..forms import JobForm, SubmitForm
from ..models import Job, Status
from .answers import job_json, jobs_json, wants_json

QUEUED = "queued"  # tag of the "queued" notice, which the job page drops once the job runs


def visible_jobs(request: HttpRequest):
    jobs = policy.visible_jobs(request.user)
    return jobs.select_related("server", "interpreter", "owner")


def _filtered(jobs, params):
    """``jobs`` narrowed by the list's filters; ``BadWindow`` (a ValueError) for bad ones."""
    for name in ("server", "owner"):
        if params.get(name):
            if not params[name].isdigit() or len(params[name]) > 18:
                raise dashboard.BadWindow(f"{name} must be an id.")
            jobs = jobs.filter(**{f"{name}_id": int(params[name])})
    if params.get("status"):
        if params["status"] not in Status.values:
            raise dashboard.BadWindow(f"status must be one of {', '.join(Status.values)}.")
        jobs = jobs.filter(status=params["status"])
    if params.get("hours"):
        since = timezone.now() - timedelta(hours=dashboard.hours_from(params["hours"]))
        jobs = jobs.filter(created__gte=since)
    return jobs


def job_or_404(request: HttpRequest, pk: int) -> Job:
    return get_object_or_404(visible_jobs(request), pk=pk)


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """Your jobs, newest first; the dashboard's links narrow it (``?server=``, ``owner=``,
    ``status=``, ``hours=``: ids, a state, created in the last hours)."""
    try:
        jobs = _filtered(visible_jobs(request), request.GET)
    except dashboard.BadWindow as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    page = Paginator(jobs.order_by("-created"), 50).get_page(request.GET.get("page"))
    if wants_json(request):
        return jobs_json(request, page)
    return render(
        request, "django_remote_submission/job_list.html", {"page": page, "jobs": page.object_list}
    )


@login_required
def job_row(request: HttpRequest, pk: int) -> HttpResponse:
    """One ``<tr>`` of the list, for a job the live list has not shown yet."""
    return render(
        request, "django_remote_submission/_job_row.html", {"job": job_or_404(request, pk)}
    )


def _detail_context(request: HttpRequest, job: Job) -> dict:
    may_act = policy.may_act_on(request.user, job)
    return {
        "job": job,
        "results": job.results.all(),
        "previews": [previews.of(r) for r in job.results.all()],
        "can_submit": may_act and job.can_submit,
        "can_cancel": may_act and job.can_cancel,
        "may_act": may_act,
    }


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_or_404(request, pk)
    if wants_json(request):
        return job_json(request, job)
    context = _detail_context(request, job)
    context["submit_form"] = SubmitForm(user=request.user)
    context["timeline"] = audit.timeline(job)
    context["resources"] = job_resources(job)
    context["arguments"] = shlex.join(job.arguments or [])
    context["inputs"] = job.inputs.all()
    return render(request, "django_remote_submission/job_detail.html", context)


def job_resources(job: Job) -> list[tuple[str, str]]:
    """What the scheduler is (or was) asked for: the defaults and the submission's own."""
    options = job.options or {}
    asked = resources.effective(
        job.server.resources,
        job.interpreter.resources,
        options.get("resources"),
        timeout=options.get("timeout"),
    )
    return resources.describe(asked)


@login_required
def job_results(request: HttpRequest, pk: int) -> HttpResponse:
    """The result list of a job page, fetched again when the job ends."""
    job = job_or_404(request, pk)
    return render(request, "django_remote_submission/_results.html", _detail_context(request, job))


@csrf_exempt  # checked below, once the upload limit is in place (see inputs.UploadLimit)
def job_create(request: HttpRequest) -> HttpResponse:
    inputs.limit_uploads(request)
    return _job_create(request)


@login_required
@csrf_protect
def _job_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = JobForm(request.POST, request.FILES, user=request.user)
        if _valid(form, request):
            try:
                job, queued = form.save(request=request)
            except policy.Refused as exc:
                form.add_error(None, str(exc))
            else:
                _report(request, queued, _("Job “%(title)s” queued.") % {"title": job.title})
                return redirect("drs:job-detail", pk=job.pk)
    else:
        initial = {}
        server_pk = request.GET.get("server", "")
        if server_pk.isdigit():
            server = policy.usable_servers(request.user).filter(pk=server_pk).first()
            if server is not None:
                initial["server"] = server
        form = JobForm(initial=initial, user=request.user)
    return render(request, "django_remote_submission/job_form.html", {"form": form})


def _valid(form, request: HttpRequest) -> bool:
    """``form.is_valid()``, and no file of the request was over the upload limit."""
    valid = form.is_valid()
    refused = inputs.refused_uploads(request)
    for field, message in refused.items():
        form.add_error(field if field in form.fields else None, message)
    return valid and not refused


def _report(request: HttpRequest, queued: services.Queued, done: str) -> None:
    if queued.error:
        messages.error(request, queued.error)
    else:
        messages.success(request, done, extra_tags=QUEUED)


@login_required
@require_POST
def job_submit(request: HttpRequest, pk: int) -> HttpResponse:
    """Submit a job in its initial state, or resubmit a finished one."""
    job = job_or_404(request, pk)
    form = SubmitForm(request.POST, user=request.user)
    if form.is_valid():
        again = services.resubmit if job.is_final else services.submit
        try:
            queued = again(job, request.user, request=request, **form.login())
        except (policy.Refused, services.JobBusy) as exc:
            messages.error(request, str(exc))
        else:
            _report(request, queued, _("Job queued."))
    return redirect("drs:job-detail", pk=job.pk)


@login_required
@require_POST
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_or_404(request, pk)
    try:
        queued = services.cancel(job, request.user, request=request)
    except (policy.Refused, services.JobBusy) as exc:
        messages.error(request, str(exc))
    else:
        if queued.error:
            messages.error(request, queued.error)
        else:
            messages.success(request, _("Cancelling the job."))
    return redirect("drs:job-detail", pk=job.pk)
