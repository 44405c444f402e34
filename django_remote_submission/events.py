"""Messages to browsers, from one place: channel-group names and payloads.

    events.job_group(42)        # "drs.job.42": the log of job 42
    events.user_group(7)        # "drs.user.7": status changes of user 7's jobs
    events.staff_group()        # "drs.staff": status changes of every job

Payloads (the ``type`` is the consumer method, per Channels' convention):

``drs.logs``  ``{"type": "drs.logs", "job": <pk>, "logs": [{"id", "time", "stream",
              "content", "offset"}, ...]}`` -- one message per stored batch of rows.
``drs.status`` ``{"type": "drs.status", "job": {"id", "uuid", "title", "status",
              "exit_code", "error", "server", "started_at", "finished_at", "modified",
              "scheduler_id", "scheduler_state"}}`` -- one message per state change (and
              per change of what a batch scheduler says of the job), to the owner's group
              and the job's group.

Without a channel layer (``CHANNEL_LAYERS`` unset) nothing is sent. A failing layer never
fails a job: the browser catches up from the database on reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable

logger = logging.getLogger(__name__)

# Messages larger than this are split: channel layers cap message sizes.
MAX_MESSAGE_CHARS = 512 * 1024
# Broadcasts of one process in flight at once (each holds a connection of the layer).
MAX_CONCURRENT_SENDS = 16


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
        "scheduler_id": job.scheduler_id,
        "scheduler_state": job.scheduler_state,
        "wait_reason": job.wait_reason,
    }


class _EventLoop:
    """One event loop per process, in its own thread, for layers backed by a server.

    ``async_to_sync`` per message would start a loop (and, with channels_redis, a Redis
    connection) for every message: several ms on a job's path. Sends still wait for their
    completion, so they stay in order and a test can rely on them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate: asyncio.Semaphore | None = None

    def run(self, coro, timeout: float = 10.0):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, daemon=True, name="drs-events"
                ).start()
        return asyncio.run_coroutine_threadsafe(self._gated(coro), self._loop).result(timeout)

    async def _gated(self, coro):
        # A layer's connection pool has a limit (redis-py raises "Too many connections" past
        # it): hundreds of jobs broadcasting at once take turns instead.
        if self._gate is None:
            self._gate = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
        async with self._gate:
            return await coro

    def forget(self) -> None:
        """In a forked child the thread is gone: start another on the next message."""
        self._lock = threading.Lock()
        self._loop = None
        self._gate = None


_event_loop = _EventLoop()
os.register_at_fork(after_in_child=_event_loop.forget)


def _send(*items: tuple[str, dict]) -> None:
    """Send ``(group, message)`` items, in order, with one hand-off to the event loop."""
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return

        async def send_all() -> None:
            for group, message in items:
                await layer.group_send(group, message)

        if isinstance(layer, InMemoryChannelLayer):
            async_to_sync(send_all)()  # its queues belong to the consumers' loop
        else:
            _event_loop.run(send_all())
    except Exception:  # a broadcast is best effort; the database is the truth
        logger.warning("Could not broadcast %s", [g for g, _ in items], exc_info=True)


def logs_stored(job, rows: Iterable) -> None:
    group, messages, size = job_group(job.pk), [], 0
    batch: list = []
    for row in rows:
        if batch and size + len(row.content) > MAX_MESSAGE_CHARS:
            messages.append((group, {"type": "drs.logs", "job": job.pk, "logs": batch}))
            batch, size = [], 0
        batch.append(log_payload(row))
        size += len(row.content)
    if batch:
        messages.append((group, {"type": "drs.logs", "job": job.pk, "logs": batch}))
    _send(*messages)


def status_changed(job) -> None:
    message = {"type": "drs.status", "job": job_payload(job)}
    _send(
        (user_group(job.owner_id), message), (staff_group(), message), (job_group(job.pk), message)
    )
