"""Django settings of the benchmark (``python -m bench`` sets DJANGO_SETTINGS_MODULE to this).

The sqlite database and MEDIA_ROOT live in a temp dir (``$DRS_BENCH_TMP``, made and removed
by ``bench.harness.Bench``), and the channel layer is the bench's redis-server
(``$DRS_BENCH_REDIS``), so daphne started as a subprocess shares all three.
"""

from __future__ import annotations

import os
import tempfile

TMP = os.environ.setdefault("DRS_BENCH_TMP", tempfile.mkdtemp(prefix="drs-bench-"))

SECRET_KEY = "django-remote-submission-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "channels",
    "django_remote_submission",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(TMP, "db.sqlite3"),
        # IMMEDIATE: a transaction that reads then writes (runner.lease) waits for the lock
        # instead of failing at once with "database is locked" under concurrent jobs.
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
MEDIA_ROOT = os.path.join(TMP, "media")
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Production-like: every stored batch of log rows is broadcast through redis.
_REDIS = os.environ.get("DRS_BENCH_REDIS")
CHANNEL_LAYERS = (
    {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                 "CONFIG": {"hosts": [_REDIS]}}}
    if _REDIS
    else {}
)
DRS = {
    "HOST_KEY_POLICY": "reject",
    # Inside the bench's per-run base dir on the host, removed when the bench's sshd stops.
    "RUN_ROOT": os.environ.get("DRS_BENCH_RUN_ROOT", ".django-remote-submission/runs"),
}
