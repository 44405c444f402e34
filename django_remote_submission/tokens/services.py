"""Making and revoking API tokens, each recorded in the audit trail.

    token, key = services.create(request.user, name="cron", read_only=True, days=30,
                                 request=request)      # key: show it once, it is not stored
    services.revoke(token, request.user, request=request)   # policy.Refused if they may not

Pages, the API and the admin call these; ``authentication`` records the first use.
"""

from __future__ import annotations

import math
from datetime import timedelta

from .. import audit, policy
from ..conf import drs_settings
from ..models import Event
from .models import PREFIX, ApiToken


def max_days() -> int:
    """The longest lifetime a user may ask for, in whole days (at least 1)."""
    return max(1, math.ceil(drs_settings.API_TOKEN_TTL / 86400))


def lifetime(days: int | None) -> timedelta:
    """``days`` (None: the default), never longer than ``DRS["API_TOKEN_TTL"]``."""
    ttl = timedelta(seconds=drs_settings.API_TOKEN_TTL)
    return ttl if days is None else min(ttl, timedelta(days=days))


def describe(token: ApiToken) -> str:
    """How the audit trail names a token: name, first characters, scope and owner."""
    scope = ", read-only" if token.read_only else ""
    return f"“{token.name}” ({token.token_key}…{scope}) of {token.user.get_username()}"


def create(
    user, *, name: str, read_only: bool = False, days: int | None = None, request=None
) -> tuple[ApiToken, str]:
    """A new token of ``user``, and its key (the only time the key is known)."""
    if not (user.is_authenticated and user.is_active):
        raise policy.Refused("Only a logged-in user may make API tokens.")
    token, key = ApiToken.objects.create(
        user, expiry=lifetime(days), prefix=PREFIX, name=name, read_only=read_only
    )
    audit.record(Event.Action.token_created, actor=user, reason=describe(token), request=request)
    return token, key


def revoke(token: ApiToken, user, *, request=None) -> None:
    """Delete ``token``: requests with it are refused (401) from now on."""
    if not policy.may_revoke_token(user, token):
        raise policy.Refused("You may not revoke this token.")
    audit.record(Event.Action.token_revoked, actor=user, reason=describe(token), request=request)
    token.delete()
