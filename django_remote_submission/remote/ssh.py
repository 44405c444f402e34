"""SSH transport (paramiko) with a per-process pool of authenticated connections.

    t = SSHTransport.connect(Target("hpc", 22, host_key_line), Credentials("ada", password="..."))
    t.run(["id", "-un"]).text    # "ada\\n"
    t.close()                    # gives the connection back to the pool

Connections are keyed by (host, port, credentials digest, host key) and shared by the jobs
of a worker: opening a channel on a warm connection costs one round trip instead of a TCP
connect, a key exchange and an authentication. A connection that fails is dropped from the
pool; one whose server refuses another channel (sshd's ``MaxSessions``) is joined by a new one.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from typing import IO, Any, cast

import paramiko

from ..conf import drs_settings
from .base import (
    AuthError,
    ChannelRefused,
    ConnectError,
    ConnectionLost,
    Credentials,
    HostKeyInvalid,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    Target,
    Transport,
)
from .channel import OPEN, SSHProcess, _CatReader, command_line
from .hostkeys import (  # noqa: F401  (fetch_host_key: this module's API too)
    _Policy,
    fetch_host_key,
    fingerprint,
    host_key_name,
    parse_host_key,
)

logger = logging.getLogger(__name__)

WINDOW_SIZE = 16 * 1024 * 1024


def _load_pkey(
    text: str, passphrase: str | None, what: str = "The stored private key"
) -> paramiko.PKey:
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise AuthError(f"{what} needs a passphrase; none is set.") from None
        except (paramiko.SSHException, ValueError) as exc:
            last = exc
    raise AuthError(f"{what} could not be read (wrong passphrase or format): {last}")


def _load_key_file(path: str, passphrase: str | None) -> paramiko.PKey:
    """The private key of a file, with the certificate beside it if there is one.

    paramiko's own ``key_filename`` tries each key type in turn: for an RSA or ECDSA key that
    the server refuses, it reports the next type's "Invalid key" instead of the refusal.
    """
    path = _key_file(path)
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"Cannot read the private key file: {exc}") from None
    key = _load_pkey(text, passphrase, f"The private key {path}")
    if os.path.isfile(path + "-cert.pub"):
        key.load_certificate(path + "-cert.pub")
    return key


def _abandon(client: paramiko.SSHClient, sock: socket.socket) -> None:
    """Close a half-open connection without its thread complaining about the socket."""
    client.close()
    sock.close()


# paramiko offers AES-GCM last, yet it is its fastest cipher by far: one pass in OpenSSL and no
# HMAC computed packet by packet, about twice the throughput of aes128-ctr + hmac-sha2-256.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock, **kwargs) -> paramiko.Transport:
    """A paramiko Transport that prefers FAST_CIPHERS (the server's offer still decides)."""
    t = paramiko.Transport(sock, **kwargs)
    options = t.get_security_options()
    options.ciphers = FAST_CIPHERS + tuple(c for c in options.ciphers if c not in FAST_CIPHERS)
    return t


def _key_arguments(c: Credentials) -> dict[str, Any]:
    """paramiko's key arguments: the stored key text, the key file, or both (stored first)."""
    if c.key_text:
        kwargs: dict[str, Any] = {"pkey": _load_pkey(c.key_text, c.passphrase)}
        if c.key_filename:
            kwargs.update(key_filename=_key_file(c.key_filename), passphrase=c.passphrase)
        return kwargs
    if c.key_filename:
        return {"pkey": _load_key_file(c.key_filename, c.passphrase)}
    return {}


def _key_file(path: str) -> str:
    path = os.path.expanduser(path)
    if path.endswith(".pub") and os.path.exists(path[:-4]):
        return path[:-4]
    return path


class Connection:
    """One authenticated SSH connection, shared by the jobs of a worker."""

    def __init__(self, target: Target, credentials: Credentials) -> None:
        self.target = target
        self.credentials = credentials
        self.last_used = time.monotonic()
        self.new_host_key = ""
        self._count_lock = threading.Lock()
        self.channels = 0  # open channels (sessions) on this connection
        self.capacity: int | None = None  # learnt when the server refuses a channel
        self.client = self._open()
        transport = self.client.get_transport()
        assert transport is not None  # connected
        self.transport: paramiko.Transport = transport
        self.transport.set_keepalive(int(drs_settings.KEEPALIVE))

    def _open(self) -> paramiko.SSHClient:
        t, c = self.target, self.credentials
        where = f"{t.hostname}:{t.port}"
        name = host_key_name(t.hostname, t.port)
        known = parse_host_key(t.host_key) if t.host_key.strip() else None
        if t.host_key.strip() and known is None:
            raise HostKeyInvalid(
                f"The host key on record for {name} is not a known_hosts line; nothing was "
                "sent. Replace it with the server's key (manage.py drs_fetch_host_key)."
            )
        keys = _key_arguments(c)  # read before connecting: a bad key file sends nothing
        timeout = float(drs_settings.CONNECT_TIMEOUT)
        try:
            sock = socket.create_connection((t.hostname, t.port), timeout=timeout)
        except socket.gaierror as exc:
            raise ConnectError(f"Unknown host {t.hostname!r}: {exc.strerror}.") from None
        except ConnectionRefusedError:
            raise ConnectError(
                f"Connection refused by {where}: no SSH server on that port?"
            ) from None
        except TimeoutError:
            raise ConnectError(f"Timed out after {timeout:g} s connecting to {where}.") from None
        except OSError as exc:
            raise ConnectError(f"Cannot connect to {where}: {exc.strerror or exc}.") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        policy = _Policy(drs_settings.HOST_KEY_POLICY)
        client.set_missing_host_key_policy(policy)
        if known is not None:
            client.get_host_keys().add(name, known.get_name(), known)
        kwargs: dict[str, Any] = dict(
            username=c.username,
            password=c.password,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            transport_factory=_transport,
            look_for_keys=c.nothing_given,
            allow_agent=c.use_agent or c.nothing_given,
        )
        kwargs.update(keys)
        try:
            client.connect(t.hostname, t.port, **kwargs)
        except paramiko.BadHostKeyException as exc:
            _abandon(client, sock)
            raise HostKeyMismatch(
                f"Host key mismatch for {name}: the server presented {exc.key.get_name()} "
                f"{fingerprint(exc.key)} but {fingerprint(exc.expected_key)} is on record. The "
                "server's key changed or someone is in the middle; nothing was sent. If the "
                "change is expected, update the server's host key."
            ) from None
        except paramiko.AuthenticationException:
            _abandon(client, sock)
            raise AuthError(
                f"Authentication failed for {c.username}@{where} using {c.describe()}."
            ) from None
        except paramiko.PasswordRequiredException:
            _abandon(client, sock)
            raise AuthError(f"The private key {c.key_filename} needs a passphrase.") from None
        except (HostKeyUnknown, AuthError):
            _abandon(client, sock)
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            _abandon(client, sock)
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise AuthError(f"Cannot read the private key file: {exc}") from None
            # A busy sshd drops handshakes beyond MaxStartups: worth another try.
            transient = isinstance(exc, (EOFError, ConnectionResetError)) or "banner" in str(exc)
            raise ConnectError(
                f"SSH handshake with {where} failed: {exc or type(exc).__name__}", transient
            ) from None
        self.new_host_key = policy.new_key
        return client

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    @property
    def has_room(self) -> bool:
        return self.capacity is None or self.channels < self.capacity

    def open_channel(self) -> paramiko.Channel:
        try:
            chan = self.transport.open_session(
                window_size=WINDOW_SIZE, timeout=float(drs_settings.CONNECT_TIMEOUT)
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # paramiko keeps one "last error" per connection, so with concurrent openers a
            # refusal can surface as a bare SSHException: a live connection means refusal.
            if isinstance(exc, paramiko.SSHException) and self.alive:
                self.capacity = max(1, self.channels)  # sshd's MaxSessions, as seen from here
                raise ChannelRefused(str(exc)) from None
            raise ConnectionLost(f"SSH connection to {self.target.hostname} lost: {exc}") from None
        with self._count_lock:
            self.channels += 1
        progress.signal(self.target)
        return chan

    def release_channel(self) -> None:
        with self._count_lock:
            self.channels = max(0, self.channels - 1)
        progress.signal(self.target)

    def close(self) -> None:
        self.client.close()


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
    """Per-process pool of connections, keyed by target and credentials."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[tuple, list[Connection]] = {}
        self._opening: dict[tuple, threading.Lock] = {}

    @staticmethod
    def key(target: Target, credentials: Credentials) -> tuple:
        return (
            target.hostname,
            target.port,
            target.host_key,
            credentials.fingerprint(),
            drs_settings.HOST_KEY_POLICY,
        )

    def _usable(self, key: tuple, exclude) -> Connection | None:
        with self._lock:
            for conn in self._conns.get(key, []):
                if conn.alive and conn.has_room and conn not in exclude:
                    conn.last_used = time.monotonic()
                    return conn
        return None

    def acquire(self, target: Target, credentials: Credentials, exclude=()) -> Connection:
        """A live connection with room for another channel, opened if need be.

        Connections to one target are opened one at a time: a burst of jobs shares the first
        one instead of storming the server (sshd drops handshakes past ``MaxStartups``).
        """
        key = self.key(target, credentials)
        self._evict_idle()
        conn = self._usable(key, exclude)
        if conn is not None:
            return conn
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            conn = self._usable(key, exclude)
            if conn is None:
                conn = self._open(target, credentials)
                with self._lock:
                    self._conns.setdefault(key, []).append(conn)
        return conn

    @staticmethod
    def _open(target: Target, credentials: Credentials) -> Connection:
        """Open a connection; a handshake the server dropped (a busy sshd) is tried again."""
        for delay in (0.1, 0.3, 1.0, None):
            try:
                return Connection(target, credentials)
            except ConnectError as exc:
                if delay is None or not exc.transient:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def discard(self, conn: Connection) -> None:
        with self._lock:
            for conns in self._conns.values():
                if conn in conns:
                    conns.remove(conn)
        conn.close()

    def _evict_idle(self) -> None:
        limit = time.monotonic() - float(drs_settings.POOL_IDLE_TIMEOUT)
        with self._lock:
            stale = [
                c for cs in self._conns.values() for c in cs if c.last_used < limit or not c.alive
            ]
            for conns in self._conns.values():
                conns[:] = [c for c in conns if c not in stale]
        for conn in stale:
            conn.close()

    def clear(self, close: bool = True) -> None:
        with self._lock:
            conns = [c for cs in self._conns.values() for c in cs]
            self._conns.clear()
        if close:
            for conn in conns:
                conn.close()


pool = Pool()
# A forked child (Celery prefork) must not share its parent's sockets and threads.
os.register_at_fork(after_in_child=lambda: pool.clear(close=False))


class SSHTransport(Transport):
    """A job's view of a pooled connection. ``close`` returns it to the pool."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, target: Target, credentials: Credentials) -> SSHTransport:
        return cls(pool.acquire(target, credentials))

    def pop_new_host_key(self) -> str:
        """The key trusted on first use while connecting, handed out once to be stored."""
        key, self.conn.new_host_key = self.conn.new_host_key, ""
        return key

    def _channel(self) -> paramiko.Channel:
        """A new channel: on this connection, else on another one with room (sshd's
        ``MaxSessions``), else waiting for one to be freed: it gives up only after
        ``CONNECT_TIMEOUT`` in which no channel to this host was opened or closed."""
        tried: list[Connection] = []
        renewed = False
        patience = float(drs_settings.CONNECT_TIMEOUT)
        deadline = time.monotonic() + patience
        seen = progress.count(self.conn.target)
        while True:
            try:
                return self.conn.open_channel()
            except ChannelRefused:
                tried.append(self.conn)
                if len(tried) >= 8:  # every connection is busy: wait for a channel to close
                    tried = []
                    progress.wait(self.conn.target, seen, min(0.5, patience))
                now = progress.count(self.conn.target)
                if now != seen:  # the queue moves: keep waiting
                    seen, deadline = now, time.monotonic() + patience
                elif time.monotonic() > deadline:
                    break
                self.conn = pool.acquire(self.conn.target, self.conn.credentials, exclude=tried)
            except ConnectionLost:
                # A pooled connection that died while idle: nothing was sent on it, so one
                # fresh connection may take its place.
                pool.discard(self.conn)
                if renewed:
                    raise
                renewed = True
                self.conn = pool.acquire(self.conn.target, self.conn.credentials, exclude=tried)
        raise RemoteError(f"{self.conn.target.hostname} refused every new SSH channel.")

    def start(self, argv: list[str], stdin: bytes | None = None) -> SSHProcess:
        chan = self._channel()
        try:
            chan.exec_command(command_line(argv))
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            chan.close()
            self.conn.release_channel()
            raise ConnectionLost(
                f"SSH connection to {self.conn.target.hostname} lost: {exc}"
            ) from None
        return SSHProcess(chan, self.conn)

    def open(self, path: str) -> IO[bytes]:
        """The file streamed by ``cat`` on an exec channel: one flow-controlled stream with
        the connection's big window, several times faster than paramiko's SFTP."""
        return cast(IO[bytes], _CatReader(self.start(["sh", "-c", OPEN, "sh", path]), path))

    def close(self) -> None:
        self.conn.last_used = time.monotonic()

    def discard(self) -> None:
        """Drop the underlying connection if it is dead: other jobs' channels may be on it."""
        if not self.conn.alive:
            pool.discard(self.conn)
