"""Messages to browsers, from one place: channel-group names and payloads.

    events.job_group(42)        # "drs.job.42": the log of job 42
    events.user_group(7)        # "drs.user.7": status changes of user 7's jobs
    events.staff_group()        # "drs.staff": status changes of every job

Payloads (the ``type`` is the consumer method, per Channels' convention):

``drs.logs``  ``{"type": "drs.logs", "job": <pk>, "logs": [{"id", "time", "stream",
              "content", "offset"}, ...]}`` -- one message per stored batch of rows.
``drs.status`` ``{"type": "drs.status", "job": {"id", "uuid", "title", "status",
              "exit_code", "error", "server", "started_at", "finished_at", "modified"}}``
              -- one message per state change, to the owner's group and the job's group.

Without a channel layer (``CHANNEL_LAYERS`` unset) nothing is sent. A failing layer never
fails a job: the browser catches up from the database on reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

# Messages larger than this are split: channel layers cap message sizes.
MAX_MESSAGE_CHARS = 512 * 1024


def job_group(job_pk: int) -> str:
    return f"drs.job.{job_pk}"


def user_group(user_pk: int) -> str:
    return f"drs.user.{user_pk}"


def staff_group() -> str:
    """Every job's status changes (staff pages)."""
    return "drs.staff"


def log_payload(row) -> dict:
    return {
        "id": row.pk,
        "time": row.time.isoformat(),
        "stream": row.stream,
        "content": row.content,
        "offset": row.offset,
    }


def job_payload(job) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": job.pk,
        "uuid": str(job.uuid),
        "title": job.title,
        "status": str(job.status),
        "exit_code": job.exit_code,
        "error": job.error,
        "server": job.server_id,
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "modified": iso(job.modified),
    }


def _send(group: str, message: dict) -> None:
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(group, message)
    except Exception:  # a broadcast is best effort; the database is the truth
        logger.warning("Could not broadcast to %s", group, exc_info=True)


def logs_stored(job, rows: Iterable) -> None:
    batch, size = [], 0
    for row in rows:
        item = log_payload(row)
        if batch and size + len(row.content) > MAX_MESSAGE_CHARS:
            _send(job_group(job.pk), {"type": "drs.logs", "job": job.pk, "logs": batch})
            batch, size = [], 0
        batch.append(item)
        size += len(row.content)
    if batch:
        _send(job_group(job.pk), {"type": "drs.logs", "job": job.pk, "logs": batch})


def status_changed(job) -> None:
    message = {"type": "drs.status", "job": job_payload(job)}
    _send(user_group(job.owner_id), message)
    _send(staff_group(), message)
    _send(job_group(job.pk), message)
