"""Secrets at rest and in transit, encrypted with Fernet (``cryptography``).

    from django_remote_submission.credentials import encrypt, decrypt
    token = encrypt("hunter2")        # safe to put in the broker or the database
    decrypt(token, ttl=3600)              # "hunter2", or CredentialError once expired

The key is ``DRS["SECRET_KEY"]`` when set, else derived from Django's ``SECRET_KEY``,
so nothing has to be configured and rotating Django's key invalidates old tokens.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models

from .conf import drs_settings

_PREFIX = "drs1:"


class CredentialError(Exception):
    """A secret could not be decrypted: wrong key, tampered with, or expired."""


def _fernet() -> Fernet:
    key = drs_settings.SECRET_KEY
    if not key:
        digest = hashlib.sha256(
            b"django-remote-submission:" + settings.SECRET_KEY.encode()
        ).digest()
        key = base64.urlsafe_b64encode(digest)
    return Fernet(key)


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


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code sees the plain text.

    Blank values are stored as ``""`` so "is it set?" queries stay possible.
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value or is_token(value):
            return value
        return encrypt(value)
