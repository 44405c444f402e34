"""The Transport contract on this machine (``remote=False``), through the same scripts.

    with LocalTransport() as t:
        t.run(["echo", "hi"]).stdout   # b"hi\\n"

Commands start in the home directory, as an SSH login would, so relative paths mean the
same thing on both transports.
"""

from __future__ import annotations

import errno
import os
import selectors
import stat
import subprocess
import threading
from typing import IO, cast

from .base import Process, Transport, chunks

READ_SIZE = 1 << 18


class LocalProcess(Process):
    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self._sel = selectors.DefaultSelector()
        assert popen.stdout is not None and popen.stderr is not None  # both are PIPEs
        self._sel.register(popen.stdout, selectors.EVENT_READ, "stdout")
        self._sel.register(popen.stderr, selectors.EVENT_READ, "stderr")
        self._open = 2

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def read(self, timeout: float | None) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        if self._open:
            for key, _ in self._sel.select(timeout):
                pipe = cast(IO[bytes], key.fileobj)
                data = os.read(pipe.fileno(), READ_SIZE)
                if data:
                    out.append((key.data, data))
                else:
                    self._sel.unregister(pipe)
                    pipe.close()
                    self._open -= 1
        if not self._open:
            self.exit_code = self.popen.wait()
        return out

    def close(self) -> None:
        for key in list(self._sel.get_map().values()):
            cast(IO[bytes], key.fileobj).close()
        self._sel.close()
        if self.popen.stdin:
            self.popen.stdin.close()
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def _feed(pipe, stdin: bytes | IO[bytes]) -> None:
    try:
        for data in chunks(stdin):
            pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the command stopped reading: what it got is what it wanted


class LocalTransport(Transport):
    def __init__(self) -> None:
        self.home = os.path.expanduser("~")

    def start(self, argv: list[str], stdin: bytes | IO[bytes] | None = None) -> LocalProcess:
        popen = subprocess.Popen(
            argv,
            cwd=self.home,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if stdin is not None:
            # Fed beside the reads: a command that answers while it reads (``cat``) would
            # otherwise block on a full pipe while we block writing to it.
            threading.Thread(target=_feed, args=(popen.stdin, stdin), daemon=True).start()
        return LocalProcess(popen)

    def open(self, path: str) -> IO[bytes]:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block the open
        try:
            fd = os.open(os.path.join(self.home, path), flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "a symbolic link") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def close(self) -> None:
        pass
