"""The per-process pool of authenticated SSH connections, and the channels counted on them.

    pool = Pool(Connection)                       # ssh.py's: Connection(target, credentials)
    conn = pool.reserve(target, credentials)      # a connection with one channel slot held
    chan = conn.open_channel()                    # then, whether it opened or not:
    pool.count(conn, reserved=-1, opened=1)       # (opened=0 if it failed)

Connections are keyed by (host, port, host key, credentials digest, host-key policy) and shared
by the jobs of a worker. sshd allows ``MaxSessions`` channels per connection (10 unless its
administrator says otherwise): the pool puts at most that many on each connection, learns a
lower limit from the first refusal, and opens more connections as needed, a few at a time
(sshd drops handshakes beyond its ``MaxStartups``, 10 by default), one ahead of need.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..conf import drs_settings
from .base import ConnectError, Credentials, RemoteError, Target, Watcher

logger = logging.getLogger(__name__)


class _Progress:
    """Channels opened and given back, counted per host: a job that waits for a channel gives
    up only when none moved for ``CONNECT_TIMEOUT``, however long the queue in front of it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count: dict[tuple[str, int], int] = {}

    def count(self, target: Target) -> int:
        with self._cond:
            return self._count.get((target.hostname, target.port), 0)

    def signal(self, target: Target) -> None:
        with self._cond:
            key = (target.hostname, target.port)
            self._count[key] = self._count.get(key, 0) + 1
            self._cond.notify_all()

    def wait(self, target: Target, seen: int, timeout: float) -> int:
        """The count once it passes ``seen`` or after ``timeout`` seconds."""
        key = (target.hostname, target.port)
        with self._cond:
            self._cond.wait_for(lambda: self._count.get(key, 0) != seen, timeout)
            return self._count.get(key, 0)


progress = _Progress()


class Pool:
    """Per-process pool of connections, keyed by target and credentials.

    ``connect(target, credentials)`` opens one (``ssh.Connection``): it has ``alive``,
    ``capacity``, ``opened_channels``, ``reserved``, ``last_used`` and ``close()``.
    """

    def __init__(self, connect: Callable) -> None:
        self.connect = connect
        self._cond = threading.Condition()  # guards everything below; notified on changes
        self._conns: dict[tuple, list] = {}
        self._opening: dict[tuple, int] = {}  # connections being opened, per key
        self._waiting: dict[tuple, int] = {}  # threads waiting for one of them, per key
        self._capacity: dict[tuple, int] = {}  # MaxSessions as learnt from refusals, per key
        self.watcher = Watcher()  # told of connects, failures, connections and channels

    @staticmethod
    def key(target: Target, credentials: Credentials) -> tuple:
        return (
            target.hostname,
            target.port,
            target.host_key,
            credentials.fingerprint(),
            drs_settings.HOST_KEY_POLICY,
        )

    def capacity(self, key: tuple) -> int:
        """Channels put on one connection: sshd's MaxSessions as learnt, else the setting."""
        return self._capacity.get(key, int(drs_settings.SSH_MAX_SESSIONS))

    def refused(self, conn) -> None:
        """The server refused a channel on ``conn``: it holds no more than it has open."""
        key = self.key(conn.target, conn.credentials)
        with self._cond:
            conn.capacity = max(1, conn.opened_channels)
            # The highest refusal point seen: a channel closed here whose close the server
            # has not processed yet makes it refuse one early, which must not stick.
            self._capacity[key] = max(self._capacity.get(key, 0), conn.capacity)
            self._cond.notify_all()

    def count(self, conn, opened: int = 0, reserved: int = 0) -> None:
        """Channels opened (or closed) and slots reserved (or given up) on ``conn``."""
        with self._cond:
            before = conn.opened_channels
            conn.opened_channels = max(0, conn.opened_channels + opened)
            conn.reserved = max(0, conn.reserved + reserved)
            change = conn.opened_channels - before
            self._cond.notify_all()
        if change:
            self.watcher.channels(conn.target, change)

    def take(self, conn) -> bool:
        """Reserve a channel slot on ``conn`` itself, if it is alive and has room."""
        with self._cond:
            if conn.alive and conn.free > 0:
                conn.reserved += 1
                return True
            return False

    def acquire(self, target: Target, credentials: Credentials, exclude=()):
        """A live connection with room for another channel, opened if need be."""
        return self._get(target, credentials, exclude, reserve=False)

    def reserve(self, target: Target, credentials: Credentials, exclude=()):
        """Like ``acquire``, with one channel slot held on the connection: the caller then
        gives it back with ``count(conn, reserved=-1, opened=1)`` (``opened=0`` if the
        channel did not open)."""
        return self._get(target, credentials, exclude, reserve=True)

    def _room(self, key: tuple, exclude):
        for conn in self._conns.get(key, []):
            if conn.alive and conn not in exclude and conn.free > 0:
                return conn
        return None

    def _get(self, target: Target, credentials: Credentials, exclude, reserve: bool):
        key = self.key(target, credentials)
        self._evict_idle()
        patience = float(drs_settings.CONNECT_TIMEOUT)
        with self._cond:
            while True:
                conn = self._room(key, exclude)
                if conn is not None:
                    conn.last_used = time.monotonic()
                    if reserve:
                        conn.reserved += 1
                        self._spare(key, target, credentials)
                    return conn
                # Open one more connection unless those under way bring room enough for
                # everyone waiting, or enough handshakes are under way already.
                opening = self._opening.get(key, 0)
                wanted = self._waiting.get(key, 0) + 1
                if opening < int(drs_settings.SSH_CONNECTS_AT_ONCE) and (
                    opening * self.capacity(key) < wanted
                ):
                    break
                self._waiting[key] = wanted
                try:
                    self._cond.wait(patience)
                finally:
                    self._waiting[key] -= 1
            self._opening[key] = opening + 1
        return self._open_counted(key, target, credentials, reserve)

    def _open_counted(self, key: tuple, target: Target, credentials: Credentials, reserve=False):
        """Open a connection and add it to the pool (``_opening[key]`` counted by the caller)."""
        conn = None
        try:
            conn = self._open(target, credentials)
        finally:
            with self._cond:
                self._opening[key] -= 1
                if conn is not None:
                    conn.capacity = self._capacity.get(key, conn.capacity)
                    conn.last_used = time.monotonic()
                    conn.reserved += int(reserve)
                    self._conns.setdefault(key, []).append(conn)
                self._cond.notify_all()
        self.watcher.connections(target, 1)
        return conn

    def _spare(self, key: tuple, target: Target, credentials: Credentials) -> None:
        """With every channel slot taken and no handshake under way, open one more connection
        in the background, so that the next job does not wait for a handshake. (Lock held.)"""
        if self._opening.get(key, 0) or any(
            c.alive and c.free > 0 for c in self._conns.get(key, [])
        ):
            return
        self._opening[key] = 1

        def open_spare() -> None:
            try:
                self._open_counted(key, target, credentials)
            except RemoteError as exc:  # the next job that needs it will say why
                logger.info("Could not open a spare connection to %s: %s", target.hostname, exc)

        threading.Thread(target=open_spare, name="drs-ssh-spare", daemon=True).start()

    def _open(self, target: Target, credentials: Credentials):
        """Open a connection; a handshake the server dropped (a busy sshd) is tried again."""
        began = time.monotonic()
        for delay in (0.1, 0.3, 1.0, None):
            try:
                conn = self.connect(target, credentials)
            except ConnectError as exc:
                if delay is None or not exc.transient:
                    self.watcher.connect_failed(target, exc)
                    raise
                time.sleep(delay)
            except RemoteError as exc:
                self.watcher.connect_failed(target, exc)
                raise
            else:
                self.watcher.connected(target, time.monotonic() - began)
                return conn
        raise AssertionError("unreachable")

    def discard(self, conn) -> None:
        with self._cond:
            for conns in self._conns.values():
                if conn in conns:
                    conns.remove(conn)
                    self.watcher.connections(conn.target, -1)
        conn.close()

    def _evict_idle(self) -> None:
        limit = time.monotonic() - float(drs_settings.POOL_IDLE_TIMEOUT)
        with self._cond:
            stale = [
                c
                for cs in self._conns.values()
                for c in cs
                if (c.last_used < limit and not c.busy) or not c.alive
            ]
            for conns in self._conns.values():
                conns[:] = [c for c in conns if c not in stale]
        for conn in stale:
            self.watcher.connections(conn.target, -1)
            conn.close()

    def clear(self, close: bool = True) -> None:
        with self._cond:
            conns = [c for cs in self._conns.values() for c in cs]
            self._conns.clear()
            self._opening.clear()
            self._waiting.clear()
            self._capacity.clear()
        if close:  # (after a fork the child counts from nothing: its parent's are not its)
            for conn in conns:
                self.watcher.connections(conn.target, -1)
                conn.close()
