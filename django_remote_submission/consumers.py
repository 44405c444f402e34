"""Websocket consumers: a user's job statuses, and one job's log, live.

    # asgi.py
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django_remote_submission.routing import websocket_urlpatterns

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    })

``ws/job-user/`` (``JobUserConsumer``) sends, as JSON text frames:

``{"type": "jobs", "jobs": [<job>, ...]}``  once, on connect: the latest jobs the user may see
                                           (newest first, at most ``LATEST_JOBS``).
``{"type": "status", "job": <job>}``        each time one of those jobs changes state.

``ws/job-log/<job_pk>/?after=<log id>`` (``JobLogConsumer``) sends:

``{"type": "status", "job": <job>}``        on connect, then on each state change of the job.
``{"type": "logs", "job": <pk>, "history": <bool>, "logs": [<log>, ...]}``
                                           the log rows with an id above ``after`` (0 when
                                           not given), oldest first: first the stored ones
                                           (``history`` true, in batches of at most
                                           ``HISTORY_ROWS`` rows / ``HISTORY_CHARS``
                                           characters), then new ones as they are stored.

``<job>`` is ``events.job_payload`` plus ``"url"`` (the job's page); ``<log>`` is
``events.log_payload``: ``{"id", "time", "stream", "content", "offset"}`` where ``stream`` is
"stdout", "stderr" or "system" (a notice of the app itself). A client that reconnects passes
the largest log id it has and receives each row exactly once, without a gap.

Anonymous users are closed with code 4401; a job the user may not see (someone else's, unless
staff, or missing) with 4403. History goes to the connecting socket only. Live rows that the
socket already has are dropped. A message the channel layer dropped (a socket that fell
behind its channel's capacity) is recovered from the database: before a live batch whose
first id does not follow the last one sent, and when the job reaches a final state, the
consumer sends the stored rows it has not sent yet.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models.functions import Length
from django.urls import NoReverseMatch, reverse

from . import events, policy
from .models import FINAL_STATES, Log

logger = logging.getLogger(__name__)

LATEST_JOBS = 50
HISTORY_ROWS = 500
HISTORY_CHARS = 256 * 1024

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def job_url(pk: int) -> str | None:
    try:
        return reverse("drs:job-detail", args=[pk])
    except NoReverseMatch:  # a project may serve the websockets without the app's pages
        return None


def _job_message(payload: dict) -> dict:
    return {"type": "status", "job": {**payload, "url": job_url(payload["id"])}}


@database_sync_to_async
def _groups_of(user) -> list[str]:
    # Staff watch every job; ``events.staff_group`` is where every status change goes.
    if policy.sees_every_job(user):
        return [events.staff_group()]
    return [events.user_group(user.pk)]


@database_sync_to_async
def _latest_jobs(user) -> list[dict]:
    jobs = policy.visible_jobs(user).order_by("-created")[:LATEST_JOBS]
    return [_job_message(events.job_payload(job))["job"] for job in jobs]


@database_sync_to_async
def _visible_job(user, pk: int) -> dict | None:
    job = policy.visible_jobs(user).filter(pk=pk).first()
    return events.job_payload(job) if job else None


@database_sync_to_async
def _rows_after(job_pk: int, after: int, before: int | None = None) -> list[dict]:
    """The next rows above ``after`` (and below ``before``): at most HISTORY_ROWS, about
    HISTORY_CHARS characters."""
    rows = Log.objects.filter(job_id=job_pk, id__gt=after).order_by("id")
    if before is not None:
        rows = rows.filter(id__lt=before)
    sizes = rows.annotate(chars=Length("content")).values_list("id", "chars")[:HISTORY_ROWS]
    last, total = None, 0
    for pk, chars in sizes:
        if last is not None and total + chars > HISTORY_CHARS:
            break
        last, total = pk, total + chars
    if last is None:
        return []
    return [events.log_payload(row) for row in rows.filter(id__lte=last)]


def _after(scope) -> int:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        return max(0, int(query.get("after", ["0"])[0]))
    except ValueError:
        return 0


class _AuthorisedConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    async def refuse(self, code: int) -> None:
        # Accept first so that the browser sees the code (a refused handshake is only 1006).
        await self.accept()
        await self.close(code=code)

    async def join(self, groups: list[str]) -> None:
        self.groups_joined = groups if self.channel_layer is not None else []
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        pass  # the client only listens


class JobUserConsumer(_AuthorisedConsumer):
    """``ws/job-user/``: the latest jobs on connect, then every status change."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        # Join before reading, so that no change falls between the list and the live feed.
        await self.join(await _groups_of(user))
        await self.accept()
        await self.send_json({"type": "jobs", "jobs": await _latest_jobs(user)})

    async def drs_status(self, event: dict) -> None:
        await self.send_json(_job_message(event["job"]))

    async def drs_logs(self, event: dict) -> None:
        pass  # not sent to user groups; ignore should a layer deliver one


class JobLogConsumer(_AuthorisedConsumer):
    """``ws/job-log/<job_pk>/?after=<id>``: the job's log so far, then new rows, and its status."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        self.job_pk = int(self.scope["url_route"]["kwargs"]["job_pk"])
        job = await _visible_job(user, self.job_pk)
        if job is None:
            await self.refuse(CLOSE_FORBIDDEN)
            return
        self.last_id = _after(self.scope)
        self.live = False
        self.pending: list[dict] = []
        # Join first: rows stored from now on arrive as messages and wait in ``pending``
        # while the history is read, so nothing falls in between.
        await self.join([events.job_group(self.job_pk)])
        await self.accept()
        await self.send_json(_job_message(job))
        self.history = asyncio.ensure_future(self._send_history())

    async def disconnect(self, code) -> None:
        history = getattr(self, "history", None)
        if history is not None and not history.done():
            history.cancel()
        await super().disconnect(code)

    async def _send_history(self) -> None:
        try:
            await self._catch_up()
            while self.pending:  # what arrived meanwhile, minus what the history had
                await self._handle(self.pending.pop(0))
            self.live = True  # no await since the check: nothing can slip in between
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Could not send the log of job %s", self.job_pk)
            await self.close(code=1011)

    async def _catch_up(self, before: int | None = None) -> None:
        """Send every stored row above ``last_id`` (and below ``before``), in batches."""
        while True:
            rows = await _rows_after(self.job_pk, self.last_id, before)
            if not rows:
                return
            await self._send_rows(rows, history=True)

    async def _send_rows(self, rows: list[dict], history: bool) -> None:
        rows = [row for row in rows if row["id"] > self.last_id]
        if not rows:
            return
        if not history and rows[0]["id"] > self.last_id + 1:
            # Ids in between belong to other jobs, or to messages this socket missed (a full
            # channel drops them): those rows are in the database.
            await self._catch_up(before=rows[0]["id"])
        self.last_id = rows[-1]["id"]
        await self.send_json({"type": "logs", "job": self.job_pk, "history": history, "logs": rows})

    async def _handle(self, event: dict) -> None:
        if event["type"] == "drs.logs":
            await self._send_rows(event["logs"], history=False)
        else:
            if event["job"]["status"] in FINAL_STATES:
                # All output is stored before a job's final state: whatever the socket missed
                # (a message dropped by a full channel) is in the database now.
                await self._catch_up()
            await self.send_json(_job_message(event["job"]))

    async def drs_logs(self, event: dict) -> None:
        if self.live:
            await self._handle(event)
        else:
            self.pending.append(event)

    drs_status = drs_logs
