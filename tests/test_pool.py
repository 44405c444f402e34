"""The per-worker pool of SSH connections against a strict sshd (MaxSessions, MaxStartups)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from django_remote_submission import metrics, runner
from django_remote_submission.models import Job, Server
from django_remote_submission.remote import Credentials, RemoteError, Target, ssh
from django_remote_submission.remote.base import (
    AuthError,
    ChannelRefused,
    ConnectError,
    HostKeyMismatch,
    Watcher,
)
from tests.services import start_sshd

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(scope="module")
def strict_sshd():
    server = start_sshd(extra=("MaxSessions 2", "MaxStartups 3:100:3"))
    yield server
    server.stop()


def test_many_concurrent_jobs_share_a_few_connections(strict_sshd, make_job, python3):
    if not strict_sshd.password_user:
        pytest.skip("needs root for the password account")
    server = Server.objects.create(
        title="strict",
        hostname=strict_sshd.host,
        port=strict_sshd.port,
        host_key=strict_sshd.host_key,
    )
    server.interpreters.add(python3)
    jobs = [make_job(f"import time\ntime.sleep(1)\nprint({i})") for i in range(16)]
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(server=server)

    def run(job):
        try:
            runner.submit(job.pk, password=strict_sshd.password)
        finally:
            connection.close()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, jobs))
    for job in jobs:
        job.refresh_from_db()
    assert [(j.status, j.error) for j in jobs] == [("success", "")] * 16
    outputs = ["".join(j.logs.values_list("content", flat=True)) for j in jobs]
    assert outputs == [f"{i}\n" for i in range(16)]
    logins = strict_sshd.log().count("Accepted password")
    # Two channels per connection, never one connection per channel. (Fewer than 8: a job
    # that finds every channel busy waits for one to close instead of failing.)
    assert logins <= 16


def _refusing(monkeypatch, until):
    """Every connection refuses a new channel until ``until()`` is true (sshd's MaxSessions
    reached on every connection the pool may open: not producible on one test host)."""
    real = ssh.Connection.open_channel

    def open_channel(self):
        if not until():
            raise ChannelRefused("open failed")
        return real(self)

    monkeypatch.setattr(ssh.Connection, "open_channel", open_channel)


def test_a_job_waits_for_a_channel_as_long_as_others_move(sshd, settings, monkeypatch):
    settings.DRS = {**settings.DRS, "CONNECT_TIMEOUT": 0.5}
    target = Target(sshd.host, sshd.port, sshd.host_key)
    t = ssh.SSHTransport.connect(target, Credentials(sshd.key_user, key_text=sshd.key_text))
    stop = threading.Event()
    moves = 0

    def others():  # other jobs' channels open and close all along
        nonlocal moves
        while not stop.wait(0.1):
            moves += 1
            ssh.progress.signal(target)

    started = time.monotonic()
    _refusing(monkeypatch, until=lambda: moves >= 20)  # 2 s: four times the patience
    mover = threading.Thread(target=others)
    mover.start()
    try:
        assert t.run(["echo", "ok"]).stdout == b"ok\n"
    finally:
        stop.set()
        mover.join()
    assert time.monotonic() - started >= 2 * 0.5


def test_a_job_gives_up_when_no_channel_moves(sshd, settings, monkeypatch):
    settings.DRS = {**settings.DRS, "CONNECT_TIMEOUT": 0.5}
    target = Target(sshd.host, sshd.port, sshd.host_key)
    t = ssh.SSHTransport.connect(target, Credentials(sshd.key_user, key_text=sshd.key_text))
    _refusing(monkeypatch, until=lambda: False)
    with pytest.raises(RemoteError) as info:
        t.run(["echo", "ok"])
    assert str(info.value) == f"{sshd.host} refused every new SSH channel."


@pytest.fixture(scope="module")
def stock_sshd():
    server = start_sshd(extra=("MaxSessions 10", "MaxStartups 10:30:100"))  # OpenSSH's defaults
    yield server
    server.stop()


def test_a_burst_of_channels_opens_the_connections_it_needs_and_no_more(stock_sshd):
    target = Target(stock_sshd.host, stock_sshd.port, stock_sshd.host_key)
    creds = Credentials(stock_sshd.key_user, key_text=stock_sshd.key_text)
    n = 25
    all_open = threading.Barrier(n, timeout=60)

    def hold(_) -> bytes:
        t = ssh.SSHTransport.connect(target, creds)
        proc = t.start(["cat"], stdin=b"")  # ends once the channel is read to its end
        try:
            all_open.wait()  # every channel is open at this point
        finally:
            output = proc.wait(timeout=30)
            proc.close()
        return output.stdout

    with ThreadPoolExecutor(n) as threads:
        outputs = list(threads.map(hold, range(n)))
    key = ssh.pool.key(target, creds)
    conns = list(ssh.pool._conns[key])
    for conn in conns:
        ssh.pool.discard(conn)
    assert outputs == [b""] * n
    # 25 channels at sshd's 10 per connection: three connections, each one's handshake once.
    assert len(conns) == 3
    assert stock_sshd.log().count("Accepted publickey") == 3


OTHER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIGb1Rw4R/qK0e1SqBM7h4Bcl3UQ0QkGzYlQf9vOQ9QAq"  # not sshd's


class Recording(Watcher):
    """What the pool reported (``remote.watch``), in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def connected(self, target, seconds):
        self.events.append(("connected", target.label, seconds > 0))

    def connect_failed(self, target, error):
        self.events.append(("failed", target.label, metrics._reason(error)))

    def connections(self, target, delta):
        self.events.append(("connections", target.label, delta))

    def channels(self, target, delta):
        self.events.append(("channels", target.label, delta))


def test_the_pool_reports_connects_failures_connections_and_channels(sshd, monkeypatch):
    ssh.pool.clear()
    seen = Recording()
    monkeypatch.setattr(ssh.pool, "watcher", seen)
    key = Credentials(sshd.key_user, key_text=sshd.key_text)
    target = Target(sshd.host, sshd.port, sshd.host_key, name="hpc")
    with ssh.SSHTransport.connect(target, key) as t:
        assert t.run(["echo", "ok"]).stdout == b"ok\n"
    assert seen.events == [
        ("connected", "hpc", True),
        ("connections", "hpc", 1),
        ("channels", "hpc", 1),
        ("channels", "hpc", -1),
    ]
    seen.events.clear()
    other_key = f"{sshd.host_key.split()[0]} ssh-ed25519 {OTHER_KEY}"
    with pytest.raises(ConnectError):  # no sshd on that port
        ssh.SSHTransport.connect(Target(sshd.host, 1, "", name="gone"), key)
    with pytest.raises(HostKeyMismatch):
        ssh.SSHTransport.connect(Target(sshd.host, sshd.port, other_key), key)
    with pytest.raises(AuthError):
        ssh.SSHTransport.connect(target, Credentials(sshd.key_user, password="wrong"))
    ssh.pool.clear()
    assert seen.events == [
        ("failed", "gone", "unreachable"),
        ("failed", f"{sshd.host}:{sshd.port}", "host_key"),
        ("failed", "hpc", "auth"),
        ("connections", "hpc", -1),
    ]
