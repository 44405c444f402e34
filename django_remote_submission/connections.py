"""Logging in to a server: the credentials of a run, and opening a transport with them.

    creds = connections.credentials_for(job, "secret", {"login_with": "password"})
    with connections.connect(job.server, creds) as t:
        t.run(["id", "-un"])

The runner, the admin's connection test and the key helpers come here, so that a run logs in
exactly as the policy decided when it was submitted (``options["login_with"]``, see
``policy.LOGIN_WITH``). A run submitted through the Python API without ``login_with`` logs in
as 2.1.0 did: the password or key file given, else the server's stored key, its ssh-agent and
the worker's own keys.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from . import policy
from .credentials import UNREADABLE, is_unreadable
from .models import Job, Server, ServerAccount
from .remote import (
    AuthError,
    Credentials,
    HostKeyInvalid,
    HostKeyUnknown,
    Target,
    Transport,
    open_transport,
)


def _readable(secret: str, what: str) -> str | None:
    if is_unreadable(secret):
        raise AuthError(f"{what} cannot be read ({UNREADABLE}).")
    return secret or None


def shared_credentials(server: Server, login: str, password: str | None = None) -> Credentials:
    """The server's stored key and ssh-agent (and, with no secret at all, the worker's keys)."""
    return Credentials(
        login,
        password=password or None,
        key_text=_readable(server.private_key, f"The stored private key of {server.title}"),
        passphrase=_readable(server.private_key_passphrase, f"The passphrase of {server.title}"),
        use_agent=server.use_agent,
    )


def credentials_for(job: Job, password: str | None = None, options: dict | None = None):
    """How a run of ``job`` logs in, from the options it was submitted with."""
    options = options if options is not None else (job.options or {})
    server = job.server
    account = ServerAccount.objects.filter(user_id=job.owner_id, server=server).first()
    login = (
        options.get("username")
        or (account.username if account else "")
        or server.username
        or job.owner.get_username()
    )
    how = options.get("login_with")
    key_filename = options.get("key_filename") or None
    if how == policy.PASSWORD:
        return Credentials(login, password=password or None)
    if how == policy.ACCOUNT:
        if account is None or not account.private_key:
            raise AuthError(
                f"{job.owner} has no key for {server.title} any more: make one on the "
                "“My SSH keys” page, or submit with a password."
            )
        key = _readable(account.private_key, f"The key of {account} (make a new one)")
        return Credentials(login, key_text=key)
    if how == policy.KEY_FILE:
        return Credentials(login, key_filename=key_filename)
    if how == policy.LOCAL:
        return Credentials(login)
    if how == policy.SHARED:
        return shared_credentials(server, login)
    # As 2.1.0 did: whatever was given, plus what the server stores.
    return replace(shared_credentials(server, login, password), key_filename=key_filename)


def connect(server: Server, creds: Credentials, remote: bool = True) -> Transport:
    """A transport to ``server``; a host key trusted on first use is stored on it."""
    try:
        target = Target(server.hostname, server.port, server.host_key, name=server.title)
        t = open_transport(target, creds, remote)
    except (HostKeyUnknown, HostKeyInvalid) as exc:
        command = f"manage.py drs_fetch_host_key {shlex.quote(server.title)} --save"
        text = str(exc).replace("manage.py drs_fetch_host_key", command)
        raise type(exc)(f"Server {server.title}: {text}") from None
    new_key = t.pop_new_host_key()
    if new_key and not server.host_key:
        Server.objects.filter(pk=server.pk, host_key="").update(host_key=new_key)
        server.host_key = new_key
    return t
