"""SSH keys in a host's ``~/.ssh/authorized_keys``: the worker's, and each user's own.

    keys.deploy("ada", "password", "hpc.example.org")   # the worker's key (2.1.0's API)
    keys.remove("ada", None, "hpc.example.org")
    keys.add_to(transport, None, "hpc")                 # the same through an open transport

    keys.generate(account)                # a key pair for a user's ServerAccount
    keys.install(account, "password")     # its public part on the host, with the password
    keys.uninstall(account)               # off the host (logging in with the key itself)

The file is edited in place: other keys, its owner and its mode are kept; ``~/.ssh`` and the
file are created 0700 / 0600 when missing. A key already present is not added twice. A
user's private key is made here (ed25519), stored encrypted and never shown.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from .connections import connect
from .launchers.direct import sh
from .models import Server, ServerAccount
from .remote import Credentials, RemoteError, Target, Transport, open_transport

ADD = r"""
umask 077
mkdir -p .ssh || exit 1
f=.ssh/authorized_keys
[ -f "$f" ] || : > "$f" || exit 1
grep -qF -- " $2" "$f" && exit 0
[ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ] && echo >> "$f"
printf '%s\n' "$1" >> "$f"
"""

REMOVE = r"""
f=.ssh/authorized_keys
[ -f "$f" ] || exit 0
t=$(mktemp) || exit 1
awk -v k="$2" '{ for (i = 1; i <= NF; i++) if ($i == k) next; print }' "$f" > "$t" &&
  cat "$t" > "$f"
s=$?; rm -f "$t"; exit $s
"""

DEFAULT_KEYS = ("~/.ssh/id_ed25519.pub", "~/.ssh/id_ecdsa.pub", "~/.ssh/id_rsa.pub")


def public_key_file(filename: str | None = None) -> str:
    """The path of ``filename`` (the ``.pub`` beside a private key) or of the worker's
    default public key."""
    candidates = [filename] if filename else DEFAULT_KEYS
    for name in candidates:
        path = os.path.expanduser(name)
        if not path.endswith(".pub") and os.path.exists(path + ".pub"):
            path += ".pub"
        if os.path.exists(path):
            return path
    raise RemoteError(f"No public key found (looked for {', '.join(candidates)}).")


def public_key(filename: str | None = None) -> tuple[str, str]:
    """(the key line, its base64 part) of ``filename`` or the worker's default key."""
    path = public_key_file(filename)
    with open(path) as f:
        words = f.read().split()
    if len(words) >= 2:
        return " ".join(words[:3]), words[1]
    raise RemoteError(f"{path} is not a public key file.")


def _transport(username, password, hostname, port, remote, key_filename=None):
    server = Server.objects.filter(hostname=hostname, port=port).first()
    # Without a password, log in with the key itself (it must be deployed already).
    creds = Credentials(
        username, password=password or None, key_filename=None if password else key_filename
    )
    if server is not None:
        return connect(server, creds, remote)
    return open_transport(Target(hostname, port, ""), creds, remote)


def _apply(t: Transport, script: str, verb: str, line: str, b64: str, where: str) -> None:
    res = t.run(sh(script, line, b64), timeout=60)
    if res.exit_code:
        raise RemoteError(f"Could not {verb} the key on {where}: {res.error_text}")


def _edit(
    script: str,
    verb: str,
    username,
    password,
    hostname,
    port,
    public_key_filename,
    remote,
    login_key=None,
) -> None:
    line, b64 = public_key(public_key_filename)
    with _transport(username, password, hostname, port, remote, login_key) as t:
        _apply(t, script, verb, line, b64, hostname)


def add_to(t: Transport, public_key_filename: str | None, where: str) -> None:
    """Add the public key to ``authorized_keys`` through an open transport (see ``deploy``)."""
    _apply(t, ADD, "add", *public_key(public_key_filename), where)


def remove_from(t: Transport, public_key_filename: str | None, where: str) -> None:
    """Remove the public key from ``authorized_keys`` through an open transport."""
    _apply(t, REMOVE, "remove", *public_key(public_key_filename), where)


def deploy(
    username: str,
    password: str | None,
    hostname: str,
    port: int = 22,
    public_key_filename: str | None = None,
    remote: bool = True,
) -> None:
    _edit(ADD, "add", username, password, hostname, port, public_key_filename, remote)


def remove(
    username: str,
    password: str | None,
    hostname: str,
    port: int = 22,
    public_key_filename: str | None = None,
    remote: bool = True,
) -> None:
    _edit(
        REMOVE,
        "remove",
        username,
        password,
        hostname,
        port,
        public_key_filename,
        remote,
        login_key=public_key_filename,
    )


# --- a user's own key ---------------------------------------------------------------------


def generate(account: ServerAccount) -> str:
    """Make a new key pair for ``account`` (replacing any); return its public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    comment = f"django-remote-submission:{account.user.get_username()}@{account.server.title}"
    account.private_key = private
    account.public_key = f"{public} {'-'.join(comment.split())}"
    account.installed = None
    account.save(update_fields=["private_key", "public_key", "installed", "modified"])
    return account.public_key


def _account_edit(account: ServerAccount, script: str, verb: str, creds: Credentials) -> None:
    words = account.public_key.split()
    server = account.server
    with connect(server, creds, remote=not server.local) as t:
        _apply(t, script, verb, account.public_key, words[1], server.title)


def install(account: ServerAccount, password: str) -> None:
    """Add the account's public key on its server, logging in once with ``password``."""
    if not account.public_key:
        raise RemoteError("Make a key first.")
    _account_edit(account, ADD, "add", Credentials(account.login, password=password))
    account.installed = timezone.now()
    account.save(update_fields=["installed", "modified"])


def uninstall(account: ServerAccount, password: str | None = None) -> None:
    """Remove the account's public key from its server (logging in with ``password``, else
    with the key itself) and forget the key pair."""
    if account.public_key:
        creds = (
            Credentials(account.login, password=password)
            if password
            else Credentials(account.login, key_text=account.private_key)
        )
        _account_edit(account, REMOVE, "remove", creds)
    account.private_key = account.public_key = ""
    account.installed = None
    account.save(update_fields=["private_key", "public_key", "installed", "modified"])
