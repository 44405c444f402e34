"""The dashboard: jobs by server, user and state over a window, failures, queues."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from .. import dashboard as summaries
from .answers import wants_json


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Jobs created in the last ``?hours=`` (24) by server, user and state, with links to
        the filtered job list; the top failure reasons; queue depth, mean wait and run time per
        server; charts of the same jobs (``dashboard.charts``: outcomes per hour, wait and run
    time distributions, output volume per server), also under ``"charts"`` in the JSON, which
    the page fetches again when a job changes state. Staff with ``view_job`` see everyone's
    jobs, others their own."""
    try:
        hours = summaries.hours_from(request.GET.get("hours"))
    except summaries.BadWindow as exc:
        if wants_json(request):
            return JsonResponse({"hours": [str(exc)]}, status=400)
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    data = summaries.summary(request.user, hours)
    data["charts"] = summaries.charts(request.user, hours)
    if wants_json(request):
        return JsonResponse(data)
    return render(request, "django_remote_submission/dashboard.html", data)
