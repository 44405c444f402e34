"""Writing the audit trail (the ``Event`` model): who did what, when, from where.

    audit.record(Event.Action.submit, job=job, actor=request.user, login="ada", request=request)
    audit.client_address(request)          # "192.0.2.7"

State changes are recorded by ``runner.move`` itself; everything a person does (submit,
resubmit, cancel, edit, delete, keys and logins, access) is recorded through ``record``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address

from .models import Event, Job, Server


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
