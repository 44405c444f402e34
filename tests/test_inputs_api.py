"""Arguments, environment and input files through the API and the pages."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from django_remote_submission import services
from django_remote_submission.models import Job, Status
from tests.api_world import build_world, client, fake_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def queued(monkeypatch):
    tasks = fake_tasks()
    monkeypatch.setattr(services, "tasks", tasks)
    return tasks


def new_job(w, **extra) -> dict:
    return {
        "title": "new",
        "program": "print(2)",
        "server": w.server.pk,
        "interpreter": w.python3.pk,
        "remote_directory": "/tmp/x",
        "remote_filename": "a.py",
        **extra,
    }


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def test_a_job_is_created_with_arguments_and_environment(world):
    body = new_job(world, arguments=["-n", "two words", ""], environment={"MODE": "$(x)"})
    answer = client(world, "owner").post("/api/jobs/", body, format="json")
    assert answer.status_code == 201, answer.json()
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.arguments == ["-n", "two words", ""] and job.environment == {"MODE": "$(x)"}
    assert answer.json()["arguments"] == ["-n", "two words", ""]
    assert answer.json()["environment"] == {"MODE": "$(x)"}
    assert answer.json()["inputs_url"] == f"http://testserver/api/inputs/?job={job.pk}"


@pytest.mark.parametrize(
    "extra, errors",
    [
        (
            {"environment": {"BAD-NAME": "1"}},
            {
                "environment": [
                    "'BAD-NAME' is not a valid variable name (letters, digits and _, not "
                    "starting with a digit)."
                ]
            },
        ),
        (
            {"environment": {"DRS_RUN_ID": "1"}},
            {
                "environment": [
                    "'DRS_RUN_ID' is reserved: names starting with DRS_ are set by the app."
                ]
            },
        ),
        (
            {"arguments": "not a list"},
            {"arguments": ['Expected a list of items but got type "str".']},
        ),
        ({"arguments": ["a\0b"]}, {"arguments": {"0": ["Null characters are not allowed."]}}),
    ],
)
def test_invalid_arguments_or_environment_answer_400_with_the_field(world, extra, errors):
    answer = client(world, "owner").post("/api/jobs/", new_job(world, **extra), format="json")
    assert answer.status_code == 400
    assert answer.json() == errors
    assert not Job.objects.filter(title="new").exists()


def test_an_input_is_uploaded_listed_downloaded_and_removed(world):
    api = client(world, "owner")
    data = bytes(range(256)) * 10
    answer = api.post(
        "/api/inputs/",
        {"job": world.job.pk, "path": "sub/data.bin", "file": upload("ignored.bin", data)},
        format="multipart",
    )
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["job"], body["path"], body["size"]) == (world.job.pk, "sub/data.bin", 2560)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    listed = api.get(f"/api/inputs/?job={world.job.pk}").json()["results"]
    assert [i["path"] for i in listed] == ["sub/data.bin"]
    download = api.get(body["download_url"])
    assert download.status_code == 200 and b"".join(download.streaming_content) == data
    assert api.delete(f"/api/inputs/{body['id']}/").status_code == 204
    assert not world.job.inputs.exists()


def test_the_path_defaults_to_the_files_name(world):
    api = client(world, "owner")
    answer = api.post(
        "/api/inputs/", {"job": world.job.pk, "file": upload("x.csv", b"1")}, format="multipart"
    )
    assert answer.status_code == 201 and answer.json()["path"] == "x.csv"


@pytest.mark.parametrize(
    "path, message",
    [
        ("../x", "'../x': '..' would leave the job's directory."),
        ("/tmp/x", "'/tmp/x': an input's name must be relative to the job's directory."),
    ],
)
def test_names_leaving_the_directory_answer_400_on_path(world, path, message):
    answer = client(world, "owner").post(
        "/api/inputs/",
        {"job": world.job.pk, "path": path, "file": upload("x", b"1")},
        format="multipart",
    )
    assert answer.status_code == 400
    assert answer.json() == {"path": [message]}
    assert not world.job.inputs.exists()


def test_an_input_over_the_limit_answers_400_on_file(world, settings):
    settings.DRS = {"INPUT_MAX_BYTES": 10}
    answer = client(world, "owner").post(
        "/api/inputs/",
        {"job": world.job.pk, "path": "x", "file": upload("x", b"12345678901")},
        format="multipart",
    )
    assert answer.status_code == 400
    # Dropped while it arrives (inputs.UploadLimit): never stored whole.
    assert answer.json() == {
        "file": ["'x' is over the limit of 10 bytes per input (DRS['INPUT_MAX_BYTES'])."]
    }


def test_inputs_of_someone_elses_job_are_refused_and_not_shown(world):
    services.add_input(world.job, world.users["owner"], "mine.txt", upload("m", b"secret"))
    other = client(world, "other")
    answer = other.post(
        "/api/inputs/", {"job": world.job.pk, "file": upload("x", b"1")}, format="multipart"
    )
    assert answer.status_code == 400
    assert list(answer.json()) == ["job"]
    assert other.get("/api/inputs/").json()["results"] == []
    row = world.job.inputs.get()
    assert other.get(f"/api/inputs/{row.pk}/download/").status_code == 404


def test_inputs_of_a_running_job_cannot_change(world):
    Job.objects.filter(pk=world.job.pk).update(status=Status.running)
    answer = client(world, "owner").post(
        "/api/inputs/", {"job": world.job.pk, "file": upload("x", b"1")}, format="multipart"
    )
    assert answer.status_code == 409
    assert answer.json() == {"detail": "The job is running: its inputs cannot change now."}


def test_the_form_creates_a_job_with_arguments_environment_and_inputs(
    world, queued, django_capture_on_commit_callbacks
):
    from django.test import Client

    browser = Client()
    browser.force_login(world.users["owner"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = browser.post(
            "/jobs/new/",
            {
                "title": "formed",
                "server": world.server.pk,
                "interpreter": world.python3.pk,
                "program": "print(1)",
                "remote_directory": "d",
                "remote_filename": "a.py",
                "auth": "password",
                "password": "pw",
                "arguments": "-n 3 'two words' \"it's\" '$(id)'",
                "environment": "MODE=fast\r\nEMPTY=\r\n",
                "input_files": [upload("a.csv", b"1,2"), upload("b.bin", b"\0")],
            },
        )
    assert answer.status_code == 302, answer.context["form"].errors
    job = Job.objects.get(title="formed")
    assert job.arguments == ["-n", "3", "two words", "it's", "$(id)"]
    assert job.environment == {"MODE": "fast", "EMPTY": ""}
    assert sorted(job.inputs.values_list("path", "size")) == [("a.csv", 3), ("b.bin", 1)]
    assert len(queued.submit_job_to_server.calls) == 1
    page = browser.get(f"/jobs/{job.pk}/").content.decode()
    assert "<code>-n 3 &#x27;two words&#x27; &#x27;it&#x27;&quot;&#x27;&quot;&#x27;s&#x27;" in page
    assert "<code>MODE=fast</code>" in page and "<code>a.csv</code>" in page


def test_the_form_refuses_invalid_environment_with_a_field_error(world, queued):
    from django.test import Client

    browser = Client()
    browser.force_login(world.users["owner"])
    answer = browser.post(
        "/jobs/new/",
        {
            "title": "formed",
            "server": world.server.pk,
            "interpreter": world.python3.pk,
            "program": "print(1)",
            "remote_directory": "d",
            "auth": "stored",
            "environment": "1X=a",
            "arguments": "'unclosed",
        },
    )
    assert answer.status_code == 200
    errors = answer.context["form"].errors
    assert errors["environment"] == [
        "'1X' is not a valid variable name (letters, digits and _, not starting with a digit)."
    ]
    assert errors["arguments"] == ["No closing quotation"]
    assert not Job.objects.filter(title="formed").exists()


def _admin_post(job, **extra) -> dict:
    data = {
        "title": job.title,
        "owner": job.owner_id,
        "server": job.server_id,
        "interpreter": job.interpreter_id,
        "program": job.program,
        "remote_directory": job.remote_directory,
        "remote_filename": job.remote_filename,
        "arguments": '["-v", "two words"]',
        "environment": '{"MODE": "fast"}',
    }
    for prefix in ("inputs", "results", "events", "logs"):
        data[f"{prefix}-TOTAL_FORMS"] = 0
        data[f"{prefix}-INITIAL_FORMS"] = 0
    return {**data, **extra}


def test_the_admin_edits_arguments_environment_and_adds_inputs(world):
    from django.test import Client

    admin = Client()
    admin.force_login(world.users["superuser"])
    url = f"/admin/django_remote_submission/job/{world.job.pk}/change/"
    answer = admin.post(
        url,
        _admin_post(
            world.job,
            **{
                "inputs-TOTAL_FORMS": 2,
                "inputs-0-path": "data/a.csv",
                "inputs-0-file": upload("ignored.csv", b"1,2\n"),
                "inputs-1-path": "",
                "inputs-1-file": upload("b.bin", b"\0\1"),
            },
        ),
    )
    assert answer.status_code == 302, answer.context["adminform"].form.errors or [
        f.errors for f in answer.context["inline_admin_formsets"][0].formset
    ]
    job = Job.objects.get(pk=world.job.pk)
    assert job.arguments == ["-v", "two words"] and job.environment == {"MODE": "fast"}
    rows = {i.path: (i.size, i.sha256) for i in job.inputs.all()}
    assert rows == {
        "b.bin": (2, hashlib.sha256(b"\0\1").hexdigest()),
        "data/a.csv": (4, hashlib.sha256(b"1,2\n").hexdigest()),
    }


def test_the_admin_refuses_a_name_leaving_the_directory_and_a_bad_variable(world):
    from django.test import Client

    admin = Client()
    admin.force_login(world.users["superuser"])
    url = f"/admin/django_remote_submission/job/{world.job.pk}/change/"
    answer = admin.post(
        url,
        _admin_post(
            world.job,
            environment='{"A B": "1"}',
            **{
                "inputs-TOTAL_FORMS": 1,
                "inputs-0-path": "../escape",
                "inputs-0-file": upload("x", b"1"),
            },
        ),
    )
    assert answer.status_code == 200
    assert answer.context["adminform"].form.errors == {
        "environment": [
            "'A B' is not a valid variable name (letters, digits and _, not starting with a digit)."
        ]
    }
    inline = answer.context["inline_admin_formsets"][0].formset
    assert inline.forms[0].errors == {
        "path": ["'../escape': '..' would leave the job's directory."]
    }
    assert not world.job.inputs.exists()


def test_arguments_and_environment_are_edited_with_patch(world):
    api = client(world, "owner")
    answer = api.patch(
        f"/api/jobs/{world.job.pk}/",
        {"arguments": ["--again"], "environment": {"K": "v"}},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    world.job.refresh_from_db()
    assert (world.job.arguments, world.job.environment) == (["--again"], {"K": "v"})
    bad = api.patch(f"/api/jobs/{world.job.pk}/", {"environment": {"K-1": "v"}}, format="json")
    assert bad.status_code == 400 and list(bad.json()) == ["environment"]
    world.job.refresh_from_db()
    assert world.job.environment == {"K": "v"}


def _form(world, **extra) -> dict:
    return {
        "title": "formed",
        "server": world.server.pk,
        "interpreter": world.python3.pk,
        "program": "print(1)",
        "remote_directory": "d",
        "auth": "password",
        "password": "pw",
        **extra,
    }


def test_a_file_over_the_limit_is_dropped_while_it_arrives_on_the_form(world, settings, queued):
    from django.test import Client

    settings.DRS = {"INPUT_MAX_BYTES": 1024}
    browser = Client()
    browser.force_login(world.users["owner"])
    big = upload("big.bin", b"x" * 5000)
    answer = browser.post("/jobs/new/", _form(world, input_files=[upload("ok.txt", b"1"), big]))
    assert answer.status_code == 200
    assert answer.context["form"].errors == {
        "input_files": [
            "'big.bin' is over the limit of 1.0 KiB per input (DRS['INPUT_MAX_BYTES'])."
        ]
    }
    assert not Job.objects.filter(title="formed").exists()


def test_the_new_job_form_still_checks_csrf(world):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.users["owner"])
    answer = browser.post("/jobs/new/", _form(world, input_files=[upload("a.txt", b"1")]))
    assert answer.status_code == 403
    assert not Job.objects.filter(title="formed").exists()


def test_an_input_named_like_the_program_is_a_field_error_on_the_form(world, queued):
    from django.test import Client

    browser = Client()
    browser.force_login(world.users["owner"])
    files = [upload("data.csv", b"1"), upload("a.py", b"print(2)")]
    answer = browser.post("/jobs/new/", _form(world, remote_filename="a.py", input_files=files))
    assert answer.status_code == 200
    assert answer.context["form"].errors == {
        "input_files": ["'a.py' is the job's program file; give the input another name."]
    }
    assert not Job.objects.filter(title="formed").exists()
