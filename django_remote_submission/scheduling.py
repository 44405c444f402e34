"""Slots on a server, priorities, and a fair order for the jobs that wait for one.

    server.max_running = 3              # at most 3 jobs hold the host at once
    server.max_running_per_user = 2     # at most 2 of them from one user
    server.save()
    DRS = {"MAX_RUNNING_PER_USER": 5}   # at most 5 jobs of one user on all servers together

    scheduling.admit(job)      # the runner, once it leased a run: True = start it now
    scheduling.dispatch(pk)    # a slot freed: give free slots to waiting jobs

A job over a limit of its server waits in ``waiting`` with the reason in ``wait_reason``
("3 of 3 slots on hpc1 in use"). No worker holds it and nothing polls for it: when a job of
the server ends, a reaction to the change (``signals.react``) calls ``dispatch``, which gives
each free slot to the next waiting job:

1. the highest ``Job.priority`` first;
2. among equal priorities, the user who holds the fewest slots on the server, then the user
   served least recently (one user's thousand jobs do not starve another's one);
3. for one user, first come first served.

A granted job moves to ``submitted`` and a ``resume_job`` task runs it with the options and
the encrypted credential its submission stored on the job. Its heartbeat is left stale until
that task takes it, so the workers' recovery sweep starts it should that task be lost.

A job holds a slot from its admission to its end (``submitted``, ``queued`` or ``running``).
Slots are counted under a lock of the server's row (an ``UPDATE``, so SQLite serialises it
too): two workers never give away the same slot. With ``MAX_RUNNING_PER_USER``, the rows of
the users concerned are locked too, after the server's and in the order of their keys, so two
servers' hand-outs never give one user more (and never wait for each other in a cycle); a job
that ends hands out slots on its server and on every server where its owner has jobs waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from . import services
from .conf import drs_settings
from .connections import connect, credentials_for
from .credentials import decrypt
from .models import ACTIVE_STATES, FINAL_STATES, Job, Server, Status
from .models.jobs import stale_before
from .runner.state import move

logger = logging.getLogger(__name__)

HOLDING = ACTIVE_STATES  # the states of a job that holds a slot on its server


def _holding() -> Q:
    """Jobs that hold a slot: queued or running, or submitted and admitted. A job leased but
    not yet through ``admit`` holds none: two jobs leased at once must not each see the other
    as holding the last slot (the second to be admitted would wait behind the first's place
    in the queue instead of behind its slot)."""
    return Q(status__in=[Status.queued, Status.running]) | Q(
        status=Status.submitted, admitted_at__isnull=False
    )


_NEVER = datetime.min.replace(tzinfo=timezone.get_fixed_timezone(0))


def user_limit() -> int | None:
    """``DRS["MAX_RUNNING_PER_USER"]``: jobs one user may hold on all servers together."""
    return int(drs_settings.MAX_RUNNING_PER_USER) or None


def is_limited(server: Server) -> bool:
    return user_limit() is not None or any(
        value is not None
        for value in (server.max_running, server.max_running_per_user, server.max_load_per_core)
    )


def _limited_q() -> Q:
    return (
        Q(max_running__isnull=False)
        | Q(max_running_per_user__isnull=False)
        | Q(max_load_per_core__isnull=False)
    )


class LoadUnreadable(Exception):
    """What ``DRS["LOAD_COMMAND"]`` printed is not "<load average> <cores>"."""


def parse_load(text: str) -> float:
    """The load per core in the output of ``LOAD_COMMAND`` ("0.52 8" -> 0.065)."""
    words = text.split()
    try:
        load, cores = float(words[0]), int(words[1])
    except (IndexError, ValueError):
        raise LoadUnreadable(
            f"expected '<1-minute load average> <cores>', got {text[:80]!r}"
        ) from None
    if cores < 1 or load < 0:
        raise LoadUnreadable(f"expected a load >= 0 and cores >= 1, got {text[:80]!r}")
    return load / cores


def host_load(job: Job) -> float:
    """The load per core of ``job``'s host, read with the login of the job's run."""
    password = decrypt(job.credential) if job.credential else None
    remote = bool((job.options or {}).get("remote", True)) and not job.server.local
    with connect(job.server, credentials_for(job, password), remote) as transport:
        done = transport.run(list(drs_settings.LOAD_COMMAND), timeout=30, limit=4096)
    if done.exit_code:
        raise LoadUnreadable(f"exit code {done.exit_code}: {done.error_text[:200]}")
    return parse_load(done.text)


def load_too_high(job: Job) -> str:
    """Why the load of ``job``'s server keeps jobs from starting now, or ""."""
    server = job.server
    limit = server.max_load_per_core
    if limit is None:
        return ""
    try:
        load = host_load(job)
    except Exception as exc:  # the run itself reports a host it cannot reach
        logger.warning("Could not read the load of %s: %s", server.title, exc)
        return ""
    if load <= limit:
        return ""
    return f"load {load:.2f} per core on {server.title} above {limit:.2f}"


def _recheck_later(server_pk: int) -> None:
    delay = float(drs_settings.LOAD_RECHECK)
    transaction.on_commit(lambda: services.send_dispatch(server_pk, delay))


@dataclass
class _Waiting:
    pk: int
    owner_id: int
    priority: int
    submitted_at: datetime | None


class _Slots:
    """What the server holds now, and whom it served last (under the server's lock)."""

    def __init__(self, server: Server, owners, exclude: int | None = None) -> None:
        self.server = server
        holding = Job.objects.filter(_holding(), server=server)
        if exclude is not None:
            holding = holding.exclude(pk=exclude)
        per_owner = holding.values("owner_id").annotate(n=Count("pk"))
        self.held = dict(per_owner.values_list("owner_id", "n"))
        self.total = sum(self.held.values())
        served = Job.objects.filter(server=server, owner_id__in=owners, admitted_at__isnull=False)
        latest = served.values("owner_id").annotate(t=Max("admitted_at"))
        self.last = dict(latest.values_list("owner_id", "t"))
        self.per_user = user_limit()
        self.everywhere: dict[int, int] = {}  # slots held on every server, per owner
        if self.per_user is not None:
            _lock_users(owners)
            anywhere = Job.objects.filter(_holding(), owner_id__in=owners)
            if exclude is not None:
                anywhere = anywhere.exclude(pk=exclude)
            per_owner = anywhere.values("owner_id").annotate(n=Count("pk"))
            self.everywhere = dict(per_owner.values_list("owner_id", "n"))

    def full(self, owner_id: int) -> str:
        """Why ``owner_id`` cannot have a slot now, or ""."""
        server = self.server
        if server.max_running is not None and self.total >= server.max_running:
            return f"{self.total} of {server.max_running} slots on {server.title} in use"
        per_user = server.max_running_per_user
        if per_user is not None and self.held.get(owner_id, 0) >= per_user:
            return (
                f"{self.held.get(owner_id, 0)} of {per_user} slots per user on {server.title} "
                "in use by this user"
            )
        everywhere = self.everywhere.get(owner_id, 0)
        if self.per_user is not None and everywhere >= self.per_user:
            return (
                f"{everywhere} of {self.per_user} slots per user on all servers in use by this user"
            )
        return ""

    def take(self, owner_id: int, now: datetime) -> None:
        self.everywhere[owner_id] = self.everywhere.get(owner_id, 0) + 1
        self.held[owner_id] = self.held.get(owner_id, 0) + 1
        self.total += 1
        self.last[owner_id] = now


def _lock(server_pk: int) -> Server:
    """Lock the server's row until the transaction ends; the server with fresh limits."""
    Server.objects.filter(pk=server_pk).update(modified=F("modified"))
    return Server.objects.select_for_update().get(pk=server_pk)


def _lock_users(owners) -> None:
    """Lock the users' rows until the transaction ends, in the order of their keys."""
    users = get_user_model().objects.filter(pk__in=list(owners)).order_by("pk")
    list(users.select_for_update().values_list("pk", flat=True))


def admit(job: Job) -> bool:
    """Whether the runner starts ``job`` now; else it waits in ``waiting`` (False).

    Called once a run is leased (``submitted``). A run admitted before (a redelivery, a run
    resumed or granted a slot) goes on; a job already waiting stays in the queue.
    """
    if job.status == Status.waiting:
        return False
    if job.status != Status.submitted or job.admitted_at is not None:
        return True
    if not is_limited(job.server):
        return True
    busy = load_too_high(job)  # before the lock: it asks the host
    with transaction.atomic():
        server = _lock(job.server_id)
        queue = Job.objects.filter(server=server, status=Status.waiting)
        slots = _Slots(server, [job.owner_id], exclude=job.pk)
        reason = busy or slots.full(job.owner_id)
        now = timezone.now()
        if not reason and not queue.exists():
            Job.objects.filter(pk=job.pk).update(admitted_at=now)
            job.admitted_at = now
            return True
        ahead = queue.count()
        jobs = "job" if ahead == 1 else "jobs"
        reason = reason or f"{ahead} {jobs} ahead in the queue of {server.title}"
        since = job.submitted_at or now  # set by ``services.submit``; not by direct calls
        if not move(job, Status.waiting, wait_reason=reason[:255], submitted_at=since):
            return False  # cancelled meanwhile: whoever did it reports on it
        if busy:
            _recheck_later(server.pk)
            return False
        granted = _dispatch(server, own=job.pk)
    if job.pk in granted:
        job.refresh_from_db()
        return True
    return False


def dispatch(server_pk: int) -> list[int]:
    """Give the server's free slots to waiting jobs, in fair order; the jobs granted.

    Each is started by a ``resume_job`` task once the transaction commits. On a server with
    a maximum load, the load is read first (with the login of the first waiting job): too
    high, nothing starts and the load is read again after ``DRS["LOAD_RECHECK"]`` seconds.
    """
    first = (
        Job.objects.select_related("server", "owner")
        .filter(server_id=server_pk, status=Status.waiting, cancel_requested=False)
        .order_by("-priority", "submitted_at", "pk")
        .first()
    )
    if first is None:
        return []
    busy = load_too_high(first)
    with transaction.atomic():
        server = _lock(server_pk)
        if busy:
            Job.objects.filter(server=server, status=Status.waiting).update(wait_reason=busy[:255])
            _recheck_later(server_pk)
            return []
        return _dispatch(server)


def _next(waiting: list[_Waiting], slots: _Slots) -> _Waiting | None:
    eligible = [w for w in waiting if not slots.full(w.owner_id)]
    if not eligible:
        return None
    top = max(w.priority for w in eligible)
    return min(
        (w for w in eligible if w.priority == top),
        key=lambda w: (
            slots.held.get(w.owner_id, 0),
            slots.last.get(w.owner_id) or _NEVER,
            w.submitted_at or _NEVER,
            w.pk,
        ),
    )


def _dispatch(server: Server, own: int | None = None) -> list[int]:
    waiting = [
        _Waiting(*row)
        for row in Job.objects.filter(server=server, status=Status.waiting, cancel_requested=False)
        .order_by("submitted_at", "pk")
        .values_list("pk", "owner_id", "priority", "submitted_at")
    ]
    if not waiting:
        return []
    slots = _Slots(server, {w.owner_id for w in waiting})
    granted: list[int] = []
    now = timezone.now()
    while (pick := _next(waiting, slots)) is not None:
        waiting.remove(pick)
        job = Job.objects.select_related("server").get(pk=pick.pk)
        # Someone else's: stale until its task takes it (or the recovery sweep, should the
        # task be lost).
        beat = now if pick.pk == own else stale_before() - timedelta(seconds=1)
        moved = job.status == Status.waiting and move(
            job, Status.submitted, wait_reason="", admitted_at=now, heartbeat=beat
        )
        if not moved:
            continue
        slots.take(pick.owner_id, now + timedelta(microseconds=len(granted) + 1))
        granted.append(pick.pk)
        if pick.pk != own:
            transaction.on_commit(partial(services.send_start, pick.pk))
    _explain(server, waiting, slots)
    return granted


def _explain(server: Server, waiting: list[_Waiting], slots: _Slots) -> None:
    """Tell the jobs left waiting why, in their ``wait_reason``."""
    by_reason: dict[str, list[int]] = {}
    for w in waiting:
        by_reason.setdefault(slots.full(w.owner_id) or "waiting for its turn", []).append(w.pk)
    for reason, pks in by_reason.items():
        Job.objects.filter(pk__in=pks, status=Status.waiting).exclude(
            wait_reason=reason[:255]
        ).update(wait_reason=reason[:255])


def job_state_changed(job: Job, old: str, new: str, **kwargs) -> None:
    """A job that held a slot ended: hand its slot on once the change is committed (on its
    server; with ``MAX_RUNNING_PER_USER``, also where its owner has jobs waiting)."""
    if old not in HOLDING or new not in FINAL_STATES:
        return
    servers = set()
    if user_limit() is not None:
        servers.add(job.server_id)
        waiting = Job.objects.filter(owner_id=job.owner_id, status=Status.waiting)
        servers.update(waiting.values_list("server_id", flat=True).distinct())
    elif Server.objects.filter(pk=job.server_id).filter(_limited_q()).exists():
        servers.add(job.server_id)
    for server_pk in sorted(servers):
        transaction.on_commit(partial(_dispatch_logged, server_pk))


def _dispatch_logged(server_pk: int) -> None:
    try:
        dispatch(server_pk)
    except Exception:  # the job's end is stored; the recovery sweep dispatches again
        logger.exception("Could not start waiting jobs of server %s", server_pk)


def sweep() -> list[int]:
    """Dispatch every limited server that has waiting jobs (the workers' recovery sweep)."""
    servers = (
        Job.objects.filter(status=Status.waiting).values_list("server_id", flat=True).distinct()
    )
    granted: list[int] = []
    for server_pk in list(servers):
        granted += dispatch(server_pk)
    return granted
