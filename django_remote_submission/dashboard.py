"""What the fleet did over a window of time, for the dashboard (``views.dashboard``).

    summary(request.user, hours=24)
    # {"since": ..., "hours": 24, "counts": [{"server": 1, "server_title": "hpc1",
    #   "owner": 3, "owner_name": "ada", "status": "success", "jobs": 12}, ...],
    #  "failures": [{"error": "...", "jobs": 4}, ...],
    #  "servers": [{"server": 1, "title": "hpc1", "waiting": 3, "mean_wait_seconds": 12.5,
    #               "mean_run_seconds": 40.0}, ...]}

Jobs created in the window that ``user`` may see (``policy.visible_jobs``: staff with
``view_job`` see everyone's, others their own); the queue depth is now's.

    charts(request.user, hours=24)
    # {"outcomes": {"step_hours": 1, "starts": ["2026-01-01T10:00:00+00:00", ...],
    #               "success": [3, 0, ...], "failure": [...], "cancelled": [...]},
    #  "durations": {"labels": ["< 1 s", ...], "wait": [2, ...], "run": [0, ...]},
    #  "volume": {"servers": ["hpc1", ...], "log_bytes": [1200, ...], "result_bytes": [...]}}

The same jobs, for the dashboard's charts: the ones that ended, by outcome, in buckets of
``step_hours`` (at most ``MAX_BUCKETS``, starting at ``starts``, in UTC) of when they ended;
how many waited (submitted → started) and ran (started → finished) for how long, in the
buckets of ``DURATION_EDGES``; and per server, the bytes of stdout and stderr read from the
host and of the result files kept. Each is one aggregate query.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from . import policy
from .models import Result, Status

MAX_HOURS = 24 * 366
TOP_FAILURES = 10
MAX_BUCKETS = 200
OUTCOMES = (Status.success, Status.failure, Status.cancelled)
# Upper bounds (seconds) of the duration buckets; the last bucket has none.
DURATION_EDGES = (1, 10, 60, 300, 1800, 7200, 43200)
DURATION_LABELS = (
    "< 1 s",
    "1–10 s",
    "10 s–1 min",
    "1–5 min",
    "5–30 min",
    "30 min–2 h",
    "2–12 h",
    "≥ 12 h",
)


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


def _window(user, hours: int):
    since = timezone.now() - timedelta(hours=hours)
    return since, policy.visible_jobs(user).filter(created__gte=since).order_by()


def outcomes(jobs, since: datetime, hours: int) -> dict:
    """Jobs of ``jobs`` in a final state by outcome, in buckets of when they ended
    (``finished_at``, else their last change), from ``since``'s hour (or day) to now."""
    step_hours = math.ceil(hours / MAX_BUCKETS)
    by_day = step_hours >= 24  # a day at a time: whole days, fewer rows to fold
    if by_day:
        step_hours = 24 * math.ceil(step_hours / 24)
    trunc = TruncDay if by_day else TruncHour
    start = since.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)
    if by_day:
        start = start.replace(hour=0)
    step = timedelta(hours=step_hours)
    count = (timezone.now() - start) // step + 1
    series = {str(outcome): [0] * count for outcome in OUTCOMES}
    rows = (
        jobs.filter(status__in=OUTCOMES)
        .annotate(ended=trunc(Coalesce("finished_at", "modified"), tzinfo=dt_timezone.utc))
        .values("ended", "status")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        index = min(max((row["ended"] - start) // step, 0), count - 1)
        series[row["status"]][index] += row["n"]
    return {
        "step_hours": step_hours,
        "starts": [(start + i * step).isoformat() for i in range(count)],
        **series,
    }


def _histogram(jobs, start: str, end: str) -> list[int]:
    lasted = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    counted = jobs.filter(**{f"{start}__isnull": False, f"{end}__isnull": False}).annotate(
        lasted=lasted
    )
    bounds = [timedelta(seconds=edge) for edge in DURATION_EDGES]
    buckets = {}
    for i, upper in enumerate([*bounds, None]):
        lower = bounds[i - 1] if i else None
        condition = Q()
        if lower is not None:
            condition &= Q(lasted__gte=lower)
        if upper is not None:
            condition &= Q(lasted__lt=upper)
        buckets[f"b{i}"] = Count("pk", filter=condition)
    totals = counted.aggregate(**buckets)
    return [totals[f"b{i}"] for i in range(len(DURATION_LABELS))]


def durations(jobs) -> dict:
    """How many jobs waited (submitted → started) and ran (started → finished) for how long."""
    return {
        "labels": list(DURATION_LABELS),
        "wait": _histogram(jobs, "submitted_at", "started_at"),
        "run": _histogram(jobs, "started_at", "finished_at"),
    }


def volume(jobs) -> dict:
    """Per server (by title): bytes of stdout and stderr read from the host, and of result
    files kept, of ``jobs``."""
    results = (
        Result.objects.filter(job=OuterRef("pk"))
        .order_by()
        .values("job")
        .annotate(total=Sum("size"))
        .values("total")
    )
    rows = (
        jobs.annotate(result_bytes=Coalesce(Subquery(results), Value(0)))
        .values("server_id", "server__title")
        .annotate(
            logs=Sum(F("stdout_offset") + F("stderr_offset")),
            results=Sum("result_bytes"),
        )
        .order_by("server__title", "server_id")
    )
    rows = list(rows)
    return {
        "servers": [row["server__title"] for row in rows],
        "server_ids": [row["server_id"] for row in rows],
        "log_bytes": [row["logs"] or 0 for row in rows],
        "result_bytes": [row["results"] or 0 for row in rows],
    }


def charts(user, hours: int = 24) -> dict:
    """The dashboard's chart data for the jobs ``summary`` counts (see the module's doc)."""
    since, jobs = _window(user, hours)
    return {
        "outcomes": outcomes(jobs, since, hours),
        "durations": durations(jobs),
        "volume": volume(jobs),
    }
