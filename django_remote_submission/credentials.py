"""Secrets at rest and in transit, encrypted with Fernet (``cryptography``).

    from django_remote_submission.credentials import encrypt, decrypt
    token = encrypt("hunter2")        # safe to put in the broker or the database
    decrypt(token, ttl=3600)          # "hunter2", or CredentialError once expired

The key is ``DRS["SECRET_KEY"]`` when set, else derived from Django's ``SECRET_KEY``, so
nothing has to be configured. Rotation: put the old key in ``DRS["SECRET_KEY_FALLBACKS"]``
(or the old ``SECRET_KEY`` in Django's ``SECRET_KEY_FALLBACKS``): secrets encrypted with it
still decrypt, new ones use the new key, and ``manage.py drs_rotate_secrets`` re-encrypts
the stored ones. A stored secret that no key opens reads as ``UnreadableSecret`` (empty, and
saved back unchanged) instead of failing the page that shows it.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from .conf import drs_settings

_PREFIX = "drs1:"


class CredentialError(Exception):
    """A secret could not be decrypted: wrong key, tampered with, or expired."""


def _derived(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"django-remote-submission:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def keys() -> list[bytes | str]:
    """The Fernet keys, the current one first."""
    if drs_settings.SECRET_KEY:
        found = [drs_settings.SECRET_KEY]
    else:
        found = [_derived(settings.SECRET_KEY)]
    found += list(drs_settings.SECRET_KEY_FALLBACKS or [])
    found += [_derived(k) for k in getattr(settings, "SECRET_KEY_FALLBACKS", []) or []]
    return found


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys()])


def encrypt(secret: str) -> str:
    """Return an opaque token for ``secret``."""
    return _PREFIX + _fernet().encrypt(secret.encode()).decode("ascii")


def decrypt(token: str, ttl: float | None = None) -> str:
    """Return the secret in ``token``; ``ttl`` seconds bounds its age."""
    if not is_token(token):
        raise CredentialError("not an encrypted credential")
    try:
        raw = _fernet().decrypt(
            token[len(_PREFIX) :].encode("ascii"), ttl=None if ttl is None else int(ttl)
        )
    except InvalidToken:
        raise CredentialError(
            "the encrypted credential is invalid or expired (was DRS['SECRET_KEY'] or "
            "SECRET_KEY changed, or did the task wait longer than DRS['CREDENTIAL_TTL']?)"
        ) from None
    return raw.decode()


def rotate(token: str) -> str:
    """``token`` encrypted again with the current key (its time stamp kept)."""
    if not is_token(token):
        raise CredentialError("not an encrypted credential")
    try:
        return _PREFIX + _fernet().rotate(token[len(_PREFIX) :].encode("ascii")).decode("ascii")
    except InvalidToken:
        raise CredentialError("no key opens this credential") from None


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


class UnreadableSecret(str):
    """A stored secret that no key opens: reads as "", is saved back as it was."""

    token: str

    def __new__(cls, token: str) -> UnreadableSecret:
        obj = super().__new__(cls, "")
        obj.token = token
        return obj


UNREADABLE = "credential unreadable: enter it again"


def is_unreadable(value: object) -> bool:
    return isinstance(value, UnreadableSecret)


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code sees the plain text.

    Blank values are stored as ``""`` so "is it set?" queries stay possible.
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        try:
            return decrypt(value)
        except CredentialError:
            return UnreadableSecret(value)

    def get_prep_value(self, value):
        if isinstance(value, UnreadableSecret):
            return value.token
        value = super().get_prep_value(value)
        if not value or is_token(value):
            return value
        return encrypt(value)
