"""Pages that also answer JSON (``?format=json`` or ``Accept: application/json``), in the
shapes of the REST API (``api.serializers``).

    if wants_json(request):
        return job_json(request, job)
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from .. import audit
from ..api.serializers import EventSerializer, JobSerializer, ResultSerializer
from ..models import Job


def wants_json(request: HttpRequest) -> bool:
    """``?format=json``, or an ``Accept`` header that asks for JSON and not for HTML."""
    if request.GET.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _context(request: HttpRequest) -> dict:
    match = request.resolver_match
    namespace = f"{match.namespace}:drs_api" if match and match.namespace else "drs_api"
    return {"request": request, "api_namespace": namespace}


def job_json(request: HttpRequest, job: Job) -> JsonResponse:
    """A job's page: the job as ``GET api/jobs/<id>/`` gives it, its results as
    ``api/results/?job=<id>`` and its history as ``api/events/``, each state with how long
    the job stayed in it (``seconds``)."""

    context = _context(request)
    history = []
    for step in audit.timeline(job):
        event = EventSerializer(step.event, context=context).data
        event["seconds"] = step.lasted.total_seconds() if step.lasted is not None else None
        history.append(event)
    return JsonResponse(
        {
            **JobSerializer(job, context=context).data,
            "results": ResultSerializer(job.results.all(), many=True, context=context).data,
            "history": history,
        }
    )


def jobs_json(request: HttpRequest, page) -> JsonResponse:
    """A page of the job list: ``count``, ``page``, ``pages`` and the jobs as the API's."""

    context = _context(request)
    return JsonResponse(
        {
            "count": page.paginator.count,
            "page": page.number,
            "pages": page.paginator.num_pages,
            "results": JobSerializer(page.object_list, many=True, context=context).data,
        }
    )
