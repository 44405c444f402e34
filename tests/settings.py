"""Django settings for the test suite.

Usage: ``pytest`` (pyproject sets ``DJANGO_SETTINGS_MODULE = "tests.settings"``);
``daphne tests.asgi:application`` serves the same project.

The database and MEDIA_ROOT live in one temp dir whose path is exported as ``DRS_TEST_TMP``
(and the database file as ``DRS_TEST_DB``), so subprocesses started by the tests (Celery
workers, daphne) that import these settings share the same files.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

import django

from django_remote_submission.conf import redis_channel_layer

if "DRS_TEST_TMP" not in os.environ:
    os.environ["DRS_TEST_TMP"] = tempfile.mkdtemp(prefix="drs-tests-")
    atexit.register(shutil.rmtree, os.environ["DRS_TEST_TMP"], True)
TEST_TMP = os.environ["DRS_TEST_TMP"]
os.environ.setdefault("DRS_TEST_DB", os.path.join(TEST_TMP, "db.sqlite3"))

SECRET_KEY = "django-remote-submission-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "knox",
    "django_remote_submission",
    "django_remote_submission.tokens",
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

ROOT_URLCONF = "tests.urls"

# The test DB is the same file (TEST NAME == NAME) so that subprocesses can open it;
# pytest-django creates it fresh and removes it at the end.
_DB = os.environ["DRS_TEST_DB"]
# Workers, daphne and the tests write concurrently: take the write lock when a transaction
# starts (no lock-upgrade deadlock) and let readers go on beside the writer (WAL).
_SQLITE_CONCURRENCY = (
    {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    if django.VERSION >= (5, 1)
    else {}
)
if django.VERSION < (5, 1):  # Django 4.2 has no init_command for SQLite: a signal does it
    from django.db.backends.signals import connection_created

    def _wal(sender, connection, **kwargs) -> None:
        if connection.vendor == "sqlite":
            connection.cursor().execute("PRAGMA journal_mode=WAL;")

    connection_created.connect(_wal)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DB,
        "TEST": {"NAME": _DB},
        "OPTIONS": {"timeout": 30, **_SQLITE_CONCURRENCY},
    }
}

# DRS_TEST_DATABASE=postgres: a throwaway PostgreSQL cluster instead (started here once; its
# URL is exported so that workers started by the tests use the same database).
if os.environ.get("DRS_TEST_DATABASE") == "postgres":
    if not os.environ.get("DRS_TEST_DATABASE_URL"):
        from tests.services import start_postgres

        _pg = start_postgres()
        atexit.register(_pg.stop)
        os.environ["DRS_TEST_DATABASE_URL"] = _pg.url
    from urllib.parse import urlsplit

    _url = urlsplit(os.environ["DRS_TEST_DATABASE_URL"])
    _name = _url.path.lstrip("/")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name,
            "USER": _url.username or "postgres",
            "HOST": _url.hostname,
            "PORT": _url.port,
            "TEST": {"NAME": _name},
        }
    }

# DRS_TEST_MEDIA: a worker started by a test may store its results elsewhere (a small tmpfs).
MEDIA_ROOT = os.environ.get("DRS_TEST_MEDIA") or os.path.join(TEST_TMP, "media")
os.makedirs(MEDIA_ROOT, exist_ok=True)
STATIC_URL = "/static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")

# In-memory by default; the browser test's subprocesses (daphne, worker) share a redis layer.
if os.environ.get("DRS_CHANNEL_REDIS"):
    CHANNEL_LAYERS = {"default": redis_channel_layer(os.environ["DRS_CHANNEL_REDIS"])}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
LOGIN_URL = "drs:login"

DRS = {
    "HOST_KEY_POLICY": "reject",
    # Reliability tests shorten the heartbeat so a dead worker is noticed in seconds.
    "HEARTBEAT_INTERVAL": float(os.environ.get("DRS_TEST_HEARTBEAT", "15")),
    "KILL_GRACE": 2.0,
    # Batch schedulers: the test clusters answer at once; ask them every second.
    "SCHEDULER_POLL_INTERVAL": 1.0,
    # The suite's storage is a temp dir on the machine's disk: no free-space floor there.
    "STORAGE_MIN_FREE_BYTES": 0,
    # DRS_TEST_SETTINGS: JSON of more DRS values, for workers that tests start with limits.
    **json.loads(os.environ.get("DRS_TEST_SETTINGS") or "{}"),
}
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://")
CELERY_TASK_SERIALIZER = "json"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fast hashing: tests log users in by password.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
