"""How a host is reached: one small contract (``base.Transport``), two implementations.

    from django_remote_submission.remote import open_transport
    with open_transport(Target("hpc.example.org"), Credentials("ada", password="...")) as t:
        t.run(["uname", "-a"]).stdout

Nothing in this package knows about Django models.
"""

from .base import (  # noqa: F401
    AuthError,
    Completed,
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
    Watcher,
)


def open_transport(target, credentials, remote: bool = True) -> "Transport":
    """A transport to ``target`` (over SSH), or to this machine when ``remote`` is false."""
    if not remote:
        from .local import LocalTransport

        return LocalTransport()
    from .ssh import SSHTransport

    return SSHTransport.connect(target, credentials)


def watch(watcher: Watcher) -> None:
    """Report what the SSH pool does (connects, failures, connections and channels in use)
    to ``watcher`` from now on, in this process."""
    from .ssh import pool

    pool.watcher = watcher
