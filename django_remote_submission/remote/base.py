"""The Transport contract every way of reaching a host fulfils, and its typed errors.

    with transport:
        result = transport.run(["mkdir", "-p", "/tmp/x"])       # Completed(exit_code, ...)
        proc = transport.start(["sh", "-c", script, "sh", arg])  # streamed output
        while not proc.done:
            for stream, data in proc.read(timeout=1.0): ...
        with transport.open("/tmp/x/out.dat") as f: ...         # streamed download

Commands are argument lists. A transport that needs a shell (SSH) quotes every word, so
no field of a job is ever interpreted by a shell.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO


class RemoteError(Exception):
    """Something went wrong on the way to or on the host; the message is for humans."""


class ConnectError(RemoteError):
    """The host could not be reached: unknown name, refused, timed out, not SSH.

    ``transient``: the server dropped the handshake (overload); trying again may work.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class AuthError(RemoteError):
    """The host refused the credentials."""


class HostKeyUnknown(RemoteError):
    """The host's key is not known and the policy forbids trusting it."""


class HostKeyMismatch(RemoteError):
    """The host presented a key other than the one on record."""


class HostKeyInvalid(RemoteError):
    """The host key on record cannot be read: no key is trusted, whatever the policy."""


class ConnectionLost(RemoteError):
    """An established connection broke; the caller may reconnect and resume."""


class ChannelRefused(RemoteError):
    """The server refused another channel on this connection (sshd's MaxSessions)."""


class OutputTooLarge(RemoteError):
    """A command printed more than the caller was prepared to read."""


# What ``Transport.run`` reads of a command's output at most, unless told otherwise.
OUTPUT_LIMIT = 1 << 20
# Bytes of a file given as a command's stdin sent at a time.
STDIN_CHUNK = 1 << 20
# Longest wait between two calls of a ``tick`` callback while waiting for a command.
TICK_INTERVAL = 1.0


@dataclass(frozen=True)
class Target:
    """Where to connect, and the host key on record (known_hosts-style line or "").

    ``name``: what the host is called where it is reported (the server's title), else
    ``hostname:port``.
    """

    hostname: str
    port: int = 22
    host_key: str = ""
    name: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return self.name or f"{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """How to log in. ``repr`` never shows a secret."""

    username: str
    password: str | None = field(default=None, repr=False)
    key_filename: str | None = None
    key_text: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    use_agent: bool = False

    def fingerprint(self) -> str:
        """A digest telling credentials apart (for pooling); not reversible."""
        h = hashlib.sha256()
        for part in (
            self.username,
            self.password,
            self.key_filename,
            self.key_text,
            self.passphrase,
            str(self.use_agent),
        ):
            h.update(b"\0" + (part or "").encode())
        return h.hexdigest()

    @property
    def nothing_given(self) -> bool:
        """No secret at all: fall back to the worker's own keys and agent, as ``ssh`` would."""
        return not (self.password or self.key_filename or self.key_text or self.use_agent)

    def describe(self) -> str:
        ways = [
            name
            for name, on in (
                ("password", self.password),
                ("key file", self.key_filename),
                ("stored key", self.key_text),
                ("ssh-agent", self.use_agent),
            )
            if on
        ]
        return " and ".join(ways) or "the worker's own keys"


@dataclass
class Completed:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode(errors="replace").strip()


class Watcher:
    """What the SSH pool reports as it works; nothing here. ``remote.watch(w)`` installs
    another (the app's Prometheus metrics do). Called often: keep each call cheap."""

    def connected(self, target: Target, seconds: float) -> None:
        """A connection opened (TCP, key exchange, login) in ``seconds``, retries included."""

    def connect_failed(self, target: Target, error: RemoteError) -> None:
        """A connection could not be opened (after retrying a dropped handshake)."""

    def connections(self, target: Target, delta: int) -> None:
        """Connections in the pool changed by ``delta``."""

    def channels(self, target: Target, delta: int) -> None:
        """Channels open on the pool's connections changed by ``delta``."""


def chunks(stdin: bytes | IO[bytes]):
    """``stdin`` of ``Transport.start`` in pieces of at most ``STDIN_CHUNK`` bytes."""
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        yield stdin
        return
    while data := stdin.read(STDIN_CHUNK):
        yield data


class Process(ABC):
    """A command started on the host whose stdout and stderr arrive as they are written."""

    exit_code: int | None = None

    @property
    @abstractmethod
    def done(self) -> bool:
        """Both streams are at their end and the exit code is known."""

    @abstractmethod
    def read(self, timeout: float | None) -> list[tuple[str, bytes]]:
        """Wait up to ``timeout`` s for output; return ``[("stdout"|"stderr", bytes), ...]``."""

    @abstractmethod
    def close(self) -> None:
        """Stop watching (the command itself may go on)."""

    def wait(
        self,
        timeout: float | None = None,
        limit: int = OUTPUT_LIMIT,
        tick: Callable[[], object] | None = None,
    ) -> Completed:
        """Read to the end and return everything.

        ``timeout`` bounds the whole wait, ``limit`` the bytes read (``OutputTooLarge``
        beyond it); ``tick()`` is called at least every ``TICK_INTERVAL`` s meanwhile.
        """
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        deadline = None if timeout is None else time.monotonic() + timeout
        size = 0
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RemoteError(f"a command on the host did not finish within {timeout:g} s")
            if tick is not None:
                left = TICK_INTERVAL if left is None else min(left, TICK_INTERVAL)
            for stream, data in self.read(left):
                size += len(data)
                if size > limit:
                    raise OutputTooLarge(f"a command on the host printed more than {limit} bytes")
                out[stream].append(data)
            if tick is not None:
                tick()
        return Completed(
            self.exit_code if self.exit_code is not None else -1,
            b"".join(out["stdout"]),
            b"".join(out["stderr"]),
        )


class Transport(ABC):
    """A session with one host. Use as a context manager; ``close`` releases it.

    A command's output is only what the command printed: whatever the login shell prints
    before it starts (a chatty ``~/.bashrc``) is never part of it.
    """

    @abstractmethod
    def start(self, argv: list[str], stdin: bytes | IO[bytes] | None = None) -> Process:
        """Start ``argv``; ``stdin`` (if given) is sent and then closed. A binary file is
        sent in chunks of ``STDIN_CHUNK`` bytes as it is read (bounded memory): the command
        should read all of it before it prints much."""

    def run(
        self,
        argv: list[str],
        stdin: bytes | IO[bytes] | None = None,
        timeout: float | None = 120.0,
        limit: int = OUTPUT_LIMIT,
        tick: Callable[[], object] | None = None,
    ) -> Completed:
        """Run ``argv`` to its end; see ``Process.wait`` for ``timeout``, ``limit``, ``tick``."""
        proc = self.start(argv, stdin)
        try:
            return proc.wait(timeout, limit, tick)
        finally:
            proc.close()

    @abstractmethod
    def open(self, path: str) -> IO[bytes]:
        """Stream a regular file of the host (a symbolic link is refused: OSError).

        Reads fail with OSError when the file cannot be read or when the host sends
        nothing for ``DRS["HOST_READ_TIMEOUT"]`` seconds.
        """

    @abstractmethod
    def close(self) -> None: ...

    def pop_new_host_key(self) -> str:
        """A host key trusted on first use while connecting, handed out once to be stored."""
        return ""

    def discard(self) -> None:  # noqa: B027 (a hook: nothing to drop by default)
        """After a lost connection: drop what cannot be used again."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
