"""What the fleet did over a window of time, for the dashboard (``views.dashboard``).

    summary(request.user, hours=24)
    # {"since": ..., "hours": 24, "counts": [{"server": 1, "server_title": "hpc1",
    #   "owner": 3, "owner_name": "ada", "status": "success", "jobs": 12}, ...],
    #  "failures": [{"error": "...", "jobs": 4}, ...],
    #  "servers": [{"server": 1, "title": "hpc1", "waiting": 3, "mean_wait_seconds": 12.5,
    #               "mean_run_seconds": 40.0}, ...]}

Jobs created in the window that ``user`` may see (``policy.visible_jobs``: staff with
``view_job`` see everyone's, others their own); the queue depth is now's.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from . import policy
from .models import Status

MAX_HOURS = 24 * 366
TOP_FAILURES = 10


class BadWindow(ValueError):
    """The window asked for is not a whole number of hours between 1 and MAX_HOURS."""


def hours_from(value: str | None, default: int = 24) -> int:
    if value in (None, ""):
        return default
    try:
        hours = int(value)
    except ValueError:
        raise BadWindow(f"hours must be a whole number from 1 to {MAX_HOURS}.") from None
    if not 1 <= hours <= MAX_HOURS:
        raise BadWindow(f"hours must be a whole number from 1 to {MAX_HOURS}.")
    return hours


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summary(user, hours: int = 24) -> dict:
    since = timezone.now() - timedelta(hours=hours)
    visible = policy.visible_jobs(user)
    jobs = visible.filter(created__gte=since).order_by()
    counts = [
        {
            "server": row["server_id"],
            "server_title": row["server__title"],
            "owner": row["owner_id"],
            "owner_name": row["owner__username"],
            "status": row["status"],
            "jobs": row["n"],
        }
        for row in jobs.values(
            "server_id", "server__title", "owner_id", "owner__username", "status"
        )
        .annotate(n=Count("pk"))
        .order_by("server__title", "owner__username", "status")
    ]
    failures = [
        {"error": row["error"], "jobs": row["n"]}
        for row in jobs.filter(status=Status.failure)
        .values("error")
        .annotate(n=Count("pk"))
        .order_by("-n", "error")[:TOP_FAILURES]
    ]
    servers: dict[int, dict] = {}
    for row in (
        visible.filter(status=Status.waiting)
        .order_by()
        .values("server_id", "server__title")
        .annotate(n=Count("pk"))
    ):
        servers[row["server_id"]] = {"title": row["server__title"], "waiting": row["n"]}
    waits: dict[int, list[float]] = {}
    runs: dict[int, list[float]] = {}
    times = jobs.values_list(
        "server_id", "server__title", "submitted_at", "started_at", "finished_at"
    )
    for server, title, submitted, started, finished in times:
        servers.setdefault(server, {"title": title, "waiting": 0})
        if submitted and started:
            waits.setdefault(server, []).append((started - submitted).total_seconds())
        if started and finished:
            runs.setdefault(server, []).append((finished - started).total_seconds())
    return {
        "since": since.isoformat(),
        "hours": hours,
        "counts": counts,
        "failures": failures,
        "servers": [
            {
                "server": pk,
                "title": info["title"],
                "waiting": info["waiting"],
                "mean_wait_seconds": _mean(waits.get(pk, [])),
                "mean_run_seconds": _mean(runs.get(pk, [])),
            }
            for pk, info in sorted(servers.items(), key=lambda item: item[1]["title"])
        ],
    }
