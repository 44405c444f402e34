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

import errno
import io
import logging
import os
import select
import shlex
import socket
import threading
import time
from base64 import b64decode, b64encode
from hashlib import sha256
from typing import IO

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
    Process,
    RemoteError,
    Target,
    Transport,
    chunks,
)

logger = logging.getLogger(__name__)

WINDOW_SIZE = 16 * 1024 * 1024
READ_SIZE = 1 << 18
READ_BUDGET = 1 << 20
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def parse_host_key(line: str) -> paramiko.PKey | None:
    """The key of a known_hosts-style line (``[host]:port type base64`` or ``type base64``)."""
    words = line.split()
    while words and not words[0].startswith(_KEY_TYPES):
        words.pop(0)
    if len(words) < 2:
        return None
    try:
        return paramiko.PKey.from_type_string(words[0], b64decode(words[1]))
    except Exception:
        return None


def host_key_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint."""
    return "SHA256:" + b64encode(sha256(key.asbytes()).digest()).decode().rstrip("=")


def fetch_host_key(hostname: str, port: int = 22) -> tuple[str, str]:
    """(known_hosts line, SHA256 fingerprint) of the host's key; no login is attempted."""
    timeout = float(drs_settings.CONNECT_TIMEOUT)
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except OSError as exc:
        raise ConnectError(f"Cannot connect to {hostname}:{port}: {exc}") from None
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as exc:
        raise ConnectError(f"SSH handshake with {hostname}:{port} failed: {exc}") from None
    finally:
        t.close()
    return f"{host_key_name(hostname, port)} {key.get_name()} {key.get_base64()}", fingerprint(key)


class _Policy(paramiko.MissingHostKeyPolicy):
    """Unknown host keys: reject, trust on first use, or warn (``DRS['HOST_KEY_POLICY']``)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.new_key: str = ""

    def missing_host_key(self, client, hostname, key) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}"
        if self.policy == "auto_add":
            self.new_key = line
        elif self.policy == "warn":
            logger.warning("Unverified host key for %s: %s", hostname, fingerprint(key))
        else:
            raise HostKeyUnknown(
                f"The host key of {hostname} ({key.get_name()} {fingerprint(key)}) is not on "
                "record. Confirm it and store it on the server (manage.py drs_fetch_host_key), "
                "or set DRS['HOST_KEY_POLICY'] = 'auto_add' to trust it on first use."
            )


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


def _key_arguments(c: Credentials) -> dict:
    """paramiko's key arguments: the stored key text, the key file, or both (stored first)."""
    if c.key_text:
        kwargs = {"pkey": _load_pkey(c.key_text, c.passphrase)}
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
        self.transport: paramiko.Transport = self.client.get_transport()
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
        kwargs = dict(
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
        return chan

    def release_channel(self) -> None:
        with self._count_lock:
            self.channels = max(0, self.channels - 1)

    def close(self) -> None:
        self.client.close()


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


# Every command first prints this marker on both of its streams; whatever comes before it is
# what the login shell printed on starting (a chatty ``~/.bashrc``) and is dropped.
MARK = f"drs-{os.urandom(6).hex()}-go".encode()
_LEAD = f"printf %s {MARK.decode()}; printf %s {MARK.decode()} >&2; "
PRELUDE_LIMIT = 64 * 1024  # what a login shell may print before the marker


def command_line(argv: list[str]) -> str:
    """The shell command line that runs ``argv`` behind the marker, every word quoted."""
    if len(argv) >= 3 and argv[:2] == ["sh", "-c"]:
        return shlex.join(["sh", "-c", _LEAD + argv[2], *argv[3:]])
    return shlex.join(["sh", "-c", _LEAD + 'exec "$@"', "sh", *argv])


class _Prelude:
    """Cuts one stream of a command at the marker: only what follows it is the command's."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.started = False
        self.seen = bytearray()

    def cut(self, data: bytes) -> bytes:
        if self.started:
            return data
        self.seen += data
        at = self.seen.find(MARK)
        if at < 0:
            if len(self.seen) > PRELUDE_LIMIT + len(MARK):
                raise RemoteError(
                    f"The login shell on {self.host} printed more than {PRELUDE_LIMIT} bytes "
                    "before running the command: check the shell's start-up files (~/.bashrc)."
                )
            return b""
        self.started = True
        rest = bytes(self.seen[at + len(MARK) :])
        self.seen = bytearray()
        return rest

    def never_started(self, exit_code: int | None) -> RemoteError:
        said = " ".join(self.seen[-300:].decode(errors="replace").split())
        return RemoteError(
            f"The login shell on {self.host} exited (status {exit_code}) before running the "
            f"command" + (f": {said}" if said else ".")
        )


class SSHProcess(Process):
    def __init__(self, chan: paramiko.Channel, conn: Connection) -> None:
        self.chan = chan
        self.conn = conn
        self._done = False
        self._closed = False
        self.out = _Prelude(conn.target.hostname)
        self.err = _Prelude(conn.target.hostname)

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float | None) -> list[tuple[str, bytes]]:
        ch = self.chan
        if not (ch.recv_ready() or ch.recv_stderr_ready() or ch.eof_received or ch.closed):
            select.select([ch], [], [], timeout)
        out = []
        # Seen before the buffers are drained: paramiko buffers a channel's data before it
        # marks its EOF, so once EOF is seen here, this drain takes everything that is left.
        # (Checked after the drain, data arriving just before the EOF would be left behind.)
        ended = ch.eof_received or ch.closed
        got = 0  # bytes taken: READ_BUDGET per stream and call at most
        try:
            got += self._take(ch.recv_ready, ch.recv, self.out, "stdout", out)
            got += self._take(ch.recv_stderr_ready, ch.recv_stderr, self.err, "stderr", out)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            # Reading may send a window adjustment, which fails on a dead connection.
            raise self.lost(exc) from None
        if got or not ended:
            if not got and not self.conn.alive:
                raise self.lost()
            return out
        # All output is in; the exit status may trail the EOF by a packet. A channel closed
        # because the connection died also wakes this wait, without a status.
        # Every command we run exits with a status, so a channel closed without one means the
        # session or the link died.
        ch.status_event.wait(timeout if timeout is not None else 30)
        if ch.exit_status == -1:
            if ch.closed or not self.conn.alive:
                raise self.lost()
            return out
        if not self.out.started:
            raise self.out.never_started(ch.exit_status)
        self.exit_code = ch.exit_status
        self._done = True
        return out

    @staticmethod
    def _take(ready, recv, prelude: _Prelude, stream: str, out: list) -> int:
        taken = 0
        while ready() and taken < READ_BUDGET:
            data = recv(READ_SIZE)
            taken += len(data)
            if data := prelude.cut(data):
                out.append((stream, data))
        return taken

    def lost(self, exc: BaseException | None = None) -> ConnectionLost:
        detail = f": {exc}" if exc is not None and str(exc) else ""
        return ConnectionLost(f"SSH connection to {self.conn.target.hostname} lost{detail}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.chan.close()
            except (EOFError, OSError, paramiko.SSHException):
                pass  # the connection is gone already: nothing left to close
            self.conn.release_channel()


# Streams a regular file; a symbolic link or anything else is refused with a message.
OPEN = r"""
[ -L "$1" ] && { echo "a symbolic link" >&2; exit 3; }
[ -e "$1" ] && [ ! -f "$1" ] && { echo "not a regular file" >&2; exit 3; }
exec cat -- "$1"
"""


class _CatReader(io.RawIOBase):
    """``read`` of a remote file through ``cat``; OSError if cat fails (missing, unreadable)
    or the host sends nothing for ``HOST_READ_TIMEOUT`` seconds."""

    def __init__(self, proc: SSHProcess, path: str) -> None:
        self.proc, self.path = proc, path
        self.timeout = float(drs_settings.HOST_READ_TIMEOUT)
        proc.chan.settimeout(self.timeout)

    def readable(self) -> bool:
        return True

    def _recv(self, n: int) -> bytes:
        try:
            return self.proc.chan.recv(n)
        except TimeoutError:
            raise OSError(
                errno.ETIMEDOUT, f"the host sent nothing for {self.timeout:g} s"
            ) from None
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise self.proc.lost(exc) from None

    def read(self, n: int = -1) -> bytes:
        ch = self.proc.chan
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(READ_SIZE), b""))
        while data := self._recv(n):
            if data := self.proc.out.cut(data):
                return data
        if not ch.status_event.wait(self.timeout) or ch.exit_status == -1:
            raise self.proc.lost()
        if not self.proc.out.started:
            raise self.proc.out.never_started(ch.exit_status)
        if ch.exit_status != 0:
            err = b""
            while ch.recv_stderr_ready() and len(err) < 4096:
                err += self.proc.err.cut(ch.recv_stderr(4096))
            message = err.decode(errors="replace").strip().rpartition(": ")[2]
            raise OSError(errno.EIO, message or f"cat exited with status {ch.exit_status}")
        return b""

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.proc.close()
        super().close()


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
        ``MaxSessions``), trying again for up to ``CONNECT_TIMEOUT`` while channels are busy."""
        tried: list[Connection] = []
        renewed = False
        deadline = time.monotonic() + float(drs_settings.CONNECT_TIMEOUT)
        delay = 0.01
        while True:
            try:
                return self.conn.open_channel()
            except ChannelRefused:
                tried.append(self.conn)
                if time.monotonic() > deadline:
                    break
                if len(tried) >= 8:  # every connection is busy: wait for a channel to close
                    tried = []
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
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
        return _CatReader(self.start(["sh", "-c", OPEN, "sh", path]), path)

    def close(self) -> None:
        self.conn.last_used = time.monotonic()

    def discard(self) -> None:
        """Drop the underlying connection if it is dead: other jobs' channels may be on it."""
        if not self.conn.alive:
            pool.discard(self.conn)
