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

``{"type": "jobs", "jobs": [<job>, ...]}``  on connect: the latest jobs the user may see
                                           (newest first, at most ``LATEST_JOBS``).
``{"type": "status", "job": <job>}``        each time one of those jobs changes state.

``ws/job-log/<job_pk>/?after=<log id>`` (``JobLogConsumer``) sends:

``{"type": "status", "job": <job>}``        on connect, then on each state change of the job.
``{"type": "logs", "job": <pk>, "history": <bool>, "logs": [<log>, ...]}``
                                           the log rows with an id above ``after`` (0 when
                                           not given), oldest first: first the stored ones
                                           (``history`` true, in pages of at most
                                           ``HISTORY_ROWS`` rows / ``HISTORY_CHARS``
                                           characters), then new ones as they are stored
                                           (``history`` true again for rows read from the
                                           database after a stop, see below).

``<job>`` is ``events.job_payload`` plus ``"url"`` (the job's page); ``<log>`` is
``events.log_payload``: ``{"id", "time", "stream", "content", "offset"}`` where ``stream`` is
"stdout", "stderr" or "system" (a notice of the app itself). A client that reconnects passes
the largest log id it has and receives each row exactly once, without a gap. A view that
opens a long log at its end (the job page) reads the last page from ``api/logs/window/``
and passes its last id: the socket then sends only the rows that follow, not the whole log.

Flow control. Every message also carries ``"seq"``: 1, 2, 3, ... on each connection. The
client acknowledges what it has processed with ``{"type": "ack", "seq": <the last seq
processed>}`` (after every message, or at most every 100 ms and after each history page);
anything else it sends is ignored. While more than ``DRS["WS_MAX_UNACKED_BYTES"]`` (4 MiB)
of messages are unacknowledged, the server sends nothing more: the log consumer stops where
it is and, once acks bring the backlog under the bound, sends the rows it skipped from the
database, page by page, then goes live again; of the statuses it skipped only the latest is
sent (per job; when more than ``LATEST_JOBS`` jobs changed, a fresh ``"jobs"`` list instead).
A socket whose backlog stays over the bound for ``DRS["WS_ACK_TIMEOUT"]`` seconds (30) is
closed with code 4408: the client is too slow, and reconnects with ``?after=<last id>``.
So a server holds at most the bound plus one message for each socket, whatever the job prints.

Scripts log in with an API token (the tokens app) in the handshake's ``Authorization:
Bearer <key>`` header (``Token <key>`` works too), browsers with their session; a token that
is revoked or expires closes its sockets with 4401. Anonymous users are closed with code
4401; a job the user may not see (someone else's, unless they may see every job, or missing)
with 4403. Who may receive is checked again when group
messages arrive (at most every ``RECHECK_EVERY`` s): a socket whose user logged out (the session was
flushed), changed their password or was deactivated is closed with 4401, one whose user may
no longer see the job with 4403. History goes to the connecting socket only. Live rows that the
socket already has are dropped. A message the channel layer dropped (a socket that fell
behind its channel's capacity) is recovered from the database: before a live batch whose
first id does not follow the last one sent, and when the job reaches a final state, the
consumer sends the stored rows it has not sent yet. A final status is sent after every row
stored before it; a new run's ``submitted`` before every row of that run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.apps import apps
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, reverse

from . import events, logs, policy
from .conf import drs_settings
from .models import FINAL_STATES, Status

logger = logging.getLogger(__name__)

LATEST_JOBS = 50
HISTORY_ROWS = 500
HISTORY_CHARS = 256 * 1024

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408  # the client did not ack in time: reconnect with ?after=<last id>
# Seconds between two checks that the user may still receive: each costs about 6 queries in
# the one thread where Channels runs database work, ahead of the socket's next message (once a
# second, 100 sockets watching a busy job got its lines seconds late: p50 6.2 s, 1.2 s now).
RECHECK_EVERY = 5.0


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
    """The next rows above ``after`` (and below ``before``), from the database or the job's
    log archive: at most HISTORY_ROWS, about HISTORY_CHARS characters."""
    return logs.page(job_pk, after, before=before, max_rows=HISTORY_ROWS, max_chars=HISTORY_CHARS)


def _tokens():
    """The tokens app's ``authentication`` module; None when the project does not install it."""
    if not apps.is_installed("django_remote_submission.tokens"):
        return None
    from .tokens import authentication

    return authentication


def _token_key(scope) -> str | None:
    """The API token key of the handshake's ``Authorization`` header, if any."""
    tokens = _tokens()
    if tokens is None:
        return None
    header = dict(scope.get("headers") or ()).get(b"authorization")
    return tokens.key_from_header(header) if header else None


@database_sync_to_async
def _token(key: str, scope):
    """The live API token of ``key``; None when it is refused."""
    tokens = _tokens()
    try:
        return tokens.authenticate(key, request=SimpleNamespace(client=scope.get("client")))
    except tokens.TokenRefused:
        return None


@database_sync_to_async
def _refusal(scope, job_pk: int | None = None) -> int | None:
    """None while the socket's user is still logged in (the session not flushed, the password
    not changed, the account active, the API token not revoked or expired) and may still see
    the job; else the close code."""
    user = scope.get("user")
    fresh = get_user_model()._default_manager.filter(pk=getattr(user, "pk", None)).first()
    if fresh is None or not fresh.is_active:
        return CLOSE_UNAUTHENTICATED
    if scope.get("drs_token") is not None and not _tokens().is_live(scope["drs_token"]):
        return CLOSE_UNAUTHENTICATED
    session = scope.get("session")
    if session is not None and getattr(session, "session_key", None):
        store = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key)
        if auth.get_user(SimpleNamespace(session=store)).pk != fresh.pk:
            return CLOSE_UNAUTHENTICATED
    if job_pk is not None and not policy.visible_jobs(fresh).filter(pk=job_pk).exists():
        return CLOSE_FORBIDDEN
    return None


def _after(scope) -> int:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        return max(0, int(query.get("after", ["0"])[0]))
    except ValueError:
        return 0


def _ack(text_data: str | None) -> int | None:
    """The seq of an ack frame; None for anything else (ignored, never an error)."""
    try:
        content = json.loads(text_data) if text_data else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(content, dict) or content.get("type") != "ack":
        return None
    seq = content.get("seq")
    return seq if type(seq) is int else None


class _AuthorisedConsumer(AsyncJsonWebsocketConsumer):
    """Joins the socket to its groups, and sends with flow control (see the module doc)."""

    groups_joined: list[str]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seq = 0
        self.unacked: deque[tuple[int, int]] = deque()  # (seq, bytes) of each message
        self.unacked_bytes = 0
        self.acked = asyncio.Event()  # set by each ack that leaves the backlog under the bound
        self.stalled: asyncio.Task | None = None  # closes the socket unless acks come
        self.closing = False

    async def authenticated_user(self):
        """The socket's user: the API token's, when the handshake sends one (scripts), else
        the session's (browsers); None for an anonymous or refused one."""
        key = _token_key(self.scope)
        if key is not None:
            token = await _token(key, self.scope)
            if token is None:
                return None
            self.scope["user"], self.scope["drs_token"] = token.user, token.pk
        user = self.scope.get("user")
        return user if user is not None and user.is_authenticated else None

    async def may_go_on(self, job_pk: int | None = None) -> bool:
        """Before forwarding a message (at most every RECHECK_EVERY s): close the socket if its user
        logged out, was deactivated or may no longer see the job."""
        now = time.monotonic()
        if now < getattr(self, "checked_until", 0.0):
            return not self.closing
        self.checked_until = now + RECHECK_EVERY
        code = await _refusal(self.scope, job_pk)
        if code is not None and not self.closing:
            self.closing = True
            await self.close(code=code)
        return not self.closing

    @property
    def behind(self) -> bool:
        """The client has more than the bound to acknowledge (or is being closed): send it
        nothing."""
        return self.closing or self.unacked_bytes > drs_settings.WS_MAX_UNACKED_BYTES

    async def refuse(self, code: int) -> None:
        # Accept first so that the browser sees the code (a refused handshake is only 1006).
        await self.accept()
        await self.close(code=code)

    async def join(self, groups: list[str]) -> None:
        self.groups_joined = groups if self.channel_layer is not None else []
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_json(self, content: dict, close: bool = False) -> None:
        if self.closing:
            return
        self.seq += 1
        # ASCII (json.dumps escapes the rest): its length is its size in bytes.
        text = await self.encode_json({**content, "seq": self.seq})
        await self.send(text_data=text, close=close)
        self.unacked.append((self.seq, len(text)))
        self.unacked_bytes += len(text)
        if self.behind and self.stalled is None:
            self.stalled = asyncio.ensure_future(self._close_when_stalled())

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        seq = _ack(text_data)
        if seq is None or not 1 <= seq <= self.seq:
            return  # not an ack, or of a message never sent
        while self.unacked and self.unacked[0][0] <= seq:
            self.unacked_bytes -= self.unacked.popleft()[1]
        if not self.behind:
            if self.stalled is not None:
                self.stalled.cancel()
                self.stalled = None
            self.acked.set()
            await self.caught_up()

    async def caught_up(self) -> None:
        """An ack left the backlog under the bound: send what waits."""

    async def until_acked(self) -> None:
        """Return once the backlog is under the bound."""
        while self.behind:
            self.acked.clear()
            await self.acked.wait()

    async def _close_when_stalled(self) -> None:
        await asyncio.sleep(drs_settings.WS_ACK_TIMEOUT)
        self.stalled = None
        logger.info(
            "Closing a websocket of %s: %d bytes unacknowledged for %ss",
            self.scope.get("path"),
            self.unacked_bytes,
            drs_settings.WS_ACK_TIMEOUT,
        )
        self.closing = True
        await self.close(code=CLOSE_TOO_SLOW)


class JobUserConsumer(_AuthorisedConsumer):
    """``ws/job-user/``: the latest jobs on connect, then every status change."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: dict[int, dict] = {}  # job pk -> its latest status not sent yet
        self.stale_list = False  # too many jobs waited: a fresh list replaces them

    async def connect(self) -> None:
        user = await self.authenticated_user()
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        # Join before reading, so that no change falls between the list and the live feed.
        await self.join(await _groups_of(user))
        await self.accept()
        await self.send_json({"type": "jobs", "jobs": await _latest_jobs(user)})

    async def drs_status(self, event: dict) -> None:
        if not await self.may_go_on():
            return
        job = event["job"]
        self.waiting.pop(job["id"], None)
        self.waiting[job["id"]] = job  # the latest last
        if len(self.waiting) > LATEST_JOBS:
            self.waiting.clear()
            self.stale_list = True
        await self.caught_up()

    async def caught_up(self) -> None:
        if self.stale_list and not self.behind:
            self.stale_list = False
            jobs = await _latest_jobs(self.scope["user"])
            for job in jobs:  # read after each of their changes: the list is newer
                self.waiting.pop(job["id"], None)
            await self.send_json({"type": "jobs", "jobs": jobs})
        while self.waiting and not self.behind:
            await self.send_json(_job_message(self.waiting.pop(next(iter(self.waiting)))))

    async def drs_logs(self, event: dict) -> None:
        pass  # not sent to user groups; ignore should a layer deliver one


class JobLogConsumer(_AuthorisedConsumer):
    """``ws/job-log/<job_pk>/?after=<id>``: the job's log so far, then new rows, and its status.

    Live batches are forwarded while the socket keeps up. Otherwise (history, a client over
    the bound, a missed message, a final status) ``_pump`` sends the rows from the database,
    page by page within the bound, then goes live again: what arrives meanwhile only marks
    the database as read too early (``stale``), and statuses wait in two slots.
    """

    async def connect(self) -> None:
        user = await self.authenticated_user()
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        self.job_pk = int(self.scope["url_route"]["kwargs"]["job_pk"])
        job = await _visible_job(user, self.job_pk)
        if job is None:
            await self.refuse(CLOSE_FORBIDDEN)
            return
        self.last_id = _after(self.scope)
        self.live = False
        self.stale = False  # a message arrived while the database was read: read it again
        self.new_run: dict | None = None  # a "submitted" not sent: before any further row
        self.status: dict | None = None  # the latest other status not sent: after the rows
        self.pumping: asyncio.Task | None = None
        # Join first: rows stored from now on arrive as messages, and mark the history read
        # so far as stale, so nothing falls in between.
        await self.join([events.job_group(self.job_pk)])
        await self.accept()
        await self.send_json(_job_message(job))
        self._from_database()

    async def disconnect(self, code) -> None:
        pumping = getattr(self, "pumping", None)
        if pumping is not None:
            pumping.cancel()
        await super().disconnect(code)

    async def caught_up(self) -> None:
        pass  # ``_pump`` waits for ``acked``

    def _from_database(self) -> None:
        """Stop forwarding live messages: ``_pump`` sends from the database what they held."""
        self.live = False
        self.stale = True
        if self.pumping is None or self.pumping.done():
            self.pumping = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                await self.until_acked()
                if self.new_run is not None:  # the rows stored before it are deleted
                    job, self.new_run = self.new_run, None
                    await self.send_json(_job_message(job))
                    continue
                self.stale = False
                rows = await _rows_after(self.job_pk, self.last_id)
                if self.new_run is not None:
                    continue  # these rows may be of either run: read again after its status
                if rows:
                    await self._send_rows(rows, history=True)
                elif self.stale:
                    continue
                elif self.status is not None:
                    # Read after the status arrived: every row stored before it is sent.
                    job, self.status = self.status, None
                    await self.send_json(_job_message(job))
                else:
                    break
            self.live = True  # no await since the last read: nothing can slip in between
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Could not send the log of job %s", self.job_pk)
            await self.close(code=1011)

    async def _send_rows(self, rows: list[dict], history: bool) -> None:
        self.last_id = rows[-1]["id"]
        await self.send_json({"type": "logs", "job": self.job_pk, "history": history, "logs": rows})

    async def drs_logs(self, event: dict) -> None:
        if not await self.may_go_on(self.job_pk):
            return
        rows = [row for row in event["logs"] if row["id"] > self.last_id]
        if not rows:
            return
        if not self.live or self.behind:
            self._from_database()  # the rows are stored: no need to keep them here
        elif rows[0]["id"] > self.last_id + 1 and await _rows_after(
            self.job_pk, self.last_id, before=rows[0]["id"]
        ):
            # Messages this socket missed (a full channel drops them): those rows are in the
            # database. (Ids in between may also belong to other jobs: nothing is missing.)
            self._from_database()
        else:
            await self._send_rows(rows, history=False)

    async def drs_status(self, event: dict) -> None:
        if not await self.may_go_on(self.job_pk):
            return
        job = event["job"]
        if self.live and not self.behind and job["status"] not in FINAL_STATES:
            await self.send_json(_job_message(job))
            return
        # A final status follows every row stored before it: read them first. A new run
        # clears the rows of the last one: its status goes before any row of the new run.
        if job["status"] == Status.submitted:
            self.new_run, self.status = job, None
        else:
            self.status = job
        self._from_database()
