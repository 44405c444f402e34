"""System checks: explain a misconfiguration at start-up (``manage.py check``), not at the
first job.

    drs.E001-E004   the DRS setting: unknown keys, bad values, wrong types
    drs.E010        apps the API pages need are missing from INSTALLED_APPS
    drs.E020-E021   no Celery app, or one without a broker: ``.delay()`` would fail
    drs.W030-W032   the channel layer the live pages need: missing, in-memory beside a worker
                    in another process, or redis connections that drop idle websockets
"""

from __future__ import annotations

import inspect
from numbers import Real
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .conf import DEFAULTS, drs_settings

POLICIES = ("reject", "auto_add", "warn")

# Apps whose templates and static files the app's API pages use.
REQUIRED_APPS = {
    "rest_framework": "the browsable API (rest_framework/api.html)",
    "django_filters": "the filter forms of the browsable API",
    "drf_spectacular": "api/docs/ (drf_spectacular/swagger_ui.html)",
    "drf_spectacular_sidecar": "the Swagger UI files of api/docs/, served locally",
}
REDIS_LAYER = "channels_redis.core.RedisChannelLayer"
IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
README_LAYER = 'CHANNEL_LAYERS = {"default": redis_channel_layer("redis://127.0.0.1:6379/1")}'


@register()
def check_settings(app_configs, **kwargs) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    unknown = sorted(set(drs_settings.user_settings) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown DRS settings: {', '.join(unknown)}",
                hint=f"Valid keys: {', '.join(sorted(DEFAULTS))}",
                id="drs.E001",
            )
        )
    wrong = _wrong_types(drs_settings.user_settings)
    errors += wrong
    if "HOST_KEY_POLICY" not in {e.obj for e in wrong} and (
        drs_settings.HOST_KEY_POLICY not in POLICIES
    ):
        errors.append(
            Error(
                f"DRS['HOST_KEY_POLICY'] is {drs_settings.HOST_KEY_POLICY!r}",
                hint=f"Use one of {', '.join(POLICIES)}.",
                id="drs.E002",
            )
        )
    if drs_settings.SECRET_KEY and isinstance(drs_settings.SECRET_KEY, str | bytes):
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


def _same_kind(value: Any, default: Any) -> bool:
    """Numbers stand for numbers (15 for 15.0), but a bool is not a number here."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, Real):
        return isinstance(value, Real)
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    if isinstance(default, Real) and not isinstance(default, bool):
        return "a number"
    return f"a {type(default).__name__}"


def _wrong_types(user: dict[str, Any]) -> list[CheckMessage]:
    return [
        Error(
            f"DRS[{key!r}] is {value!r} ({type(value).__name__}): it must be "
            f"{_kind(DEFAULTS[key])}.",
            hint=f"Give {_kind(DEFAULTS[key])}, like its default {DEFAULTS[key]!r}.",
            obj=key,
            id="drs.E004",
        )
        for key, value in user.items()
        if key in DEFAULTS and not _same_kind(value, DEFAULTS[key])
    ]


@register()
def check_apps(app_configs, **kwargs) -> list[CheckMessage]:
    missing = [name for name in REQUIRED_APPS if not apps.is_installed(name)]
    if not missing:
        return []
    return [
        Error(
            f"INSTALLED_APPS lacks {', '.join(missing)}, needed by "
            + "; ".join(REQUIRED_APPS[name] for name in missing)
            + ".",
            hint="Add them to INSTALLED_APPS, beside 'django_remote_submission'.",
            id="drs.E010",
        )
    ]


def _loaded_celery_app():
    """The Celery app ``.delay()`` sends through, or None when the project loaded none.

    Read without creating Celery's fallback app (``current_app`` would make one)."""
    from celery import _state

    app = _state._tls.current_app or _state.default_app
    if app is None or (app.main == "default" and not app.fixups):
        return None  # nothing, or the fallback app: it reads no settings
    return app


@register()
def check_celery(app_configs, **kwargs) -> list[CheckMessage]:
    app = _loaded_celery_app()
    if app is None:
        return [
            Error(
                "No Celery app is loaded: submit_job_to_server.delay() would go to Celery's "
                "default broker (amqp://guest@localhost//), and the submit form would fail.",
                hint="Create proj/celery.py as the README shows and load it in "
                "proj/__init__.py: from .celery import app as celery_app",
                id="drs.E020",
            )
        ]
    if app.conf.task_always_eager or app.conf.broker_url or app.conf.broker_write_url:
        return []
    return [
        Error(
            f"The Celery app {app.main!r} has no broker: tasks would go to Celery's default "
            "amqp://guest@localhost//.",
            hint='Set CELERY_BROKER_URL (e.g. "redis://127.0.0.1:6379/0") and load it with '
            'app.config_from_object("django.conf:settings", namespace="CELERY").',
            id="drs.E021",
        )
    ]


def _default_socket_timeout() -> float | None:
    """redis-py's default socket timeout (None before redis-py 8, 5 s since)."""
    from redis.asyncio.connection import AbstractConnection

    parameter = inspect.signature(AbstractConnection.__init__).parameters.get("socket_timeout")
    return None if parameter is None else parameter.default


def _socket_timeout(host: Any) -> float | None:
    """The socket timeout channels_redis gives redis-py for one entry of ``hosts``."""
    if isinstance(host, bytes):
        host = host.decode()
    url = host if isinstance(host, str) else host.get("address") if isinstance(host, dict) else ""
    query = parse_qs(urlsplit(url).query) if url else {}
    if "socket_timeout" in query:  # redis-py lets the URL's options win
        return float(query["socket_timeout"][-1])
    if isinstance(host, dict) and "socket_timeout" in host:
        return host["socket_timeout"]
    return _default_socket_timeout()


def _short_timeouts(alias: str, config: dict) -> list[CheckMessage]:
    from channels_redis.core import RedisChannelLayer

    wait = RedisChannelLayer.brpop_timeout
    hosts = config.get("hosts") or ["redis://localhost:6379"]
    if isinstance(hosts, str | bytes):
        return []  # channels_redis itself refuses it
    short = [t for t in map(_socket_timeout, hosts) if t is not None and t < wait + 1]
    if not short:
        return []
    return [
        Warning(
            f"CHANNEL_LAYERS[{alias!r}]: redis connections time out after {min(short):g} s, "
            f"while channels_redis waits up to {wait} s for a message: every idle websocket "
            "is dropped after a few seconds (redis.exceptions.TimeoutError).",
            hint="Use django_remote_submission.conf.redis_channel_layer(url), or give the host "
            'as {"address": url, "socket_timeout": 30}.',
            id="drs.W032",
        )
    ]


@register()
def check_channel_layer(app_configs, **kwargs) -> list[CheckMessage]:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    layer = layers.get("default")
    if not layer:
        return [
            Warning(
                "No channel layer (CHANNEL_LAYERS['default']): job pages and the job list "
                "do not update live.",
                hint=f"Add {README_LAYER} (from django_remote_submission.conf).",
                id="drs.W030",
            )
        ]
    backend = layer.get("BACKEND", "")
    if backend == IN_MEMORY_LAYER:
        app = _loaded_celery_app()
        conf = app.conf if app is not None else None
        in_process = conf is not None and (
            conf.task_always_eager or str(conf.broker_url or "").startswith("memory://")
        )
        if in_process:
            return []
        return [
            Warning(
                "The channel layer is in memory: what a Celery worker (another process) "
                "sends never reaches the websockets served by the web server.",
                hint=f"Use redis: {README_LAYER}.",
                id="drs.W031",
            )
        ]
    if backend == REDIS_LAYER:
        return _short_timeouts("default", layer.get("CONFIG") or {})
    return []
