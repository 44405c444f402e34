"""Prometheus metrics of the jobs, in one place.

    # urls.py of the project
    from django_remote_submission.metrics import metrics_view
    urlpatterns += [path("metrics", metrics_view)]

    # prometheus.yml: a bearer token (DRS["METRICS_TOKEN"]); staff may open it in a browser
    scrape_configs:
      - job_name: drs
        authorization: {credentials: "<METRICS_TOKEN>"}
        static_configs: [{targets: ["portal.example.org"]}]

What happens to jobs is counted where it happens (mostly in the Celery workers, several
processes): set ``PROMETHEUS_MULTIPROC_DIR`` to one empty directory, the same for the web
server and every worker, before they start (``prometheus_client``'s multiprocess mode); the
view then adds up the files of every process. What stands in the database (jobs by state and
server, queue depth) is read from it at each scrape.

- ``drs_jobs{server, state}``: jobs by state and server, now.
- ``drs_queue_depth{server}``: jobs waiting for a slot (see ``scheduling``), now.
- ``drs_submissions_total{server}``: runs started (submitted, resubmitted).
- ``drs_job_endings_total{server, outcome}``: runs ended (success, failure, cancelled).
- ``drs_wait_seconds{server}``: from the submission to the start of the program (histogram).
- ``drs_run_seconds{server, outcome}``: from the start of the program to its end (histogram).
- ``drs_ssh_connect_seconds{server}``: opening an SSH connection: TCP, key exchange, login,
  and the retries of a handshake a busy sshd dropped (histogram).
- ``drs_ssh_connect_failures_total{server, reason}``: connections that could not be opened;
  ``reason`` is ``unreachable`` (name, refused, timed out, handshake), ``auth``,
  ``host_key`` (unknown, changed or unreadable) or ``other``.
- ``drs_ssh_connections{server}``, ``drs_ssh_channels{server}``: connections in the
  workers' pools and channels (sessions) open on them, now (summed over live processes).
- ``drs_transferred_bytes_total{server, kind}``: bytes moved between workers and hosts:
  ``log`` (output read), ``result`` (files fetched), ``input`` (files sent).
- ``drs_log_lag_seconds{server}``: per stored batch of log rows, from the arrival of its
  oldest byte in the worker to its commit (histogram). The host sends output as it is written
  (``tail -F``), so this is the time from print to storage less the network's transit.

A worker process that ends is dropped from the gauges (``mark_process_dead``, on Celery's
``worker_process_shutdown`` and ``worker_shutdown``).
"""

from __future__ import annotations

import hmac
import os

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from . import policy
from .conf import drs_settings
from .models import FINAL_STATES, Job, Status
from .remote import AuthError, ConnectError, RemoteError, Target, Watcher
from .remote.base import HostKeyInvalid, HostKeyMismatch, HostKeyUnknown

# Seconds: a few up to a day (jobs wait for slots, batch queues and walltimes).
BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))

SUBMISSIONS = Counter("drs_submissions", "Runs started (submitted, resubmitted).", ["server"])
ENDINGS = Counter(
    "drs_job_endings",
    "Runs ended, by outcome (success, failure, cancelled).",
    ["server", "outcome"],
)
WAIT = Histogram(
    "drs_wait_seconds",
    "From the submission to the start of the program.",
    ["server"],
    buckets=BUCKETS,
)
RUN = Histogram(
    "drs_run_seconds",
    "From the start of the program to its end.",
    ["server", "outcome"],
    buckets=BUCKETS,
)
# Seconds: a connection (a few ms to a busy sshd's retries), a log batch (ms to a stalled DB).
SHORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))
CONNECT = Histogram(
    "drs_ssh_connect_seconds",
    "Opening an SSH connection: TCP, key exchange, login, retries included.",
    ["server"],
    buckets=SHORT_BUCKETS,
)
CONNECT_FAILURES = Counter(
    "drs_ssh_connect_failures",
    "SSH connections that could not be opened, by reason.",
    ["server", "reason"],
)
CONNECTIONS = Gauge(
    "drs_ssh_connections",
    "SSH connections in the workers' pools.",
    ["server"],
    multiprocess_mode="livesum",
)
CHANNELS = Gauge(
    "drs_ssh_channels",
    "SSH channels (sessions) open on the workers' connections.",
    ["server"],
    multiprocess_mode="livesum",
)
TRANSFERRED = Counter(
    "drs_transferred_bytes",
    "Bytes moved between workers and hosts: log (output read), result, input.",
    ["server", "kind"],
)
LOG_LAG = Histogram(
    "drs_log_lag_seconds",
    "From the arrival of a batch's oldest byte in the worker to its storage.",
    ["server"],
    buckets=SHORT_BUCKETS,
)
PROCESS_METRICS = (
    SUBMISSIONS,
    ENDINGS,
    WAIT,
    RUN,
    CONNECT,
    CONNECT_FAILURES,
    CONNECTIONS,
    CHANNELS,
    TRANSFERRED,
    LOG_LAG,
)


def _server(job: Job) -> str:
    return job.server.title


def job_state_changed(job: Job, old: str, new: str, **kwargs) -> None:
    """Count a change of state (one of the app's ``signals.react`` reactions)."""
    if new == Status.submitted and (old == Status.initial or old in FINAL_STATES):
        SUBMISSIONS.labels(_server(job)).inc()
    elif new == Status.running and old != Status.running and job.submitted_at and job.started_at:
        WAIT.labels(_server(job)).observe((job.started_at - job.submitted_at).total_seconds())
    elif new in FINAL_STATES and old not in FINAL_STATES:
        ENDINGS.labels(_server(job), str(new)).inc()
        if job.started_at and job.finished_at:
            seconds = (job.finished_at - job.started_at).total_seconds()
            RUN.labels(_server(job), str(new)).observe(seconds)


def transferred(job: Job, kind: str):
    """The byte counter of ``job``'s server for ``kind`` ("log", "result", "input")."""
    return TRANSFERRED.labels(_server(job), kind)


def log_stored(job: Job, lag: float) -> None:
    LOG_LAG.labels(_server(job)).observe(lag)


def _reason(error: RemoteError) -> str:
    if isinstance(error, AuthError):
        return "auth"
    if isinstance(error, (HostKeyMismatch, HostKeyUnknown, HostKeyInvalid)):
        return "host_key"
    if isinstance(error, ConnectError):
        return "unreachable"
    return "other"


class PoolWatcher(Watcher):
    """The SSH pool's reports as metrics (installed by the app: ``remote.watch``)."""

    def connected(self, target: Target, seconds: float) -> None:
        CONNECT.labels(target.label).observe(seconds)

    def connect_failed(self, target: Target, error: RemoteError) -> None:
        CONNECT_FAILURES.labels(target.label, _reason(error)).inc()

    def connections(self, target: Target, delta: int) -> None:
        CONNECTIONS.labels(target.label).inc(delta)

    def channels(self, target: Target, delta: int) -> None:
        CHANNELS.labels(target.label).inc(delta)


def process_ended(**kwargs) -> None:
    """A worker process ends: its gauges no longer count (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


class DatabaseCollector:
    """What stands in the database now: jobs by state and server, queue depth."""

    def collect(self):
        jobs = GaugeMetricFamily(
            "drs_jobs", "Jobs by state and server.", labels=["server", "state"]
        )
        depth = GaugeMetricFamily(
            "drs_queue_depth", "Jobs waiting for a slot on the server.", labels=["server"]
        )
        rows = Job.objects.order_by().values("server__title", "status").annotate(n=Count("pk"))
        counts = {(r["server__title"], r["status"]): r["n"] for r in rows}
        servers = sorted({server for server, _ in counts})
        for server in servers:
            for state in Status.values:
                jobs.add_metric([server, state], counts.get((server, state), 0))
            depth.add_metric([server], counts.get((server, Status.waiting), 0))
        yield jobs
        yield depth


def registry() -> CollectorRegistry:
    """The metrics of every process (multiprocess mode) or of this one, and the database's."""
    found = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(found, path=directory)
    else:
        for metric in PROCESS_METRICS:
            found.register(metric)
    found.register(DatabaseCollector())
    return found


def may_scrape(request: HttpRequest) -> bool:
    """Staff, or a request with ``Authorization: Bearer <DRS["METRICS_TOKEN"]>``."""
    if policy.may_see_metrics(getattr(request, "user", None)):
        return True
    token = str(drs_settings.METRICS_TOKEN or "")
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format; 403 for anyone but staff or the token."""
    if not may_scrape(request):
        return HttpResponse(
            "Metrics are for staff, or a scraper with the token DRS['METRICS_TOKEN'].\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
