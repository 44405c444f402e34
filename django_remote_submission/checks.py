"""System checks: explain a bad ``DRS`` setting at start-up, not at the first job."""

from __future__ import annotations

from django.core.checks import Error, register

from .conf import DEFAULTS, drs_settings

POLICIES = ("reject", "auto_add", "warn")


@register()
def check_settings(app_configs, **kwargs) -> list[Error]:
    errors = []
    unknown = sorted(set(drs_settings.user_settings) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown DRS settings: {', '.join(unknown)}",
                hint=f"Valid keys: {', '.join(sorted(DEFAULTS))}",
                id="drs.E001",
            )
        )
    if drs_settings.HOST_KEY_POLICY not in POLICIES:
        errors.append(
            Error(
                f"DRS['HOST_KEY_POLICY'] is {drs_settings.HOST_KEY_POLICY!r}",
                hint=f"Use one of {', '.join(POLICIES)}.",
                id="drs.E002",
            )
        )
    if drs_settings.SECRET_KEY:
        from cryptography.fernet import Fernet

        try:
            Fernet(drs_settings.SECRET_KEY)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    "DRS['SECRET_KEY'] is not a Fernet key",
                    hint="Generate one with Fernet.generate_key().",
                    id="drs.E003",
                )
            )
    return errors
