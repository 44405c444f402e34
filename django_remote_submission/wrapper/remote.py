"""2.1.0's ``RemoteWrapper`` on today's SSH transport and key helpers (deprecated).

    wrapper = RemoteWrapper(hostname="hpc.example.org", username="ada", port=22)
    with wrapper.connect(password="..."):
        wrapper.deploy_key_if_it_does_not_exist()      # the worker's key: keys.add_to
    with wrapper.connect():                            # logs in with that key
        wrapper.chdir("jobs/1")                        # created if missing
        with wrapper.open("job.py", "wt") as f:
            f.write('print("hi")')
        wrapper.exec_command(["python3", "job.py"], "jobs/1", stdout_handler=print)

Use instead: ``remote.open_transport`` (``run``, ``start``, ``open``), the tasks
``copy_key_to_server`` / ``delete_key_from_server`` (or ``keys.deploy`` / ``keys.remove``).

As in 2.1.0, every ``connect`` logs in anew, on a connection of its own (a key removed from
the host is refused at the next ``connect``), and a refused login raises ``ValueError``
("incorrect password", "incorrect public key"). Without a password it logs in with
``public_key_filename`` or the worker's default key (``keys.public_key_file``). Unlike 2.1.0,
the host key is checked with ``DRS["HOST_KEY_POLICY"]`` against the key on record on a
``Server`` of this hostname and port (2.1.0 accepted any key).
"""

from __future__ import annotations

import codecs
import io
import posixpath
import stat
import warnings
from collections import namedtuple
from datetime import timedelta
from typing import Any

from django.utils.timezone import now

from .. import keys
from ..launchers.direct import sh
from ..models import Server
from ..remote import AuthError, Credentials, RemoteError, Target, Transport
from ..remote.ssh import Connection, SSHTransport

# What ``listdir_attr`` returns for each entry (the fields 2.1.0's callers read).
Attr = namedtuple("Attr", ["filename", "st_size", "st_mode", "st_mtime"])

# Args: directory. One NUL-terminated record per entry: name, size, type, mode, mtime.
LIST = r"""
cd -- "$1" || exit 1
find . -mindepth 1 -maxdepth 1 -printf '%P\0%s\0%y\0%m\0%T@\0'
"""
# Args: path, "w" or "a". stdin: the content.
WRITE = r"""
if [ "$2" = a ]; then exec cat >> "$1"; else exec cat > "$1"; fi
"""
# Args: directory, argv...
RUN_IN = r"""
cd -- "$1" || exit 1
shift
exec "$@"
"""

_TYPES = {
    b"f": stat.S_IFREG,
    b"d": stat.S_IFDIR,
    b"l": stat.S_IFLNK,
    b"p": stat.S_IFIFO,
    b"s": stat.S_IFSOCK,
    b"c": stat.S_IFCHR,
    b"b": stat.S_IFBLK,
}


class _OwnConnection(SSHTransport):
    """An SSH transport on a connection of its own, never pooled, closed with it."""

    def __init__(self, target: Target, credentials: Credentials) -> None:
        super().__init__(Connection(target, credentials))

    def close(self) -> None:
        self.conn.close()


class _Upload(io.BytesIO):
    """A file opened for writing: its bytes are written on the host when it is closed."""

    def __init__(self, transport: Transport, path: str, mode: str) -> None:
        super().__init__()
        self._transport, self._path, self._mode = transport, path, mode

    def close(self) -> None:
        if self.closed:
            return
        data = self.getvalue()
        super().close()
        res = self._transport.run(sh(WRITE, self._path, self._mode), stdin=data)
        if res.exit_code:
            raise OSError(f"Cannot write {self._path} on the host: {res.error_text}")


class RemoteWrapper:
    """2.1.0's SSH helper (deprecated: use ``remote.open_transport`` and ``keys``)."""

    replacement = (
        "django_remote_submission.remote.open_transport, and the tasks copy_key_to_server "
        "and delete_key_from_server for keys"
    )

    def __init__(self, hostname: str, username: str, port: int = 22) -> None:
        warnings.warn(
            f"{type(self).__name__} is deprecated: use {self.replacement}.",
            DeprecationWarning,
            stacklevel=2,
        )
        self.hostname = hostname
        self.username = username
        self.port = port
        self._start = self.workdir = self._start_directory()
        self._transport: Transport | None = None
        self._public_key_filename: str | None = None

    def __enter__(self) -> RemoteWrapper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self, password: str | None = None, public_key_filename: str | None = None):
        """Log in with ``password``, else with the key; returns the wrapper (``with`` it)."""
        self.close()
        self._public_key_filename = public_key_filename
        self._transport = self._login(password, public_key_filename)
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def chdir(self, remote_directory: str) -> None:
        """Go to ``remote_directory`` (relative to the current one), created if missing."""
        path = self._path(remote_directory)
        res = self._connected().run(["mkdir", "-p", "--", path])
        if res.exit_code:
            raise OSError(f"Cannot create {path} on the host: {res.error_text}")
        self.workdir = path

    def open(self, filename: str, mode: str = "r"):
        """A file of the current directory; written on the host when closed (``w``, ``a``)."""
        path = self._path(filename)
        f: Any
        if "w" in mode or "a" in mode:
            f = _Upload(self._connected(), path, "a" if "a" in mode else "w")
        else:
            f = self._connected().open(path)
            if isinstance(f, io.RawIOBase):
                f = io.BufferedReader(f)
        return f if "b" in mode else io.TextIOWrapper(f, encoding="utf-8")

    def listdir_attr(self) -> list[Attr]:
        """The entries of the current directory: ``filename``, ``st_size``, ``st_mode``,
        ``st_mtime`` (seconds)."""
        res = self._connected().run(sh(LIST, self.workdir))
        if res.exit_code:
            raise OSError(f"Cannot list {self.workdir} on the host: {res.error_text}")
        fields = res.stdout.split(b"\0")[:-1]
        return [
            Attr(
                name.decode(errors="surrogateescape"),
                int(size),
                _TYPES.get(kind, 0) | int(mode, 8),
                float(mtime),
            )
            for name, size, kind, mode, mtime in zip(*[iter(fields)] * 5, strict=True)
        ]

    def exec_command(
        self, args, workdir, timeout=None, stdout_handler=None, stderr_handler=None
    ) -> bool:
        """Run ``args`` in ``workdir``; hand its output to ``stdout_handler(now, text)`` and
        ``stderr_handler(now, text)`` as it arrives; True if it exited with status 0."""
        argv = [str(a) for a in args]
        if timeout is not None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            argv = ["timeout", f"{seconds}s", *argv]
        handlers = {"stdout": stdout_handler, "stderr": stderr_handler}
        decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in handlers}
        proc = self._connected().start(sh(RUN_IN, self._path(workdir, base=True), *argv))
        try:
            while not proc.done:
                for stream, data in proc.read(1.0):
                    _hand(handlers[stream], decoders[stream].decode(data))
        finally:
            proc.close()
        for stream, decoder in decoders.items():
            _hand(handlers[stream], decoder.decode(b"", final=True))
        return proc.exit_code == 0

    def deploy_key_if_it_does_not_exist(self) -> None:
        """Add the public key (``connect``'s ``public_key_filename``, else the worker's) to
        the login's ``~/.ssh/authorized_keys``, unless it is there."""
        keys.add_to(self._connected(), self._public_key_filename, self.hostname)

    def delete_key(self) -> None:
        """Remove that public key from the login's ``~/.ssh/authorized_keys``."""
        keys.remove_from(self._connected(), self._public_key_filename, self.hostname)

    # --- what LocalWrapper changes --------------------------------------------------------

    def _start_directory(self) -> str:
        return self._home()

    def _home(self) -> str:
        return "."  # SSH commands start in the login's home

    def _login(self, password: str | None, public_key_filename: str | None) -> Transport:
        if password is not None:
            creds = Credentials(self.username, password=password)
        else:
            try:
                key = keys.public_key_file(public_key_filename)
            except RemoteError as exc:
                raise ValueError(
                    f"To connect to the server you need either a password or your public key: {exc}"
                ) from None
            creds = Credentials(self.username, key_filename=key)
        server = Server.objects.filter(hostname=self.hostname, port=self.port).first()
        target = Target(
            self.hostname,
            self.port,
            server.host_key if server else "",
            name=server.title if server else "",
        )
        try:
            transport = _OwnConnection(target, creds)
        except AuthError as exc:
            reason = "incorrect password" if password is not None else "incorrect public key"
            raise ValueError(reason) from exc
        new_key = transport.pop_new_host_key()
        if new_key and server is not None and not server.host_key:
            Server.objects.filter(pk=server.pk, host_key="").update(host_key=new_key)
        return transport

    def _path(self, path: str, base: bool = False) -> str:
        """``path`` relative to the current directory (``base``: to the start directory)."""
        if path == "~" or path.startswith("~/"):
            return posixpath.join(self._home(), path[2:])
        return posixpath.join(self._start if base else self.workdir, path)

    def _connected(self) -> Transport:
        if self._transport is None:
            raise ValueError("The wrapper must be connected first (connect()).")
        return self._transport


def _hand(handler, text: str) -> None:
    if handler is not None and text:
        handler(now(), text)
