"""A command on an SSH channel: its command line, its output as it arrives, a remote file.

    chan.exec_command(command_line(["cat", "--", path]))
    proc = SSHProcess(chan, conn)       # proc.read(timeout) -> [("stdout", b"..."), ...]

Every command first prints a marker on both of its streams: what comes before it is what the
login shell printed on starting (a chatty ``~/.bashrc``) and is dropped.
"""

from __future__ import annotations

import errno
import io
import os
import select
import shlex
from typing import TYPE_CHECKING

import paramiko

from ..conf import drs_settings
from .base import (
    ConnectionLost,
    Process,
    RemoteError,
)

if TYPE_CHECKING:
    from .ssh import Connection

READ_SIZE = 1 << 18
READ_BUDGET = 1 << 20  # bytes taken per stream and read at most, whatever the host sends
# What a file reader takes from the channel at once: all paramiko holds (at most the SSH
# window). paramiko's buffer gives out its head by moving the rest to the front, so reading
# it in small pieces while it is full costs a copy of the whole buffer per piece.
TAKE_ALL = 1 << 22  # above the SSH window (ssh.WINDOW_SIZE)


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


def _wait_readable(ch: paramiko.Channel, timeout: float | None) -> None:
    """Until ``ch`` has something to read, or ``timeout`` seconds. ``poll``, not ``select``:
    a worker running many jobs holds over 1024 descriptors, and ``select`` refuses those."""
    if not hasattr(select, "poll"):  # Windows: paramiko's channel pipe is a socket there
        select.select([ch], [], [], timeout)
        return
    poller = select.poll()
    poller.register(ch.fileno(), select.POLLIN)
    poller.poll(None if timeout is None else max(0.0, timeout) * 1000)


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
            _wait_readable(ch, timeout)
        out: list[tuple[str, bytes]] = []
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
            data = recv(READ_BUDGET - taken)  # one piece: see TAKE_ALL
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
        self.pending, self.at = b"", 0  # taken from the channel; read up to ``at``

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
        if self.at >= len(self.pending):
            self.pending, self.at = b"", 0
            while data := self._recv(TAKE_ALL):
                if data := self.proc.out.cut(data):
                    self.pending = data
                    break
        if self.at < len(self.pending):
            at, self.at = self.at, self.at + n
            if at == 0 and n >= len(self.pending):
                return self.pending  # the whole piece: no copy
            with memoryview(self.pending) as view:
                return bytes(view[at : self.at])
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
