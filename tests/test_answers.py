"""The job list and a job's page answer JSON too, in the REST API's shapes."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from django_remote_submission.models import Event, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def done(make_job):
    job = make_job("print(1)")
    Job.objects.filter(pk=job.pk).update(status="success", exit_code=0)
    job.refresh_from_db()
    for to in ("submitted", "running", "success"):
        Event.objects.create(action=Event.Action.state, job=job, server=job.server, to_state=to)
    return job


def api(owner, path: str) -> dict:
    client = APIClient()
    client.force_authenticate(owner)
    response = client.get(path)
    assert response.status_code == 200
    return response.json()


def test_a_jobs_page_answers_the_apis_job_with_its_results_and_history(client, owner, done):
    client.force_login(owner)
    by_query = client.get(f"/jobs/{done.pk}/?format=json")
    by_header = client.get(f"/jobs/{done.pk}/", HTTP_ACCEPT="application/json")
    assert by_query["Content-Type"] == "application/json"
    assert by_query.json() == by_header.json()
    answer = by_query.json()
    history = answer.pop("history")
    results = answer.pop("results")
    assert answer == api(owner, f"/api/jobs/{done.pk}/")
    assert results == api(owner, f"/api/results/?job={done.pk}")["results"] == []
    assert [e["to_state"] for e in history] == ["submitted", "running", "success"]
    assert [e["seconds"] is None for e in history] == [False, False, True]
    assert answer["logs_url"] == f"http://testserver/api/logs/?job={done.pk}"


def test_the_job_list_answers_a_page_of_the_apis_jobs(client, owner, done, make_job):
    other = make_job("print(2)")
    client.force_login(owner)
    answer = client.get("/?format=json").json()
    assert (answer["count"], answer["page"], answer["pages"]) == (2, 1, 1)
    assert [j["id"] for j in answer["results"]] == [other.pk, done.pk]
    assert answer["results"] == api(owner, "/api/jobs/")["results"]


def test_a_browser_still_gets_html(client, owner, done):
    client.force_login(owner)
    accept = "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"
    response = client.get(f"/jobs/{done.pk}/", HTTP_ACCEPT=accept)
    assert response["Content-Type"].startswith("text/html")


def test_another_users_job_is_not_found_in_json_either(client, done, django_user_model):
    client.force_login(django_user_model.objects.create_user("mallory"))
    assert client.get(f"/jobs/{done.pk}/?format=json").status_code == 404
