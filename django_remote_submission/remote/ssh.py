"""SSH transport (paramiko) with a per-process pool of authenticated connections.

    t = SSHTransport.connect(Target("hpc", 22, host_key_line), Credentials("ada", password="..."))
    t.run(["id", "-un"]).text    # "ada\\n"
    t.close()                    # gives the connection back to the pool

Connections are shared by the jobs of a worker (``pool``): opening a channel on a warm
connection costs one round trip instead of a TCP connect, a key exchange and an
authentication. A connection that fails is dropped from the pool; a full one (sshd's
``MaxSessions``) is joined by a new one.
"""

from __future__ import annotations

import io
import logging
import os
import socket
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
    chunks,
)
from .channel import OPEN, SSHProcess, _CatReader, command_line
from .hostkeys import (  # noqa: F401  (fetch_host_key: this module's API too)
    _Policy,
    fetch_host_key,
    fingerprint,
    host_key_name,
    parse_host_key,
)
from .pool import Pool, progress

logger = logging.getLogger(__name__)

# What the host may send before we read it: OpenSSH's own client's window (2 MiB). A 16 MiB
# window made a 200 MiB fetch slower (1.3 s against 0.65 s, medians) and sometimes much slower:
# paramiko's buffer then grows big and is copied around as it is read.
WINDOW_SIZE = 2 * 1024 * 1024


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
        # Counted by the pool, under its lock:
        self.opened_channels = 0  # channels (sessions) open on this connection
        self.reserved = 0  # channels about to be opened
        self.capacity = int(drs_settings.SSH_MAX_SESSIONS)  # the pool's, or learnt
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
    def free(self) -> int:
        return self.capacity - self.opened_channels - self.reserved

    @property
    def busy(self) -> bool:
        return bool(self.opened_channels or self.reserved)

    def open_channel(self) -> paramiko.Channel:
        """A new session channel (its slot reserved in the pool beforehand)."""
        try:
            chan = self.transport.open_session(
                window_size=WINDOW_SIZE, timeout=float(drs_settings.CONNECT_TIMEOUT)
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # paramiko keeps one "last error" per connection, so with concurrent openers a
            # refusal can surface as a bare SSHException: a live connection means refusal.
            if isinstance(exc, paramiko.SSHException) and self.alive:
                pool.refused(self)  # sshd's MaxSessions, as seen from here
                raise ChannelRefused(str(exc)) from None
            raise ConnectionLost(f"SSH connection to {self.target.hostname} lost: {exc}") from None
        return chan

    def release_channel(self) -> None:
        pool.count(self, opened=-1)
        progress.signal(self.target)

    def close(self) -> None:
        self.client.close()


pool = Pool(Connection)
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
        """A new channel on a connection with room (sshd's ``MaxSessions``; a new connection
        if none has), else waiting for one to be freed: it gives up only after
        ``CONNECT_TIMEOUT`` in which no channel to this host was opened or closed."""
        target, credentials = self.conn.target, self.conn.credentials
        tried: list[Connection] = []
        renewed = False
        patience = float(drs_settings.CONNECT_TIMEOUT)
        deadline = time.monotonic() + patience
        seen = progress.count(target)
        while True:
            conn = self.conn  # its own connection first (a transport may not be pooled)
            if conn in tried or not pool.take(conn):
                self.conn = conn = pool.reserve(target, credentials, exclude=tried)
            try:
                chan = conn.open_channel()
            except ChannelRefused:
                pool.count(conn, reserved=-1)
                tried.append(conn)
                if len(tried) >= 8:  # every connection is busy: wait for a channel to close
                    tried = []
                    progress.wait(target, seen, min(0.5, patience))
                now = progress.count(target)
                if now != seen:  # the queue moves: keep waiting
                    seen, deadline = now, time.monotonic() + patience
                elif time.monotonic() > deadline:
                    break
                continue
            except ConnectionLost:
                # A pooled connection that died while idle: nothing was sent on it, so one
                # fresh connection may take its place.
                pool.count(conn, reserved=-1)
                pool.discard(conn)
                if renewed:
                    raise
                renewed = True
                continue
            pool.count(conn, reserved=-1, opened=1)
            progress.signal(target)
            return chan
        raise RemoteError(f"{target.hostname} refused every new SSH channel.")

    def start(self, argv: list[str], stdin: bytes | IO[bytes] | None = None) -> SSHProcess:
        chan = self._channel()
        try:
            chan.exec_command(command_line(argv))
            if stdin is not None:
                for data in chunks(stdin):
                    chan.sendall(data)
                chan.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if stdin is not None and chan.exit_status_ready():
                # The command ended before it read all its input: its status says why.
                return SSHProcess(chan, self.conn)
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
