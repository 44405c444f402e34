"""Logging in with an API token: over HTTP (a DRF authentication class) and on websockets.

    # how a client sends it (either keyword)
    Authorization: Bearer drs_5d1c...
    Authorization: Token drs_5d1c...

    token = authenticate("drs_5d1c...", request=request)   # TokenRefused: invalid, expired
    ApiTokenAuthentication().authenticate(request)           # (user, token), or None

Only keys with the ``drs_`` prefix are claimed, so ``rest_framework.authtoken`` keys (also
sent as ``Token <key>``) reach its own authentication class. The key is compared by its
SHA-512 digest (knox's ``hash_token``); the first use of a token is recorded in the audit
trail and ``last_used`` is kept to the minute.
"""

from __future__ import annotations

from datetime import timedelta
from hmac import compare_digest

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.crypto import hash_token
from knox.settings import CONSTANTS
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from .. import audit
from ..models import Event
from .models import PREFIX, ApiToken
from .services import describe

KEYWORDS = (b"bearer", b"token")
# ``last_used`` is written at most this often per token (not on every request).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefused(Exception):
    """The key is not a valid token (unknown, revoked, expired) or its user is inactive."""


def key_from_header(header: bytes | str) -> str | None:
    """The API token key of an ``Authorization`` header value; None for anything else."""
    if isinstance(header, str):
        header = header.encode("latin-1")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() not in KEYWORDS:
        return None
    key = parts[1].decode("latin-1")
    return key if key.startswith(PREFIX) else None


def authenticate(key: str, *, request=None) -> ApiToken:
    """The live token whose key is ``key``; ``TokenRefused`` says why there is none."""
    digest = hash_token(key)
    candidates = ApiToken.objects.select_related("user").filter(
        token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH]
    )
    token = next((t for t in candidates if compare_digest(digest, t.digest)), None)
    if token is None:
        raise TokenRefused("Invalid token.")
    if token.expired:
        raise TokenRefused("Token expired.")
    if not token.user.is_active:
        raise TokenRefused("User inactive or deleted.")
    _note_use(token, request)
    return token


def is_live(pk: int) -> bool:
    """The token still exists (not revoked), has not expired and its user is active."""
    token = ApiToken.objects.select_related("user").filter(pk=pk).first()
    return token is not None and not token.expired and token.user.is_active


def _note_use(token: ApiToken, request) -> None:
    now = timezone.now()
    tokens = ApiToken.objects.filter(pk=token.pk)
    if token.last_used is None:
        # Of concurrent first requests, the one whose update wins records the first use.
        if tokens.filter(last_used__isnull=True).update(last_used=now):
            audit.record(
                Event.Action.token_used, actor=token.user, reason=describe(token), request=request
            )
    elif now - token.last_used >= LAST_USED_RESOLUTION:
        tokens.filter(last_used__lt=now - LAST_USED_RESOLUTION).update(last_used=now)
    token.last_used = now


class ApiTokenAuthentication(BaseAuthentication):
    """DRF authentication by personal API token: ``request.auth`` is the ``ApiToken``."""

    def authenticate(self, request):
        key = key_from_header(get_authorization_header(request))
        if key is None:
            return None
        try:
            token = authenticate(key, request=request)
        except TokenRefused as exc:
            raise AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The token in the OpenAPI schema: an HTTP bearer scheme, which generated clients and
    Swagger UI's "Authorize" send as ``Authorization: Bearer <key>``."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (`drs_...`) from the “My API tokens” page "
            "or `POST tokens/`; `Authorization: Token <key>` works too.",
        }
