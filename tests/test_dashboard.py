"""The dashboard: numbers equal to direct ORM counts on a seeded database, drill-down links
that filter the job list, JSON, and who sees what."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Count, Sum
from django.utils import timezone

from django_remote_submission.models import Job, Result, Status
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(make_job, owner, django_user_model):
    """Jobs of two users in several states, one created long ago (outside a 24 h window)."""
    bob = django_user_model.objects.create_user("bob")
    now = timezone.now()
    plan = [
        (owner, Status.success, "", 10, 40),
        (owner, Status.success, "", 20, 60),
        (owner, Status.failure, "exit code 1", 5, 5),
        (bob, Status.failure, "exit code 1", 1, 1),
        (bob, Status.failure, "timed out", 1, 1),
        (bob, Status.waiting, "", None, None),
    ]
    for user, status, error, wait, run in plan:
        job = make_job("print(1)")
        fields = {"owner": user, "status": status, "error": error, "submitted_at": now}
        if wait is not None:
            fields["started_at"] = now + timedelta(seconds=wait)
            fields["finished_at"] = now + timedelta(seconds=wait + run)
        Job.objects.filter(pk=job.pk).update(**fields)
    old = make_job("print(1)")
    Job.objects.filter(pk=old.pk).update(created=now - timedelta(days=3), status=Status.success)
    return bob


def test_counts_equal_the_orms_and_each_link_lists_exactly_those_jobs(client, owner, seeded):
    staff = owner
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(staff)
    data = client.get("/dashboard/?format=json").json()
    since = timezone.now() - timedelta(hours=24)
    recent = Job.objects.filter(created__gte=since)
    expected = {
        (r["server"], r["owner"], r["status"]): r["n"]
        for r in recent.values("server", "owner", "status").annotate(n=Count("pk"))
    }
    assert {(c["server"], c["owner"], c["status"]): c["jobs"] for c in data["counts"]} == expected
    assert data["failures"] == [
        {"error": "exit code 1", "jobs": 2},
        {"error": "timed out", "jobs": 1},
    ]
    (server,) = data["servers"]
    assert (server["waiting"], server["mean_wait_seconds"], server["mean_run_seconds"]) == (
        1,
        round((10 + 20 + 5 + 1 + 1) / 5, 3),
        round((40 + 60 + 5 + 1 + 1) / 5, 3),
    )
    page = client.get("/dashboard/").content.decode()
    links = re.findall(
        r'<a href="(/\?server=\d+&amp;owner=\d+&amp;status=\w+&amp;hours=24)">(\d+)</a>', page
    )
    assert len(links) == len(expected)
    for href, shown in links:
        listed = client.get(href.replace("&amp;", "&") + "&format=json").json()
        assert listed["count"] == int(shown)
        params = dict(p.split("=") for p in href.replace("&amp;", "&")[2:].split("&"))
        assert all(
            (j["server"], j["owner"], j["status"])
            == (int(params["server"]), int(params["owner"]), params["status"])
            for j in listed["results"]
        )


def test_a_plain_user_sees_only_their_own_jobs(client, seeded):
    client.force_login(seeded)
    data = client.get("/dashboard/?format=json").json()
    assert {c["owner_name"] for c in data["counts"]} == {"bob"}
    assert sum(c["jobs"] for c in data["counts"]) == 3
    assert data["failures"] == [
        {"error": "exit code 1", "jobs": 1},
        {"error": "timed out", "jobs": 1},
    ]


def test_a_bad_window_or_filter_is_a_clear_400(client, owner):
    client.force_login(owner)
    bad = client.get("/dashboard/?hours=abc&format=json")
    assert (bad.status_code, bad.json()) == (
        400,
        {"hours": ["hours must be a whole number from 1 to 8784."]},
    )
    assert client.get("/dashboard/?hours=0").status_code == 400
    refused = client.get("/?status=nonsense")
    assert refused.status_code == 400
    assert refused.content.decode().startswith("status must be one of initial, waiting,")


def _hour(moment):
    return moment.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def test_chart_data_equals_the_orms_numbers(client, owner, seeded, python3):
    owner.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(owner)
    now = timezone.now()
    # Ended five hours ago (in its own bucket), on a second server, with logs and results.
    hpc2 = factories.server(hostname="hpc2.invalid", title="hpc2")
    late = factories.job(owner, hpc2, python3, status=Status.cancelled)
    Job.objects.filter(pk=late.pk).update(
        created=now - timedelta(hours=6),
        submitted_at=now - timedelta(hours=6),
        started_at=now - timedelta(hours=6) + timedelta(seconds=400),
        finished_at=now - timedelta(hours=5),
        stdout_offset=1000,
        stderr_offset=24,
    )
    Result.objects.create(job=late, remote_filename="a", local_file="a", size=5000)
    Result.objects.create(job=late, remote_filename="b", local_file="b", size=7)
    first = Job.objects.filter(server__title="test sshd").order_by("pk").first()
    Job.objects.filter(pk=first.pk).update(stdout_offset=300, stderr_offset=0)
    Result.objects.create(job=first, remote_filename="c", local_file="c", size=11)
    old = Job.objects.filter(created__lt=now - timedelta(days=1)).get()
    Job.objects.filter(pk=old.pk).update(stdout_offset=10**6)
    Result.objects.create(job=old, remote_filename="d", local_file="d", size=10**6)

    charts = client.get("/dashboard/?format=json").json()["charts"]
    since = timezone.now() - timedelta(hours=24)
    recent = Job.objects.filter(created__gte=since)

    outcomes = charts["outcomes"]
    assert outcomes["step_hours"] == 1 and len(outcomes["starts"]) == 25
    for status in ("success", "failure", "cancelled"):
        assert sum(outcomes[status]) == recent.filter(status=status).count()
    assert [sum(outcomes[s]) for s in ("success", "failure", "cancelled")] == [2, 3, 1]
    start = datetime.fromisoformat(outcomes["starts"][0])
    late_index = (_hour(late_finished := now - timedelta(hours=5)) - start) // timedelta(hours=1)
    assert outcomes["starts"][late_index] == _hour(late_finished).isoformat()
    assert outcomes["cancelled"][late_index] == 1

    durations = charts["durations"]
    assert durations["labels"][0] == "< 1 s" and len(durations["labels"]) == 8
    # Waits 10, 20, 5, 1, 1 and 400 s; runs 40, 60, 5, 1, 1 and 3200 s.
    assert durations["wait"] == [0, 3, 2, 0, 1, 0, 0, 0]
    assert durations["run"] == [0, 3, 1, 1, 0, 1, 0, 0]
    timed = recent.exclude(submitted_at=None).exclude(started_at=None).count()
    assert sum(durations["wait"]) == timed == 6

    volume = charts["volume"]
    assert volume["servers"] == ["hpc2", "test sshd"]
    expected_logs, expected_results = [], []
    for pk in volume["server_ids"]:
        jobs = recent.filter(server=pk)
        sums = jobs.aggregate(out=Sum("stdout_offset"), err=Sum("stderr_offset"))
        expected_logs.append(sums["out"] + sums["err"])
        results = Result.objects.filter(job__in=jobs).aggregate(n=Sum("size"))["n"]
        expected_results.append(results or 0)
    assert volume["log_bytes"] == expected_logs == [1024, 300]
    assert volume["result_bytes"] == expected_results == [5007, 11]

    page = client.get("/dashboard/").content.decode()
    embedded = re.search(
        r'<script id="drs-chart-data" type="application/json">(.*?)</script>', page
    )
    assert json.loads(embedded.group(1))["volume"] == volume
    for name in ("outcomes", "durations", "volume"):
        assert f'<canvas data-chart="{name}"' in page
    assert "vendor/chart.umd.min.js" in page


def test_chart_buckets_stay_bounded_and_a_plain_user_charts_only_their_jobs(client, seeded):
    client.force_login(seeded)  # bob: two failures and a waiting job
    for hours, step in ((24, 1), (200, 1), (201, 2), (500, 3), (4800, 24), (8784, 48)):
        outcomes = client.get(f"/dashboard/?hours={hours}&format=json").json()["charts"]["outcomes"]
        assert outcomes["step_hours"] == step
        assert len(outcomes["starts"]) <= 201
        assert [sum(outcomes[s]) for s in ("success", "failure", "cancelled")] == [0, 2, 0]
    charts = client.get("/dashboard/?format=json").json()["charts"]
    assert sum(charts["durations"]["wait"]) == 2
    assert charts["volume"]["servers"] == ["test sshd"]
