"""Writing the audit trail (the ``Event`` model): who did what, when, from where.

    audit.record(Event.Action.submit, job=job, actor=request.user, login="ada", request=request)
    audit.client_address(request)          # "192.0.2.7"
    audit.timeline(job)                    # [Step(event, lasted=timedelta(seconds=12)), ...]

State changes are recorded by ``runner.move`` itself; everything a person does (submit,
resubmit, cancel, edit, delete, keys and logins, access) is recorded through ``record``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address

from .models import Event, Job, Server


@dataclass
class Step:
    """One event of a job's history; ``lasted``: until the job's next state change (None for
    the job's current state, or an event that is not a state change)."""

    event: Event
    lasted: timedelta | None = None

    @property
    def lasted_text(self) -> str:
        """``lasted`` for people: "0.4 s", "12 s", "3 min 4 s", "2 h 5 min"."""
        if self.lasted is None:
            return ""
        seconds = self.lasted.total_seconds()
        if seconds < 10:
            return f"{seconds:.1f} s"
        whole = int(seconds)
        if whole < 60:
            return f"{whole} s"
        if whole < 3600:
            return f"{whole // 60} min {whole % 60} s"
        return f"{whole // 3600} h {whole % 3600 // 60} min"


def timeline(job: Job) -> list[Step]:
    """The job's history, oldest first: how long it stayed in each state (waiting, queued,
    running, ...) and what people did meanwhile."""
    steps = [Step(e) for e in job.events.select_related("actor").order_by("time", "id")]
    moves = [s for s in steps if s.event.action == Event.Action.state]
    for this, following in pairwise(moves):
        this.lasted = following.event.time - this.event.time
    return steps


def client_address(request) -> str | None:
    """The address the request came from (``REMOTE_ADDR``: set it behind a proxy)."""
    if request is None:
        return None
    meta = getattr(request, "META", None)
    address = meta.get("REMOTE_ADDR") if meta is not None else None
    if address is None and isinstance(getattr(request, "client", None), (list, tuple)):
        address = request.client[0]  # an ASGI scope's client
    try:
        validate_ipv46_address(address or "")
    except ValidationError:
        return None
    return address


def record(
    action: str,
    *,
    job: Job | None = None,
    server: Server | None = None,
    actor=None,
    login: str = "",
    reason: str = "",
    request=None,
) -> Event:
    """Add one entry to the audit trail."""
    if server is None and job is not None:
        server = job.server
    return Event.objects.create(
        action=action,
        job=job,
        job_title=job.title[:250] if job is not None else "",
        server=server,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        from_state=job.status if job is not None else "",
        login=login[:150],
        reason=reason,
        client=client_address(request),
    )
