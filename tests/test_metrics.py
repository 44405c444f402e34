"""Prometheus metrics (``metrics``): exact values after a known sequence of jobs run by two
worker processes (multiprocess mode), and who may read them."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_remote_submission.models import Job, Status
from django_remote_submission.tasks import submit_job_to_server
from tests.services import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-token-0123456789"


@pytest.fixture(scope="module")
def multiproc_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("prometheus"))


@pytest.fixture(scope="module")
def two_workers(celery_app, redis_url, multiproc_dir):
    """Two worker processes, each on its own queue, writing their metrics to one directory."""
    env = {"PROMETHEUS_MULTIPROC_DIR": multiproc_dir}
    started = []
    try:
        for queue in ("metrics-a", "metrics-b"):
            started.append(start_worker(redis_url, concurrency=2, extra_env=env, queue=queue))
        yield started
    finally:
        for w in started:
            w.stop()


@pytest.fixture
def token(settings):
    settings.DRS = {**settings.DRS, "METRICS_TOKEN": TOKEN}


def scrape(client, multiproc_dir, monkeypatch) -> dict[tuple[str, tuple], float]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", multiproc_dir)
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def run_on(queue: str, job, password: str) -> None:
    Job.objects.filter(pk=job.pk).update(submitted_at=job.created)
    submit_job_to_server.apply_async((job.pk,), {"password": password}, queue=queue)


OK = "open('r.dat', 'wb').write(b'x' * 1000)\nprint('ok')"  # 3 bytes of log, 1000 of result
BAD = "import sys\nsys.stderr.write('bad\\n')\nsys.exit(3)"  # 4 bytes of log


def test_counters_and_histograms_add_up_across_two_worker_processes(
    make_job, server, sshd, two_workers, multiproc_dir, client, token, monkeypatch
):
    ok = [make_job(OK), make_job(OK)]
    bad = make_job(BAD)
    refused = make_job("print('never')")
    for job in ok:
        run_on("metrics-a", job, sshd.password)
    run_on("metrics-b", bad, sshd.password)
    run_on("metrics-b", refused, "not the password")
    wait_for(
        lambda: Job.objects.filter(status__in=[Status.success, Status.failure]).count() == 4,
        timeout=90,
        message=lambda: str(list(Job.objects.values_list("status", "error"))),
    )
    refused.refresh_from_db()
    assert refused.error.startswith("Authentication failed for ")
    pids = {name.rsplit("_", 1)[1] for name in os.listdir(multiproc_dir)}
    assert len(pids) == 2  # both processes wrote their own files

    found = scrape(client, multiproc_dir, monkeypatch)
    s = (("server", "test sshd"),)
    assert found[("drs_submissions_total", s)] == 4
    assert found[("drs_job_endings_total", (("outcome", "success"), *s))] == 2
    assert found[("drs_job_endings_total", (("outcome", "failure"), *s))] == 2
    assert found[("drs_run_seconds_count", (("outcome", "success"), *s))] == 2
    assert found[("drs_run_seconds_count", (("outcome", "failure"), *s))] == 1  # one started
    assert found[("drs_wait_seconds_count", s)] == 3
    assert found[("drs_wait_seconds_bucket", (("le", "+Inf"), *s))] == 3
    states = {state: found[("drs_jobs", (*s, ("state", state)))] for state in Status.values}
    assert states == {state: 0 for state in Status.values} | {"success": 2, "failure": 2}
    assert found[("drs_queue_depth", s)] == 0

    # SSH: one connection per worker process, both still open and idle; one login refused.
    assert found[("drs_ssh_connect_seconds_count", s)] == 2
    assert 0 < found[("drs_ssh_connect_seconds_sum", s)] < 20
    assert found[("drs_ssh_connect_failures_total", (("reason", "auth"), *s))] == 1
    assert found[("drs_ssh_connections", s)] == 2
    assert found[("drs_ssh_channels", s)] == 0
    # Bytes moved, to the byte; one stored batch of log rows per job that printed.
    assert found[("drs_transferred_bytes_total", (("kind", "log"), *s))] == 3 + 3 + 4
    assert found[("drs_transferred_bytes_total", (("kind", "result"), *s))] == 2000
    assert found[("drs_log_lag_seconds_count", s)] == 3
    assert 0 <= found[("drs_log_lag_seconds_sum", s)] < 10

    # A worker process that ends no longer counts in the gauges.
    two_workers[1].stop()
    found = scrape(client, multiproc_dir, monkeypatch)
    assert found[("drs_ssh_connections", s)] == 1
    assert found[("drs_ssh_connect_seconds_count", s)] == 2  # counters keep what it counted


def test_metrics_are_for_staff_or_the_token(client, django_user_model, token, db):
    assert client.get("/metrics").status_code == 403
    wrong = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x")
    assert (wrong.status_code, wrong.content.decode()) == (
        403,
        "Metrics are for staff, or a scraper with the token DRS['METRICS_TOKEN'].\n",
    )
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    user = django_user_model.objects.create_user("plain")
    client.force_login(user)
    assert client.get("/metrics").status_code == 403
    user.is_staff = True
    user.save()
    assert client.get("/metrics").status_code == 200


def test_without_a_token_only_staff_may_read_them(client, db):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
