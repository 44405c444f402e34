"""Host keys: reading a known_hosts line, fingerprints, fetching a host's key, and the policy
for a key not on record (``DRS["HOST_KEY_POLICY"]``).

    line, fp = fetch_host_key("hpc.example.org", 22)   # no login is attempted
    parse_host_key(line)                                 # a paramiko.PKey, or None
"""

from __future__ import annotations

import logging
import socket
from base64 import b64decode, b64encode
from hashlib import sha256

import paramiko

from ..conf import drs_settings
from .base import (
    ConnectError,
    HostKeyUnknown,
)

logger = logging.getLogger(__name__)

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
