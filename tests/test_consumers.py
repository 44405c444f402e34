"""The websockets: who may connect, history then live, resuming with ``after=``, statuses, acks.

Each test runs one async scenario (``run``) against the consumers through
``channels.testing.WebsocketCommunicator`` and the in-memory channel layer; broadcasts come
from ``events`` exactly as the runner sends them. The last test runs daphne and redis, with a
client that never reads while a job prints a million lines.
"""

from __future__ import annotations

import json
import socket as net
import struct
import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from django_remote_submission import consumers, events
from django_remote_submission.conf import redis_channel_layer
from django_remote_submission.logs import LogPolicy, LogWriter
from django_remote_submission.models import Job, Log
from django_remote_submission.routing import websocket_urlpatterns
from tests import factories
from tests.services import start_daphne, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

application = URLRouter(websocket_urlpatterns)


def run(scenario) -> None:
    async def wrapped():
        try:
            await scenario()
        finally:
            await get_channel_layer().flush()

    async_to_sync(wrapped)()


def socket(path: str, user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path)
    communicator.scope["user"] = user
    return communicator


@pytest.fixture
def users():
    User = get_user_model()
    return {
        name: (User.objects.create_superuser if name == "staff" else User.objects.create_user)(name)
        for name in ("alice", "bob", "staff")
    }


@pytest.fixture
def make_job():
    interpreter = factories.interpreter()
    server = factories.server(None, interpreter, title="here", hostname="localhost", local=True)

    def make(owner, **fields):
        return factories.job(owner, server, interpreter, remote_directory="d", **fields)

    return make


def store(job, *contents: str, stream: str = "stdout", broadcast: bool = True) -> list[int]:
    """Store rows as the runner does (one bulk insert) and broadcast them as one message."""
    rows = Log.objects.bulk_create([Log(job=job, stream=stream, content=c) for c in contents])
    if broadcast:
        events.logs_stored(job, rows)
    return [row.pk for row in rows]


def set_status(job, status: str, **fields) -> None:
    Job.objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()
    events.status_changed(job)


async def refused(path: str, user) -> int:
    communicator = socket(path, user)
    connected, _ = await communicator.connect()
    assert connected  # accepted, then closed with a code the browser can read
    message = await communicator.receive_output()
    await communicator.disconnect()
    assert message["type"] == "websocket.close"
    return message["code"]


async def receive_logs(communicator, count: int) -> list[dict]:
    """The log rows of the next messages, until ``count`` rows have arrived."""
    rows = []
    while len(rows) < count:
        message = await communicator.receive_json_from(timeout=5)
        assert message["type"] == "logs", message
        rows += message["logs"]
    return rows


@pytest.fixture
def flow(settings):
    """Usage: ``flow(bound=1000, timeout=1)``: the DRS flow-control settings of this test."""

    def set_flow(bound: int, timeout: float = 30) -> None:
        settings.DRS = {**settings.DRS, "WS_MAX_UNACKED_BYTES": bound, "WS_ACK_TIMEOUT": timeout}

    return set_flow


async def ack(communicator, seq: int) -> None:
    await communicator.send_json_to({"type": "ack", "seq": seq})


async def frames_until_close(communicator, timeout: float = 10) -> tuple[list[str], int]:
    """The text frames the server sends before it closes, and the close code."""
    frames = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return frames, output["code"]
        frames.append(output["text"])


def test_anonymous_users_are_refused(users, make_job):
    job = make_job(users["alice"])

    async def scenario():
        assert await refused("/ws/job-user/", AnonymousUser()) == 4401
        assert await refused(f"/ws/job-log/{job.pk}/", AnonymousUser()) == 4401

    run(scenario)


def test_foreign_and_missing_jobs_are_refused_but_staff_see_them(users, make_job):
    job = make_job(users["alice"])
    store(job, "secret\n", broadcast=False)

    async def scenario():
        assert await refused(f"/ws/job-log/{job.pk}/", users["bob"]) == 4403
        assert await refused(f"/ws/job-log/{job.pk + 1000}/", users["alice"]) == 4403
        communicator = socket(f"/ws/job-log/{job.pk}/", users["staff"])
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from())["type"] == "status"
        assert [r["content"] for r in await receive_logs(communicator, 1)] == ["secret\n"]
        await communicator.disconnect()

    run(scenario)


def test_job_log_sends_status_then_history_then_live_lines(users, make_job):
    job = make_job(users["alice"], status="running")
    first = store(job, "one\n", "two\n", broadcast=False)
    store(job, "warn\n", stream="stderr", broadcast=False)

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        status = await communicator.receive_json_from()
        assert status["type"] == "status"
        assert status["job"]["id"] == job.pk and status["job"]["status"] == "running"
        assert status["job"]["url"] == f"/jobs/{job.pk}/"
        history = await communicator.receive_json_from()
        assert history["history"] is True and history["job"] == job.pk
        assert [(r["stream"], r["content"]) for r in history["logs"]] == [
            ("stdout", "one\n"),
            ("stdout", "two\n"),
            ("stderr", "warn\n"),
        ]
        assert history["logs"][0]["id"] == first[0]
        assert set(history["logs"][0]) == {"id", "time", "stream", "content", "offset"}

        await database_sync_to_async(store)(job, "three\n")
        live = await communicator.receive_json_from()
        assert live["history"] is False
        assert [r["content"] for r in live["logs"]] == ["three\n"]
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_after_resumes_without_gap_or_duplicate(users, make_job):
    job = make_job(users["alice"], status="running")
    ids = store(job, "1\n", "2\n", "3\n", broadcast=False)

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/?after={ids[1]}", users["alice"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # status
        assert [r["content"] for r in await receive_logs(communicator, 1)] == ["3\n"]

        # A broadcast repeating rows the socket has, plus a new one: only the new one is sent.
        def again():
            new = Log.objects.create(job=job, content="4\n")
            events.logs_stored(job, list(Log.objects.filter(job=job).exclude(pk=new.pk)) + [new])

        await database_sync_to_async(again)()
        assert [r["content"] for r in await receive_logs(communicator, 1)] == ["4\n"]
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_long_history_comes_in_bounded_batches_to_this_socket_only(users, make_job):
    job = make_job(users["alice"], status="success")
    store(job, *[f"line {i}\n" for i in range(1200)], broadcast=False)
    store(job, "x" * (200 * 1024), "y" * (200 * 1024), broadcast=False)

    async def scenario():
        watcher = socket(f"/ws/job-log/{job.pk}/?after=999999999", users["alice"])
        assert (await watcher.connect())[0]
        await watcher.receive_json_from()  # status; nothing more: it has everything
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()
        messages = []
        while sum(len(m["logs"]) for m in messages) < 1202:
            messages.append(await communicator.receive_json_from(timeout=5))
        assert all(len(m["logs"]) <= consumers.HISTORY_ROWS for m in messages)
        assert all(
            sum(len(r["content"]) for r in m["logs"]) <= consumers.HISTORY_CHARS
            or len(m["logs"]) == 1
            for m in messages
        )
        contents = [r["content"] for m in messages for r in m["logs"]]
        assert contents[:1200] == [f"line {i}\n" for i in range(1200)]
        assert len(messages) >= 4
        assert await watcher.receive_nothing()  # history never went to the group
        await communicator.disconnect()
        await watcher.disconnect()

    run(scenario)


def test_lines_the_socket_missed_are_sent_from_the_database_at_the_end(users, make_job):
    job = make_job(users["alice"], status="running")

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # status
        await database_sync_to_async(store)(job, "a\n")
        assert [r["content"] for r in await receive_logs(communicator, 1)] == ["a\n"]
        # A flood: 150 messages while the consumer does not read (capacity 100), and rows
        # whose message was lost altogether.
        await database_sync_to_async(
            lambda: (
                [store(job, f"b{i}\n") for i in range(150)]
                + [store(job, "lost\n", broadcast=False)]
            )
        )()
        await database_sync_to_async(set_status)(job, "success", exit_code=0)
        rows = await receive_logs(communicator, 151)
        assert [r["content"] for r in rows] == [f"b{i}\n" for i in range(150)] + ["lost\n"]
        final = await communicator.receive_json_from()
        assert final["type"] == "status" and final["job"]["status"] == "success"
        assert final["job"]["exit_code"] == 0
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_a_missed_message_is_recovered_before_the_next_live_batch(users, make_job):
    job = make_job(users["alice"], status="running")
    other = make_job(users["bob"], status="running")

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # status

        def output():
            store(job, "1\n")
            store(other, "someone else's\n")  # ids of other jobs in between: no gap
            store(job, "2\n")
            store(job, "3\n", "4\n", broadcast=False)  # a message the channel dropped
            store(job, "5\n")

        await database_sync_to_async(output)()
        rows = await receive_logs(communicator, 5)
        assert [r["content"] for r in rows] == ["1\n", "2\n", "3\n", "4\n", "5\n"]
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_job_user_sends_latest_jobs_then_status_changes_of_own_jobs(users, make_job):
    mine = make_job(users["alice"])
    theirs = make_job(users["bob"])

    async def scenario():
        communicator = socket("/ws/job-user/", users["alice"])
        assert (await communicator.connect())[0]
        first = await communicator.receive_json_from()
        assert first["type"] == "jobs"
        assert [j["id"] for j in first["jobs"]] == [mine.pk]
        assert first["jobs"][0]["status"] == "initial"
        assert first["jobs"][0]["url"] == f"/jobs/{mine.pk}/"

        await database_sync_to_async(set_status)(theirs, "submitted")
        await database_sync_to_async(set_status)(mine, "submitted")
        change = await communicator.receive_json_from()
        assert change["type"] == "status"
        assert change["job"]["id"] == mine.pk and change["job"]["status"] == "submitted"
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_staff_get_everyones_latest_jobs(users, make_job):
    jobs = [make_job(users["alice"]), make_job(users["bob"])]

    async def scenario():
        communicator = socket("/ws/job-user/", users["staff"])
        assert (await communicator.connect())[0]
        first = await communicator.receive_json_from()
        assert sorted(j["id"] for j in first["jobs"]) == sorted(j.pk for j in jobs)
        await communicator.disconnect()

    run(scenario)


@pytest.mark.skipif(not hasattr(events, "staff_group"), reason="needs events.staff_group")
def test_staff_follow_status_changes_of_everyones_jobs(users, make_job):
    job = make_job(users["alice"])

    async def scenario():
        communicator = socket("/ws/job-user/", users["staff"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()  # the latest jobs
        await database_sync_to_async(set_status)(job, "submitted")
        change = await communicator.receive_json_from()
        assert change["job"]["id"] == job.pk and change["job"]["status"] == "submitted"
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


# --- flow control: seq, ack, the bound and 4408 ------------------------------------------------


def test_messages_carry_the_next_seq_and_an_acking_client_gets_every_row_once(
    users, make_job, flow
):
    flow(bound=64 * 1024)  # about one history page: the server waits for acks all along
    job = make_job(users["alice"], status="running")
    history = [f"history {i}\n" for i in range(20000)]
    store(job, *history, broadcast=False)
    live = [f"live {i}\n" for i in range(300)]

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        messages, rows = [], []

        async def receive() -> dict:
            message = await communicator.receive_json_from(timeout=5)
            messages.append(message)
            rows.extend(message.get("logs", []))
            await ack(communicator, message["seq"])
            return message

        while len(rows) < 1500:
            await receive()
        # Stored while the history is being sent: in the database, and announced.
        await database_sync_to_async(
            lambda: [store(job, *live[i : i + 10]) for i in range(0, len(live), 10)]
        )()
        while len(rows) < len(history) + len(live):
            await receive()
        await database_sync_to_async(store)(job, "after\n")
        await receive()
        await database_sync_to_async(set_status)(job, "success", exit_code=0)
        final = await receive()

        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        assert [r["content"] for r in rows] == history + live + ["after\n"]
        assert messages[0]["type"] == "status" and final["type"] == "status"
        assert final["job"]["status"] == "success"
        assert sum(m["type"] == "logs" for m in messages) >= len(history) // consumers.HISTORY_ROWS
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_a_client_that_does_not_ack_gets_the_bound_then_is_closed_with_4408(users, make_job, flow):
    bound = 100_000
    flow(bound=bound, timeout=1)
    job = make_job(users["alice"], status="running")
    store(job, *[f"line {i}\n" for i in range(20000)], broadcast=False)  # about 2 MB

    async def scenario():
        started = time.monotonic()
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        # Live rows while it does not read: not sent either.
        await database_sync_to_async(lambda: [store(job, f"live {i}\n") for i in range(50)])()
        frames, code = await frames_until_close(communicator)
        assert code == consumers.CLOSE_TOO_SLOW == 4408
        assert time.monotonic() - started >= 1
        sizes = [len(frame.encode()) for frame in frames]
        # It stopped with the first message over the bound, one history page.
        assert sum(sizes[:-1]) <= bound < sum(sizes)
        messages = [json.loads(frame) for frame in frames]
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        assert messages[-1]["type"] == "logs"
        assert len(messages[-1]["logs"]) <= consumers.HISTORY_ROWS
        await communicator.disconnect()

    run(scenario)


def test_a_client_that_falls_behind_then_acks_gets_the_rest_from_the_database(
    users, make_job, flow
):
    bound = 20_000
    flow(bound=bound)
    job = make_job(users["alice"], status="running")
    batches = [[f"{i}.{j}\n" for j in range(20)] for i in range(50)]  # about 2 KB each

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]

        def output():
            for batch in batches:
                store(job, *batch)
            store(job, "lost\n", broadcast=False)  # a message the channel dropped
            set_status(job, "success", exit_code=0)

        await database_sync_to_async(output)()
        before = []  # what the server sends while the client reads without acking
        while sum(len(f) for f in before) <= bound:
            before.append((await communicator.receive_output(timeout=5))["text"])
        assert await communicator.receive_nothing()  # it stopped at the first over the bound
        before = [json.loads(frame) for frame in before]
        assert all(m["type"] != "status" for m in before[1:])  # the final one waits

        after = []
        await ack(communicator, before[-1]["seq"])
        while not after or after[-1]["type"] != "status":
            after.append(await communicator.receive_json_from(timeout=5))
            await ack(communicator, after[-1]["seq"])
        messages = before + after
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        rows = [r["content"] for m in messages for r in m.get("logs", [])]
        assert rows == [line for batch in batches for line in batch] + ["lost\n"]
        # The rest were announced live, not forwarded: they came from the database.
        assert sum(len(m.get("logs", [])) for m in before) < len(batches) * 20
        assert all(m["history"] for m in after if m["type"] == "logs")
        assert after[-1]["job"]["status"] == "success"
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_a_new_run_starts_before_its_rows_for_a_client_behind(users, make_job, flow):
    flow(bound=1)  # every message waits for the ack of the one before
    job = make_job(users["alice"], status="running")
    store(job, "old\n", broadcast=False)

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        first = await communicator.receive_json_from()

        def resubmitted():
            set_status(job, "success", exit_code=0)
            Log.objects.filter(job=job).delete()  # as the runner does for a new run
            set_status(job, "submitted", exit_code=None)
            store(job, "new\n")
            set_status(job, "running")

        await database_sync_to_async(resubmitted)()
        assert await communicator.receive_nothing()
        messages = [first]
        for _ in range(3):
            await ack(communicator, messages[-1]["seq"])
            messages.append(await communicator.receive_json_from(timeout=5))
        await ack(communicator, messages[-1]["seq"])
        kinds = [m["job"]["status"] if m["type"] == "status" else m["type"] for m in messages]
        assert kinds == ["running", "submitted", "logs", "running"]  # "old" is gone
        assert [r["content"] for r in messages[2]["logs"]] == ["new\n"]
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_job_user_keeps_the_latest_status_per_job_while_behind(users, make_job, flow):
    flow(bound=1)
    a, b = make_job(users["alice"]), make_job(users["alice"])

    async def scenario():
        communicator = socket("/ws/job-user/", users["alice"])
        assert (await communicator.connect())[0]
        jobs = await communicator.receive_json_from()
        assert jobs["type"] == "jobs" and jobs["seq"] == 1

        def changes():
            set_status(a, "submitted")
            set_status(b, "submitted")
            set_status(a, "running")
            set_status(a, "success", exit_code=0)

        await database_sync_to_async(changes)()
        assert await communicator.receive_nothing()
        statuses = []
        for seq in (1, 2):
            await ack(communicator, seq)
            message = await communicator.receive_json_from()
            assert message["seq"] == seq + 1
            statuses.append((message["job"]["id"], message["job"]["status"]))
        await ack(communicator, 3)
        assert statuses == [(b.pk, "submitted"), (a.pk, "success")]  # in order of last change
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_job_user_sends_a_fresh_list_when_too_many_jobs_changed_while_behind(
    users, make_job, flow, monkeypatch
):
    flow(bound=1)
    monkeypatch.setattr(consumers, "LATEST_JOBS", 3)
    jobs = [make_job(users["alice"]) for _ in range(5)]

    async def scenario():
        communicator = socket("/ws/job-user/", users["alice"])
        assert (await communicator.connect())[0]
        first = await communicator.receive_json_from()
        assert [j["id"] for j in first["jobs"]] == [j.pk for j in jobs[:1:-1]]

        def changes():
            for job in jobs[:4]:  # four jobs: more than LATEST_JOBS wait
                set_status(job, "submitted")
            set_status(jobs[4], "running")

        await database_sync_to_async(changes)()
        assert await communicator.receive_nothing()
        await ack(communicator, 1)
        fresh = await communicator.receive_json_from()
        assert fresh["type"] == "jobs" and fresh["seq"] == 2
        assert [(j["id"], j["status"]) for j in fresh["jobs"]] == [
            (jobs[4].pk, "running"),
            (jobs[3].pk, "submitted"),
            (jobs[2].pk, "submitted"),
        ]
        await ack(communicator, 2)
        assert await communicator.receive_nothing()  # the list had them all
        await communicator.disconnect()

    run(scenario)


def test_malformed_client_messages_are_ignored(users, make_job, flow):
    flow(bound=1)
    job = make_job(users["alice"], status="running")
    garbage = [
        "not json",
        "[" * 100_000,
        "[1]",
        '{"type": "ack"}',
        '{"type": "ack", "seq": "1"}',
        '{"type": "ack", "seq": true}',
        '{"type": "ack", "seq": 1.0}',
        '{"type": "ack", "seq": 0}',
        '{"type": "ack", "seq": 2}',  # never sent
        '{"type": "hello", "seq": 1}',
    ]

    async def scenario():
        for path in (f"/ws/job-log/{job.pk}/", "/ws/job-user/"):
            communicator = socket(path, users["alice"])
            assert (await communicator.connect())[0]
            assert (await communicator.receive_json_from())["seq"] == 1
            await database_sync_to_async(store)(job, f"{path}\n")
            await database_sync_to_async(set_status)(job, "running")
            await communicator.send_to(bytes_data=b"\x00\x01")
            for text in garbage:
                await communicator.send_to(text_data=text)
            assert await communicator.receive_nothing()  # none was an ack of seq 1
            await ack(communicator, 1)
            message = await communicator.receive_json_from()
            assert message["seq"] == 2
            if path == "/ws/job-user/":
                assert message["job"]["status"] == "running"
            else:
                assert [r["content"] for r in message["logs"]] == [f"{path}\n"]
            await communicator.disconnect()

    run(scenario)


# --- a real server: daphne and a client that never reads --------------------------------------

ACK_TIMEOUT = 2.0
LINES = 1_000_000
MB = 1_000_000
TCP_ESTABLISHED = 1


@pytest.fixture
def daphne(redis_url, django_db_setup):
    """Usage: ``daphne.ws("ws/job-user/")``: daphne serving tests.asgi on a free port, with
    ``daphne.layer`` its channel layer's redis URL."""
    layer = redis_url.rsplit("/", 1)[0] + "/3"
    env = {
        "DRS_CHANNEL_REDIS": layer,
        "DRS_TEST_SETTINGS": json.dumps({"WS_ACK_TIMEOUT": ACK_TIMEOUT}),
    }
    server = start_daphne(env)
    server.layer = layer
    yield server
    server.stop()


def tcp_info(sock: net.socket) -> tuple[int, int]:
    """(state, bytes received) of a TCP socket, from Linux's struct tcp_info."""
    info = sock.getsockopt(net.IPPROTO_TCP, net.TCP_INFO, 256)
    return info[0], struct.unpack_from("Q", info, 128)[0]


def test_a_client_that_never_reads_is_dropped_and_the_server_stays_small(
    users, make_job, daphne, settings
):
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(daphne.layer)}  # reach daphne
    settings.DRS = {**settings.DRS, "LOG_MAX_BYTES": 1 << 30}  # keep all 128 MB
    job = make_job(users["alice"], status="running")
    browser = Client()
    browser.force_login(users["alice"])
    cookie = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
    url = daphne.ws(f"ws/job-log/{job.pk}/")
    with connect(url, additional_headers=cookie, open_timeout=10) as first:  # warms daphne up
        assert json.loads(first.recv(timeout=10))["type"] == "status"
    before = daphne.memory()

    raw = net.socket()
    raw.setsockopt(net.SOL_SOCKET, net.SO_RCVBUF, 4096)  # a small window, soon full
    raw.connect(("127.0.0.1", daphne.port))
    line = b"%07d " + (b"the quick brown fox jumps over the lazy dog " * 3)[:119] + b"\n"
    # The client never calls recv(): with max_queue=1 it stops reading the socket at once.
    with connect(url, sock=raw, additional_headers=cookie, max_queue=1, open_timeout=10) as slow:
        started = time.monotonic()
        writer = LogWriter(job, LogPolicy.LOG_LIVE)
        for start in range(0, LINES, 2000):  # 256 KB reads, as from a job's output
            writer.feed("stdout", b"".join(line % i for i in range(start, start + 2000)))
            writer.flush_if_due()
        writer.close()
        stored = time.monotonic() - started
        assert tcp_info(raw)[1] < MB  # the client really does not read: its kernel took little
        wait_for(
            lambda: tcp_info(raw)[0] != TCP_ESTABLISHED,
            timeout=ACK_TIMEOUT + 20,
            message="daphne closes the connection of the client that does not read",
        )
        after, peak = daphne.memory(), daphne.memory("VmHWM")
        received = tcp_info(raw)[1]
        frames = []  # what reached the client before the server dropped it
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(slow.recv(timeout=10))
    assert job.stdout_offset == len(line % 0) * LINES
    numbers = (
        f"{LINES} lines ({job.stdout_offset // MB} MB) stored in {stored:.1f} s; daphne RSS "
        f"{before // MB} -> {after // MB} MB, peak {peak // MB} MB; the client's kernel got "
        f"{received} bytes, {len(frames)} messages ({sum(map(len, frames))} bytes) readable"
    )
    assert after - before < 100 * MB, numbers
    assert peak - before < 100 * MB, numbers
    assert "Exception inside application" not in daphne.log()  # dropped, not crashed
    seqs = [json.loads(frame)["seq"] for frame in frames]
    assert seqs == list(range(1, len(seqs) + 1))

    # The server goes on: another client gets the end of the log.
    last = Log.objects.filter(job=job).order_by("-id").values_list("id", flat=True)[:2]
    with connect(f"{url}?after={last[1]}", additional_headers=cookie, open_timeout=10) as other:
        assert json.loads(other.recv(timeout=10))["type"] == "status"
        logs = json.loads(other.recv(timeout=10))
        assert [row["id"] for row in logs["logs"]] == [last[0]]
    assert daphne.proc.poll() is None


# --- access checked again on group messages ----------------------------------------------------


def logged_in_session(user):
    """A real session of ``user``, as the login view leaves it."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session


async def closed_with(communicator) -> int:
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output["code"]


@pytest.mark.parametrize("how", ["logout", "password change", "deactivated"])
def test_a_user_who_logged_out_stops_receiving_with_4401(users, make_job, how):
    job = make_job(users["alice"])
    session = logged_in_session(users["alice"])

    async def scenario():
        for path in (f"/ws/job-log/{job.pk}/", "/ws/job-user/"):
            communicator = socket(path, users["alice"])
            communicator.scope["session"] = session
            assert (await communicator.connect())[0]
            await communicator.receive_json_from()  # the status, or the list
            if how == "logout":  # in another process: the logout view flushes the session
                await database_sync_to_async(type(session)(session.session_key).flush)()
            elif how == "password change":
                alice = users["alice"]
                alice.set_password("new")
                await database_sync_to_async(alice.save)()
            else:
                await database_sync_to_async(
                    get_user_model().objects.filter(pk=users["alice"].pk).update
                )(is_active=False)
            await database_sync_to_async(set_status)(job, "submitted")
            assert await closed_with(communicator) == consumers.CLOSE_UNAUTHENTICATED
            await communicator.disconnect()
            if how == "logout":
                break  # the session is gone: the user socket is refused at once

    run(scenario)


def test_a_job_given_to_someone_else_stops_reaching_its_old_owner_with_4403(users, make_job):
    job = make_job(users["alice"])

    async def scenario():
        communicator = socket(f"/ws/job-log/{job.pk}/", users["alice"])
        assert (await communicator.connect())[0]
        await communicator.receive_json_from()
        await database_sync_to_async(Job.objects.filter(pk=job.pk).update)(owner=users["bob"])
        await database_sync_to_async(store)(job, "line\n")
        assert await closed_with(communicator) == consumers.CLOSE_FORBIDDEN
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("role", "visible"),
    [("alice", True), ("bob", False), ("staff_only", False), ("viewer", True), ("root", True)],
)
def test_websocket_access_matrix(users, make_job, role, visible):
    from django.contrib.auth.models import Permission

    User = get_user_model()
    people = {
        "alice": users["alice"],
        "bob": users["bob"],
        "staff_only": User.objects.create_user("staffer", is_staff=True),
        "viewer": User.objects.create_user("viewer"),
        "root": users["staff"],  # a superuser
    }
    people["viewer"].user_permissions.add(Permission.objects.get(codename="view_job"))
    job = make_job(users["alice"])

    async def scenario():
        path = f"/ws/job-log/{job.pk}/"
        if not visible:
            assert await refused(path, people[role]) == consumers.CLOSE_FORBIDDEN
            return
        communicator = socket(path, people[role])
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from())["job"]["id"] == job.pk
        await communicator.disconnect()

    run(scenario)
