"""Django settings of the benchmark (``python -m bench`` sets DJANGO_SETTINGS_MODULE to this).

The sqlite database and MEDIA_ROOT live in a temp dir (``$DRS_BENCH_TMP``, made and removed
by ``bench.harness.Bench``), and the channel layer is the bench's redis-server
(``$DRS_BENCH_REDIS``), so daphne started as a subprocess shares all three.
"""

from __future__ import annotations

import os
import tempfile

if "DRS_BENCH_TMP" not in os.environ:  # set by bench.harness.Bench (and so for daphne)
    os.environ["DRS_BENCH_TMP"] = tempfile.mkdtemp(prefix="drs-bench-")
TMP = os.environ["DRS_BENCH_TMP"]

SECRET_KEY = "django-remote-submission-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",  # the websocket client logs in with a session cookie
    "channels",
    "django_remote_submission",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(TMP, "db.sqlite3"),
        # The example project's (and the docs') SQLite setup: IMMEDIATE transactions wait for
        # the write lock instead of failing; WAL lets readers go on beside the writer.
        # BENCH_SQLITE_WAL=0 measures SQLite's default rollback journal instead.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
if os.environ.get("BENCH_SQLITE_WAL", "1") != "0":
    DATABASES["default"]["OPTIONS"]["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
# The workers row runs a second bench on a throwaway PostgreSQL cluster
# (``DRS_BENCH_DATABASE=postgres``: bench.harness starts it and exports its URL).
if os.environ.get("DRS_BENCH_DATABASE_URL"):
    from urllib.parse import urlsplit

    _url = urlsplit(os.environ["DRS_BENCH_DATABASE_URL"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username or "postgres",
            "HOST": _url.hostname,
            "PORT": _url.port,
        }
    }
MEDIA_ROOT = os.path.join(TMP, "media")
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "bench.urls"

# Production-like: every stored batch of log rows is broadcast through redis.
_REDIS = os.environ.get("DRS_BENCH_REDIS")
CHANNEL_LAYERS = (
    {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [_REDIS]}}}
    if _REDIS
    else {}
)
# The workers row: ``celery -A bench.celery_app worker`` on the bench's redis-server.
CELERY_BROKER_URL = _REDIS or "memory://"
CELERY_TASK_SERIALIZER = "json"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
DRS = {
    "HOST_KEY_POLICY": "reject",
    # Inside the bench's per-run base dir on the host, removed when the bench's sshd stops.
    "RUN_ROOT": os.environ.get("DRS_BENCH_RUN_ROOT", ".django-remote-submission/runs"),
}
# paramiko logs each channel the server refuses (sshd's MaxSessions) at ERROR: the 200-jobs
# row would flood the table with them. Its notes count the jobs that failed instead.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"paramiko": {"level": "CRITICAL"}},
}
