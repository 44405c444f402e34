"""All settings of the app, read from one ``DRS`` dict in the project's settings.

    # settings.py
    DRS = {"HOST_KEY_POLICY": "auto_add", "LOG_FLUSH_INTERVAL": 0.1}

    # in the app
    from django_remote_submission.conf import drs_settings
    drs_settings.HOST_KEY_POLICY

Only the keys a project wants to change need to be given; the rest come from
``DEFAULTS``. Unknown keys and values of the wrong type are rejected by system checks (see
``checks.py``).

``redis_channel_layer(url)`` is the ``CHANNEL_LAYERS`` entry the live pages need:

    CHANNEL_LAYERS = {"default": redis_channel_layer("redis://127.0.0.1:6379/1")}
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # "reject": connect only if the key equals Server.host_key; "auto_add": trust on
    # first use and store the key; "warn": log a mismatch and go on (development only).
    "HOST_KEY_POLICY": "reject",
    # Fernet key (urlsafe base64, 32 bytes) for secrets in the broker and the database.
    # Empty: derived from Django's SECRET_KEY.
    "SECRET_KEY": "",
    # Older Fernet keys that still decrypt (after a rotation; see drs_rotate_secrets). Keys
    # derived from Django's SECRET_KEY_FALLBACKS are tried too.
    "SECRET_KEY_FALLBACKS": [],
    # Lifetime of an encrypted password travelling through the broker, in seconds: a task
    # waiting longer in the queue fails with a clear error. (The copy a running job keeps
    # to resume after a crash lives as long as the run and is dropped at its end.)
    "CREDENTIAL_TTL": 6 * 3600,
    # Seconds to wait for a TCP connection / the SSH banner / authentication.
    "CONNECT_TIMEOUT": 10.0,
    # Seconds between SSH keepalive packets on pooled connections.
    "KEEPALIVE": 30,
    # Seconds an idle pooled connection is kept open.
    "POOL_IDLE_TIMEOUT": 300.0,
    # Channels (jobs' commands) put on one SSH connection: sshd's MaxSessions, 10 unless
    # the host says otherwise. A host that allows fewer is learnt from its first refusal.
    "SSH_MAX_SESSIONS": 10,
    # SSH handshakes to one host under way at once: well below sshd's MaxStartups (10 by
    # default), past which it drops new connections.
    "SSH_CONNECTS_AT_ONCE": 3,
    # Where per-job run directories live on a host; relative paths are under $HOME.
    "RUN_ROOT": ".django-remote-submission/runs",
    # Log batching: a batch is stored at most this many seconds after its first line
    # arrived, or as soon as it holds LOG_BATCH_BYTES.
    "LOG_FLUSH_INTERVAL": 0.05,
    "LOG_BATCH_BYTES": 1 << 20,
    # Largest Log row; a longer batch is split on line boundaries.
    "LOG_ROW_BYTES": 256 * 1024,
    # A line with no newline is stored in pieces once it grows past this many bytes.
    "LOG_MAX_LINE_BYTES": 64 * 1024,
    # Seconds between the TERM sent to a job's process group and the KILL.
    "KILL_GRACE": 5.0,
    # Seconds between heartbeats the runner writes while it watches a job.
    "HEARTBEAT_INTERVAL": 15.0,
    # Every Celery worker resumes runs whose worker died (stale heartbeat), at start and
    # then every 3 heartbeat intervals.
    "RECOVER_IN_WORKER": True,
    # Seconds the runner keeps retrying a database write after the connection was lost (the
    # database server restarted), with backoff; the job's output waits on the host meanwhile.
    "DB_RETRY_FOR": 300.0,
    # Celery queue of the job tasks (submit, copy, cancel, resume) of servers whose own
    # ``queue`` field is blank. Empty: Celery's routing (CELERY_TASK_ROUTES, else the default
    # queue). A worker consumes the queues named with ``-Q``.
    "QUEUE": "",
    # Retention (``manage.py drs_retention`` or the periodic task ``apply_retention``): the
    # logs of jobs finished this many days ago move from the database into one compressed
    # file per job in storage (0: never) ...
    "ARCHIVE_LOGS_AFTER_DAYS": 30,
    # ... under this storage prefix: <prefix>/<job uuid>.jsonl.gz.
    "ARCHIVE_PREFIX": "logs",
    # Opt-in purges (0: never): the result files and rows of jobs finished this many days
    # ago; and whole jobs (logs, archive, results and files; the audit trail keeps their title).
    "PURGE_RESULTS_AFTER_DAYS": 0,
    "PURGE_JOBS_AFTER_DAYS": 0,
    # The most jobs one user may hold at once on all servers together (submitted, queued,
    # running); more wait in "waiting" like jobs over a server's own limits. 0: no limit.
    "MAX_RUNNING_PER_USER": 0,
    # Servers with a "maximum load per core": the command (an argv list, run on the host
    # with the login of the job about to start) that prints the 1-minute load average and
    # the number of cores, separated by white space ...
    "LOAD_COMMAND": [
        "sh",
        "-c",
        'read one rest < /proc/loadavg && echo "$one $(getconf _NPROCESSORS_ONLN)"',
    ],
    # ... and the seconds after which the load of a server too busy to start a job is
    # looked at again (a delayed task, no worker waits meanwhile).
    "LOAD_RECHECK": 30.0,
    # Result previews on the job page: at most this many bytes of a file are read (text,
    # CSV/TSV, JSON) ...
    "PREVIEW_BYTES": 64 * 1024,
    # ... at most this many rows of a CSV/TSV file are shown ...
    "PREVIEW_ROWS": 20,
    # ... and an image (PNG, JPEG, GIF, SVG) is shown inline up to this size.
    "PREVIEW_IMAGE_MAX_BYTES": 5 << 20,
    # Bearer token a Prometheus scraper sends to the metrics view (``Authorization: Bearer
    # <token>``); empty: only staff may read the metrics. Keep it out of the code (env var).
    "METRICS_TOKEN": "",
    # Seconds between two status queries (squeue, qstat) of one server and login: one
    # query answers for all of its jobs in a worker process.
    "SCHEDULER_POLL_INTERVAL": 10.0,
    # Storage prefix of result files: <prefix>/<job uuid>/<relative path>.
    "RESULTS_PREFIX": "results",
    # Limits that keep one job from exhausting the worker, the database or the storage.
    # Output past LOG_MAX_BYTES (both streams together) is not stored; it stays on the host.
    "LOG_MAX_BYTES": 64 << 20,
    # Result files: largest file, all files of one run together, number of files. A file
    # over a limit is skipped (a "system" log row says so); the others are still stored.
    "RESULT_MAX_BYTES": 1 << 30,
    "RESULTS_MAX_BYTES": 2 << 30,
    "RESULTS_MAX_FILES": 1000,
    # What a job gets besides its program (see inputs.py): its arguments and its environment
    # variables (bytes of each, all together; both reach the program as argv words) ...
    "ARGUMENTS_MAX_BYTES": 64 * 1024,
    "ENVIRONMENT_MAX_BYTES": 64 * 1024,
    # ... and its input files: largest file, all files of one job together, number of files.
    # They are staged into the job's directory before launch, streamed in 1 MiB chunks.
    "INPUT_MAX_BYTES": 2 << 30,
    "INPUTS_MAX_BYTES": 4 << 30,
    "INPUTS_MAX_FILES": 100,
    # Storage prefix of input files: <prefix>/<job uuid>/<random name> (the path the job
    # sees is kept on the Input row).
    "INPUTS_PREFIX": "inputs",
    # A result is not stored when it would leave less free space than this on the storage
    # (checked where the storage can tell: FileSystemStorage).
    "STORAGE_MIN_FREE_BYTES": 1 << 30,
    # Seconds a read from the host (a result file) may wait for data before it fails.
    "HOST_READ_TIMEOUT": 60.0,
    # Websockets: a client acknowledges what it has read ({"type": "ack", "seq": n}). While
    # more than this many bytes it was sent are unacknowledged, the server sends it nothing
    # more (the rows wait in the database) ...
    "WS_MAX_UNACKED_BYTES": 4 << 20,
    # ... and after this many seconds without an ack that brings it back under, closes it
    # with code 4408 (the browser reconnects and resumes after its last row).
    "WS_ACK_TIMEOUT": 30.0,
    # Seconds a new personal API token lives (the tokens app): its default lifetime, and the
    # longest a user may ask for.
    "API_TOKEN_TTL": 90 * 24 * 3600,
}


# channels_redis waits up to 5 s (``RedisChannelLayer.brpop_timeout``) for a message on a
# redis connection; a socket timeout below that (redis-py 8 defaults to 5 s) drops every idle
# websocket. Long enough for the wait, short enough to notice a redis that stopped answering.
REDIS_SOCKET_TIMEOUT = 30.0


def redis_channel_layer(url: str, **config: Any) -> dict[str, Any]:
    """A ``CHANNEL_LAYERS`` entry for ``channels_redis`` whose idle websockets stay open.

    ``url`` is a redis URL; ``config`` adds keys of the layer's ``CONFIG`` (e.g. ``prefix``).
    """
    host = {"address": url, "socket_timeout": REDIS_SOCKET_TIMEOUT}
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [host], **config},
    }


class DRSSettings:
    """Attribute access to ``settings.DRS`` with ``DEFAULTS`` filled in."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "DRS", {}) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid DRS setting: {name!r}")
        if name not in self._cache:
            self._cache[name] = self.user_settings.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


drs_settings = DRSSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DRS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        drs_settings.reload()


setting_changed.connect(_reload)
