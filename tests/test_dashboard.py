"""The dashboard: numbers equal to direct ORM counts on a seeded database, drill-down links
that filter the job list, JSON, and who sees what."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Count
from django.utils import timezone

from django_remote_submission.models import Job, Status

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
