"""Settings of the example project, read from ``example/.env`` (template: ``.env.base``).

SQLite by default, PostgreSQL with ``DATABASE_URL=postgres://...``; Redis (``REDIS_URL``) is
both the Celery broker and the channel layer; daphne serves HTTP and websockets
(``demo_site.asgi``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import django
from django.core.exceptions import ImproperlyConfigured

from django_remote_submission.conf import redis_channel_layer

from .env import EXAMPLE_DIR, env

BASE_DIR = EXAMPLE_DIR

SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY in example/.env (make demo writes one).")
DEBUG = env("DEBUG", "false").lower() in ("1", "true", "yes", "on")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", *filter(None, env("ALLOWED_HOSTS").split(","))]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "knox",
    "django_remote_submission",
    "django_remote_submission.tokens",  # "My API tokens": what scripts log in to the API with
    "demo_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
ASGI_APPLICATION = "demo_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database(url: str) -> dict:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgres://u:p@h:port/db``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///") :]
        options: dict = {"timeout": 30}
        if django.VERSION >= (5, 1):
            # A web server, a worker and this process write concurrently: take the write lock
            # at the start of a transaction, and let readers go on beside the writer (WAL).
            options.update(
                transaction_mode="IMMEDIATE",
                init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            )
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path if os.path.isabs(path) else str(BASE_DIR / path),
            "OPTIONS": options,
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise ImproperlyConfigured(f"Unsupported DATABASE_URL scheme: {parts.scheme!r}")


DATABASES = {"default": database(env("DATABASE_URL", "sqlite:///db.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
MEDIA_ROOT = str(BASE_DIR / Path(env("MEDIA_ROOT", "media")))
MEDIA_URL = "/media/"  # not served: result files are downloaded through the app's views

LOGIN_URL = "drs:login"
LOGIN_REDIRECT_URL = "drs:job-list"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A socket timeout longer than channels_redis's wait for messages: idle websockets stay open.
CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}

DRS = {"HOST_KEY_POLICY": env("DRS_HOST_KEY_POLICY", "reject")}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_remote_submission": {"handlers": ["console"], "level": "INFO"}},
}
