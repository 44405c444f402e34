"""2.1.0's ``LocalWrapper``: ``RemoteWrapper``'s methods on this machine (deprecated).

    wrapper = LocalWrapper(hostname="localhost", username="ada")
    with wrapper.connect():                    # nothing to log in to
        wrapper.chdir("jobs/1")                # relative to the current directory
        wrapper.exec_command(["python3", "job.py"], "jobs/1", stdout_handler=print)

Use instead: ``remote.open_transport(target, credentials, remote=False)``. Commands run as
the worker's user through ``remote.local.LocalTransport``; as in 2.1.0, relative paths
start from the process's current directory, and ``hostname`` and ``username`` are unused.
The key methods edit this user's own ``~/.ssh/authorized_keys``.
"""

from __future__ import annotations

import os

from ..remote import Transport
from ..remote.local import LocalTransport
from .remote import RemoteWrapper


class LocalWrapper(RemoteWrapper):
    """2.1.0's helper for this machine (deprecated: use ``remote.open_transport``)."""

    replacement = "django_remote_submission.remote.open_transport(..., remote=False)"

    def _start_directory(self) -> str:
        return os.getcwd()

    def _home(self) -> str:
        return os.path.expanduser("~")

    def _login(self, password: str | None, public_key_filename: str | None) -> Transport:
        return LocalTransport()
