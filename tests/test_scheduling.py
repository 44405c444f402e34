"""Slots per server and per user, priorities and fair order (``scheduling``), for real: jobs
on the test sshd, four Celery worker processes sharing the database, the host's process list.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid

import pytest
from django.db import connection

from django_remote_submission import audit, services
from django_remote_submission.models import Event, Job, ServerAccount, Status
from django_remote_submission.scheduling import LoadUnreadable, parse_load
from tests.services import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HOLDING = (Status.submitted, Status.queued, Status.running)

# Waits on the host until the test creates the go file, then ends.
BLOCKED = (
    "import os, time\n"
    "while not os.path.exists({go!r}):\n"
    "    time.sleep(0.02)\n"
    "time.sleep(0.1)\n"
    "print('done')\n"
)


QUEUE = "drs-scheduling"


def load_file(sshd) -> str:
    """Where the faked load source of the workers reads "<load average> <cores>"."""
    return os.path.join(sshd.base_dir_pw, "fleet-load")


@pytest.fixture(scope="module")
def workers(celery_app, redis_url, sshd):
    """Four worker processes, as a fleet runs them; the host's load is read from a file."""
    faked = {"LOAD_COMMAND": ["cat", load_file(sshd)], "LOAD_RECHECK": 0.2}
    env = {"DRS_TEST_SETTINGS": json.dumps(faked)}
    started = []
    try:
        for _ in range(4):
            started.append(start_worker(redis_url, concurrency=3, extra_env=env, queue=QUEUE))
        yield started
    finally:
        for w in started:
            w.stop()


@pytest.fixture(autouse=True)
def own_queue(server):
    """The tests' jobs and hand-outs go to these workers only (the session's shared worker,
    with the real load command, consumes the default queue)."""
    server.queue = QUEUE
    server.save()


@pytest.fixture
def go(sshd):
    """A file on the host whose creation lets the BLOCKED jobs end."""
    path = os.path.join(sshd.base_dir_pw, f"go-{uuid.uuid4().hex[:8]}")
    yield path
    if os.path.exists(path):
        os.unlink(path)


def of(user, job):
    """``job`` made by the ``make_job`` fixture, owned by ``user`` instead."""
    Job.objects.filter(pk=job.pk).update(owner=user)
    job.refresh_from_db()
    return job


def release(path: str) -> None:
    open(path, "w").close()
    os.chmod(path, 0o644)


def host_processes(tag: str) -> int:
    """Python processes on the host running one of the jobs named ``fleet_<tag>_*.py``."""
    out = subprocess.run(["ps", "-eo", "comm=,args="], capture_output=True, text=True).stdout
    return sum(
        1
        for line in out.splitlines()
        if line.split(None, 1)[0].startswith("python3") and f"fleet_{tag}_" in line
    )


def counts(server) -> dict[str, int]:
    jobs = Job.objects.filter(server=server)
    return {s: jobs.filter(status=s).count() for s in Status.values if jobs.filter(status=s)}


def submit_all(jobs, user, password):
    for job in jobs:
        services.submit(job, user, password=password)


def start_order(jobs) -> list[int]:
    """The jobs by the time they were given their slot."""
    return [j.pk for j in Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("admitted_at")]


def max_running_from_audit(server=None, owner=None) -> int:
    """The most jobs (of ``server``, or of ``owner`` on every server) running at once,
    replayed from the audit trail's state changes."""
    events = Event.objects.filter(action=Event.Action.state)
    if server is not None:
        events = events.filter(server_id=server.pk)
    if owner is not None:
        events = events.filter(job__owner=owner)
    holding: set[int] = set()
    most = 0
    for job_id, to_state in events.order_by("id").values_list("job_id", "to_state"):
        if to_state in (Status.queued, Status.running):
            holding.add(job_id)
        else:
            holding.discard(job_id)
        most = max(most, len(holding))
    return most


class Sampler(threading.Thread):
    """The most processes of the jobs seen on the host at once, and the most jobs holding a
    slot in the database at once, sampled until stopped."""

    def __init__(self, tag: str, server, blocker) -> None:
        super().__init__(daemon=True)
        self.tag, self.server, self.blocker = tag, server, blocker
        self.most = self.most_admitted = self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        admitted = Job.objects.filter(
            server=self.server, status__in=HOLDING, admitted_at__isnull=False
        )
        with self.blocker.unblock():
            try:
                while not self.done.is_set():
                    self.most = max(self.most, host_processes(self.tag))
                    self.most_admitted = max(self.most_admitted, admitted.count())
                    self.samples += 1
                    self.done.wait(0.01)
            finally:
                connection.close()


def test_twenty_jobs_on_a_server_limited_to_three_never_run_more_than_three(
    make_job, server, owner, sshd, workers, go, django_db_blocker
):
    server.max_running = 3
    server.save()
    tag = uuid.uuid4().hex[:8]
    jobs = [
        make_job(BLOCKED.format(go=go), remote_filename=f"fleet_{tag}_{i}.py") for i in range(20)
    ]
    sampler = Sampler(tag, server, django_db_blocker)
    sampler.start()
    submit_all(jobs, owner, sshd.password)

    wait_for(
        lambda: counts(server) == {Status.running: 3, Status.waiting: 17},
        timeout=90,
        message=lambda: f"3 running, 17 waiting; got {counts(server)}; {workers[0].log()[-3000:]}",
    )
    wait_for(lambda: host_processes(tag) == 3, timeout=30, message="3 jobs on the host")
    reasons = set(Job.objects.filter(status=Status.waiting).values_list("wait_reason", flat=True))
    assert reasons == {"3 of 3 slots on test sshd in use"}
    release(go)
    wait_for(
        lambda: counts(server) == {Status.success: 20},
        timeout=240,
        message=lambda: f"all 20 succeed; got {counts(server)}; {workers[0].log()[-2000:]}",
    )
    sampler.done.set()
    sampler.join()

    assert sampler.samples > 20
    assert (sampler.most, sampler.most_admitted) == (3, 3)
    assert max_running_from_audit(server) == 3
    assert [j.logs.get().content for j in Job.objects.filter(pk__in=[j.pk for j in jobs])] == [
        "done\n"
    ] * 20
    # The first come were the first served.
    assert start_order(jobs)[3:] == [j.pk for j in jobs if j.pk not in start_order(jobs)[:3]]


def test_waiting_jobs_start_by_priority_then_in_turn_across_users_then_in_order(
    make_job, server, owner, sshd, workers, go, django_user_model
):
    server.max_running = 1
    server.save()
    bob = django_user_model.objects.create_user("bob")
    ServerAccount.objects.create(user=bob, server=server, username=sshd.password_user)
    first = make_job(BLOCKED.format(go=go))
    services.submit(first, owner, password=sshd.password)
    wait_for(lambda: Job.objects.get(pk=first.pk).status == Status.running, timeout=60)

    mine = [make_job(BLOCKED.format(go=go)) for _ in range(3)]
    bobs = of(bob, make_job(BLOCKED.format(go=go)))
    urgent = make_job(BLOCKED.format(go=go), priority=5)
    submit_all(mine, owner, sshd.password)
    submit_all([bobs], bob, sshd.password)
    submit_all([urgent], owner, sshd.password)
    wait_for(
        lambda: counts(server) == {Status.running: 1, Status.waiting: 5},
        timeout=60,
        message=lambda: f"1 running, 5 waiting; got {counts(server)}",
    )
    release(go)
    wait_for(
        lambda: counts(server) == {Status.success: 6},
        timeout=120,
        message=lambda: f"all succeed; got {counts(server)}",
    )
    everyone = [first, *mine, bobs, urgent]
    assert start_order(everyone) == [first.pk, urgent.pk, bobs.pk, *[j.pk for j in mine]]


def test_one_users_limit_holds_only_their_jobs(
    make_job, server, owner, sshd, workers, go, django_user_model
):
    server.max_running_per_user = 1
    server.save()
    bob = django_user_model.objects.create_user("bob")
    ServerAccount.objects.create(user=bob, server=server, username=sshd.password_user)
    a, b = make_job(BLOCKED.format(go=go)), make_job(BLOCKED.format(go=go))
    c = of(bob, make_job(BLOCKED.format(go=go)))
    submit_all([a, b], owner, sshd.password)
    submit_all([c], bob, sshd.password)
    wait_for(
        lambda: counts(server) == {Status.running: 2, Status.waiting: 1},
        timeout=60,
        message=lambda: f"2 running, 1 waiting; got {counts(server)}",
    )
    waiting = Job.objects.get(status=Status.waiting)
    assert waiting.owner == owner
    assert waiting.wait_reason == "1 of 1 slots per user on test sshd in use by this user"
    release(go)
    wait_for(lambda: counts(server) == {Status.success: 3}, timeout=120, message="3 succeed")


def test_a_cancelled_waiting_job_never_starts_and_the_next_one_does(
    make_job, server, owner, sshd, workers, go
):
    server.max_running = 1
    server.save()
    first, second, third = (make_job(BLOCKED.format(go=go)) for _ in range(3))
    submit_all([first, second, third], owner, sshd.password)
    wait_for(
        lambda: counts(server) == {Status.running: 1, Status.waiting: 2},
        timeout=60,
        message=lambda: f"1 running, 2 waiting; got {counts(server)}",
    )
    services.cancel(second, owner)
    wait_for(
        lambda: Job.objects.get(pk=second.pk).status == Status.cancelled,
        timeout=30,
        message="cancelled",
    )
    release(go)
    wait_for(
        lambda: counts(server) == {Status.success: 2, Status.cancelled: 1},
        timeout=60,
        message=lambda: f"2 succeed, 1 cancelled; got {counts(server)}",
    )
    second.refresh_from_db()
    assert (second.error, second.started_at, second.admitted_at) == (
        "Cancelled while it waited for a slot.",
        None,
        None,
    )
    assert second.logs.count() == 0


def test_a_server_without_limits_never_makes_a_job_wait(make_job, server, owner, sshd, workers):
    job = make_job("print('hi')")
    services.submit(job, owner, password=sshd.password)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == Status.success, timeout=60)
    states = list(
        Event.objects.filter(job_id=job.pk, action=Event.Action.state).values_list(
            "to_state", flat=True
        )
    )
    assert states == [Status.submitted, Status.running, Status.success]


def set_load(sshd, text: str) -> None:
    path = load_file(sshd)
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o644)
    os.replace(path + ".new", path)


def test_a_job_waits_while_the_hosts_load_per_core_is_above_the_limit(
    make_job, server, owner, sshd, workers
):
    server.max_load_per_core = 1.0
    server.save()
    set_load(sshd, "3.00 2\n")
    try:
        tag = uuid.uuid4().hex[:8]
        job = make_job("print('ran')", remote_filename=f"fleet_{tag}_0.py")
        services.submit(job, owner, password=sshd.password)
        wait_for(
            lambda: (
                Job.objects.get(pk=job.pk).wait_reason
                == "load 1.50 per core on test sshd above 1.00"
            ),
            timeout=60,
            message=lambda: f"waiting for the load; {Job.objects.get(pk=job.pk).__dict__}",
        )
        # Rechecked (every 0.2 s here), still too high: it still waits, never started.
        set_load(sshd, "2.50 2\n")
        wait_for(
            lambda: (
                Job.objects.get(pk=job.pk).wait_reason
                == "load 1.25 per core on test sshd above 1.00"
            ),
            timeout=30,
            message=lambda: (
                "the load read again; "
                f"{Job.objects.values('status', 'wait_reason', 'error').get(pk=job.pk)}; "
                f"{workers[0].log()[-2000:]}"
            ),
        )
        job.refresh_from_db()
        assert (job.status, job.started_at, job.logs.count()) == (Status.waiting, None, 0)
        set_load(sshd, "1.00 2\n")
        wait_for(
            lambda: Job.objects.get(pk=job.pk).status == Status.success,
            timeout=60,
            message="started once the load fell",
        )
        assert job.logs.get().content == "ran\n"
    finally:
        os.unlink(load_file(sshd))


def test_the_load_command_output_is_parsed_with_a_clear_error():
    assert parse_load("0.52 8\n") == 0.065
    with pytest.raises(
        LoadUnreadable, match=r"expected '<1-minute load average> <cores>', got 'busy'"
    ):
        parse_load("busy")
    with pytest.raises(LoadUnreadable, match=r"expected a load >= 0 and cores >= 1, got '1.0 0'"):
        parse_load("1.0 0")


def test_only_staff_may_set_a_jobs_priority_through_the_api(make_job, owner, django_user_model, db):
    from rest_framework.test import APIClient

    job = make_job("print(1)")
    client = APIClient()
    client.force_authenticate(owner)
    refused = client.patch(f"/api/jobs/{job.pk}/", {"priority": 5}, format="json")
    assert (refused.status_code, refused.json()) == (
        400,
        {"priority": ["Only staff may set a job's priority."]},
    )
    assert (
        client.patch(f"/api/jobs/{job.pk}/", {"title": "same"}, format="json").json()["priority"]
        == 0
    )
    staff = django_user_model.objects.create_user("operator", is_staff=True, is_superuser=True)
    client.force_authenticate(staff)
    allowed = client.patch(f"/api/jobs/{job.pk}/", {"priority": 5}, format="json")
    assert (allowed.status_code, allowed.json()["priority"]) == (200, 5)
    assert Job.objects.get(pk=job.pk).priority == 5


def test_the_job_page_shows_how_long_the_job_waited_and_why(
    make_job, server, owner, sshd, workers, go, client
):
    server.max_running = 1
    server.save()
    first, second = make_job(BLOCKED.format(go=go)), make_job(BLOCKED.format(go=go))
    submit_all([first, second], owner, sshd.password)
    wait_for(
        lambda: counts(server) == {Status.running: 1, Status.waiting: 1},
        timeout=60,
        message=lambda: f"1 running, 1 waiting; got {counts(server)}",
    )
    waiting = Job.objects.get(status=Status.waiting)
    client.force_login(owner)
    page = client.get(f"/jobs/{waiting.pk}/").content.decode()
    assert '<dd data-role="wait_reason">1 of 1 slots on test sshd in use</dd>' in page
    release(go)
    wait_for(lambda: counts(server) == {Status.success: 2}, timeout=60, message="2 succeed")

    steps = audit.timeline(waiting)
    moves = [(s.event.from_state, s.event.to_state) for s in steps if s.event.action == "state"]
    assert moves == [
        ("initial", "submitted"),
        ("submitted", "waiting"),
        ("waiting", "submitted"),
        ("submitted", "running"),
        ("running", "success"),
    ]
    changes = [s for s in steps if s.event.action == "state"]
    wait, granted = changes[1], changes[2]
    waiting.refresh_from_db()
    assert wait.event.reason == "1 of 1 slots on test sshd in use"
    assert wait.lasted == granted.event.time - wait.event.time
    assert wait.event.time < waiting.admitted_at <= granted.event.time
    assert [s.lasted is None for s in steps if s.event.action == "state"] == [False] * 4 + [True]
    page = client.get(f"/jobs/{waiting.pk}/").content.decode()
    assert f"(for {wait.lasted_text})" in page
    assert "— 1 of 1 slots on test sshd in use" in page


def test_durations_read_as_people_write_them():
    from datetime import timedelta

    def text(seconds):
        return audit.Step(None, timedelta(seconds=seconds)).lasted_text

    assert [text(0.42), text(12.7), text(184), text(7500)] == [
        "0.4 s",
        "12 s",
        "3 min 4 s",
        "2 h 5 min",
    ]


@pytest.fixture(scope="module")
def per_user_worker(celery_app, redis_url):
    """A worker of its own queue whose settings limit each user to 2 jobs on all servers."""
    env = {"DRS_TEST_SETTINGS": json.dumps({"MAX_RUNNING_PER_USER": 2})}
    worker = start_worker(redis_url, concurrency=6, extra_env=env, queue="drs-per-user")
    yield worker
    worker.stop()


def test_a_users_limit_on_all_servers_holds_across_servers(
    make_job, server, owner, sshd, per_user_worker, django_user_model, settings, python3, tmp_path
):
    settings.DRS = {**settings.DRS, "MAX_RUNNING_PER_USER": 2}
    other = type(server).objects.create(
        title="same host", hostname=server.hostname, port=server.port, host_key=server.host_key
    )
    other.interpreters.add(python3)
    type(server).objects.filter(pk__in=[server.pk, other.pk]).update(queue="drs-per-user")
    bob = django_user_model.objects.create_user("bob")
    ServerAccount.objects.create(user=bob, server=other, username=sshd.password_user)
    go_a, go_b = (os.path.join(sshd.base_dir_pw, f"go-{uuid.uuid4().hex[:8]}") for _ in "ab")
    a1 = make_job(BLOCKED.format(go=go_a))  # on the test sshd
    b1, b2 = (make_job(BLOCKED.format(go=go_b)) for _ in "12")
    c = of(bob, make_job(BLOCKED.format(go=go_b)))
    Job.objects.filter(pk__in=[b1.pk, b2.pk, c.pk]).update(server=other)
    for job in (b1, b2, c):
        job.refresh_from_db()
    try:
        submit_all([a1, b1], owner, sshd.password)
        wait_for(lambda: Job.objects.filter(status=Status.running).count() == 2, timeout=60)
        submit_all([b2], owner, sshd.password)
        submit_all([c], bob, sshd.password)
        b2.refresh_from_db()
        wait_for(
            lambda: (
                Job.objects.filter(pk=b2.pk, status=Status.waiting).exists()
                and Job.objects.filter(pk=c.pk, status=Status.running).exists()
            ),
            timeout=60,
            message=lambda: str(
                list(Job.objects.values_list("pk", "status", "wait_reason", "error"))
                + list(Event.objects.filter(job=c).values_list("action", "to_state", "reason"))
            ),
        )
        b2.refresh_from_db()
        assert b2.wait_reason == "2 of 2 slots per user on all servers in use by this user"
        # The job that ends is on the other server: its end starts the one waiting here.
        release(go_a)
        wait_for(
            lambda: Job.objects.filter(pk=b2.pk, status=Status.running).exists(),
            timeout=60,
            message=lambda: str(list(Job.objects.values_list("pk", "status", "wait_reason"))),
        )
        assert Job.objects.get(pk=a1.pk).status == Status.success
    finally:
        for path in (go_a, go_b):
            release(path)
    jobs = [a1, b1, b2, c]
    wait_for(
        lambda: Job.objects.filter(pk__in=[j.pk for j in jobs], status=Status.success).count() == 4,
        timeout=120,
        message=lambda: str(list(Job.objects.values_list("pk", "status", "error"))),
    )
    held = max_running_from_audit(owner=owner)
    assert held == 2, held
