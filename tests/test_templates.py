"""Job templates: typed parameters become a form (page and API) and reach the program as
arguments, environment and input files (real sshd, through a real Celery worker)."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from django_remote_submission.models import (
    FINAL_STATES,
    Job,
    JobTemplate,
    Server,
)
from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PROGRAM = (
    "import json, os, sys\n"
    "data = open(os.environ['DATA'], 'rb').read() if 'DATA' in os.environ else b''\n"
    "print(json.dumps([sys.argv[1:], {k: os.environ.get(k) for k in ('MODE', 'DATA')},"
    " data.decode()]))\n"
)


@pytest.fixture
def template(server, python3):
    t = JobTemplate.objects.create(
        name="Analysis",
        description="Counts things.",
        interpreter=python3,
        program=PROGRAM,
        remote_filename="analysis.py",
    )
    t.servers.set([server])
    t.parameters.create(position=1, name="bins", type="integer", default="10", required=True)
    t.parameters.create(position=2, name="scale", type="float", passed_as="positional")
    t.parameters.create(
        position=3, name="mode", type="choice", choices=["fast", "exact"], passed_as="environment"
    )
    t.parameters.create(position=4, name="verbose", type="boolean")
    t.parameters.create(position=5, name="label", type="text")
    t.parameters.create(
        position=6, name="data", type="file", passed_as="environment", target="in/data.csv"
    )
    return t


@pytest.fixture
def other_server(db, python3):
    s = Server.objects.create(title="elsewhere", hostname="127.0.0.1", port=9)
    s.interpreters.set([python3])
    return s


def finished(job_id: int, worker) -> Job:
    wait_for(
        lambda: Job.objects.get(pk=job_id).status in FINAL_STATES,
        timeout=60,
        message=lambda: f"job {job_id} final; worker log: {worker.log()[-2000:]}",
    )
    return Job.objects.get(pk=job_id)


def stdout(job: Job) -> str:
    return "".join(job.logs.filter(stream="stdout").values_list("content", flat=True))


def test_the_template_runs_through_the_api_with_every_type(template, owner, sshd, server, worker):
    api = APIClient()
    api.force_authenticate(owner)
    listed = api.get("/api/templates/").json()["results"]
    assert [t["name"] for t in listed] == ["Analysis"]
    assert listed[0]["servers"] == [server.pk]
    assert listed[0]["parameters"][0] == {
        "name": "bins",
        "label": "bins",
        "type": "integer",
        "choices": None,
        "default": "10",
        "help": "",
        "required": True,
        "passed_as": "option",
        "target": "--bins",
    }
    assert [p["type"] for p in listed[0]["parameters"]] == [
        "integer",
        "float",
        "choice",
        "boolean",
        "text",
        "file",
    ]
    answer = api.post(
        f"/api/templates/{template.pk}/run/",
        {
            "server": server.pk,
            "password": sshd.password or "",
            "bins": "7",
            "scale": "2.5",
            "mode": "exact",
            "verbose": "true",
            "label": "a b; $(id)",
            "data": SimpleUploadedFile("upload.csv", b"x,y\n1,2\n"),
        },
        format="multipart",
    )
    assert answer.status_code == 202, answer.json()
    job = finished(answer.json()["id"], worker)
    assert job.status == Job.STATUS.success, job.error
    assert json.loads(stdout(job)) == [
        ["--bins", "7", "2.5", "--verbose", "--label", "a b; $(id)"],
        {"MODE": "exact", "DATA": "in/data.csv"},
        "x,y\n1,2\n",
    ]
    assert job.template == template
    assert job.template_values == {
        "bins": 7,
        "scale": 2.5,
        "mode": "exact",
        "verbose": True,
        "label": "a b; $(id)",
        "data": "upload.csv",
    }
    assert not job.results.exists()


def test_invalid_values_answer_400_with_field_errors(template, owner, server):
    api = APIClient()
    api.force_authenticate(owner)
    answer = api.post(
        f"/api/templates/{template.pk}/run/",
        {"server": server.pk, "bins": "many", "scale": "x", "mode": "slow"},
        format="json",
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "bins": ["Enter a whole number."],
        "scale": ["Enter a number."],
        "mode": ["Select a valid choice. slow is not one of the available choices."],
    }
    assert not Job.objects.exists()


def test_a_template_restricted_to_one_server_cannot_run_on_another(template, owner, other_server):
    api = APIClient()
    api.force_authenticate(owner)
    answer = api.post(
        f"/api/templates/{template.pk}/run/",
        {"server": other_server.pk, "bins": 1},
        format="json",
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "server": ["Select a valid choice. That choice is not one of the available choices."]
    }
    assert not Job.objects.exists()


def test_the_generated_form_runs_and_run_again_prefills_it(template, owner, sshd, server, worker):
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/templates/{template.pk}/").content.decode()
    for name in ("bins", "scale", "mode", "verbose", "label", "data"):
        assert f'name="{name}"' in page
    answer = browser.post(
        f"/templates/{template.pk}/",
        {
            "server": server.pk,
            "password": sshd.password or "",
            "bins": "3",
            "mode": "fast",
            "label": "x",
        },
    )
    assert answer.status_code == 302, answer.context["form"].errors
    job = Job.objects.get()
    job = finished(job.pk, worker)
    assert job.status == Job.STATUS.success, job.error
    assert json.loads(stdout(job)) == [
        ["--bins", "3", "--label", "x"],
        {"MODE": "fast", "DATA": None},
        "",
    ]
    again = browser.get(f"/templates/{template.pk}/?job={job.pk}")
    form = again.context["form"]
    assert (form["bins"].value(), form["mode"].value(), form["label"].value()) == (3, "fast", "x")
    detail = browser.get(f"/jobs/{job.pk}/").content.decode()
    assert f'href="/templates/{template.pk}/?job={job.pk}"' in detail


def test_the_form_refuses_values_of_the_wrong_type(template, owner, server):
    browser = Client()
    browser.force_login(owner)
    answer = browser.post(
        f"/templates/{template.pk}/", {"server": server.pk, "bins": "1.5", "scale": "e"}
    )
    assert answer.status_code == 200
    assert answer.context["form"].errors == {
        "bins": ["Enter a whole number."],
        "scale": ["Enter a number."],
    }


def test_parameter_definitions_are_checked(template):
    from django.core.exceptions import ValidationError

    bad = template.parameters.model(
        template=template,
        name="n",
        type="integer",
        default="x",
        passed_as="environment",
        target="1BAD",
    )
    with pytest.raises(ValidationError) as info:
        bad.full_clean()
    assert info.value.message_dict == {
        "default": ["Not a valid integer: Enter a whole number."],
        "target": [
            "'1BAD' is not a valid variable name (letters, digits and _, not starting with a "
            "digit)."
        ],
    }


@pytest.fixture
def demo_templates(server, python3, bash):
    """The two templates ``make demo`` ships (example/demo_site), on the test sshd."""
    import os
    import sys

    example = os.path.join(os.path.dirname(os.path.dirname(__file__)), "example")
    sys.path.insert(0, example)
    try:
        from demo_site.management.commands import demo_data
    finally:
        sys.path.remove(example)
    demo_data.demo_templates([server], python3, bash)
    return demo_data


def test_the_demo_templates_run_and_return_their_results(
    demo_templates, owner, sshd, server, worker
):
    api = APIClient()
    api.force_authenticate(owner)
    analysis = JobTemplate.objects.get(name=demo_templates.ANALYSIS_NAME)
    csv = b"name,value\na,1\nb,2\nc,2\nd,9\n"
    answer = api.post(
        f"/api/templates/{analysis.pk}/run/",
        {
            "server": server.pk,
            "password": sshd.password or "",
            "data": SimpleUploadedFile("measures.csv", csv),
            "column": "value",
            "bins": "4",
            "title": "My <data>",
        },
        format="multipart",
    )
    assert answer.status_code == 202, answer.json()
    job = finished(answer.json()["id"], worker)
    assert job.status == Job.STATUS.success, job.error
    assert stdout(job).splitlines()[0] == "4 values in column 'value'"
    assert list(job.results.values_list("remote_filename", flat=True)) == ["plot.svg"]
    assert b"<svg" in job.results.get().local_file.read()

    count = JobTemplate.objects.get(name=demo_templates.COUNT_NAME)
    answer = api.post(
        f"/api/templates/{count.pk}/run/",
        {
            "server": server.pk,
            "password": sshd.password or "",
            "text": SimpleUploadedFile("words.txt", b"the cat and the hat; The end"),
            "top": "5",
        },
        format="multipart",
    )
    assert answer.status_code == 202, answer.json()
    job = finished(answer.json()["id"], worker)
    assert job.status == Job.STATUS.success, job.error
    lines = [" ".join(line.split()) for line in stdout(job).splitlines()]
    assert lines[:2] == ["Words in words.txt:", "3 the"]
    assert list(job.results.values_list("remote_filename", flat=True)) == ["counts.txt"]


def test_a_file_value_over_the_limit_answers_400_on_its_field(template, owner, server, settings):
    settings.DRS = {"INPUT_MAX_BYTES": 100}
    api = APIClient()
    api.force_authenticate(owner)
    answer = api.post(
        f"/api/templates/{template.pk}/run/",
        {
            "server": server.pk,
            "password": "pw",
            "bins": "1",
            "data": SimpleUploadedFile("big.csv", b"x" * 101),
        },
        format="multipart",
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "data": ["'big.csv' is over the limit of 100 bytes per input (DRS['INPUT_MAX_BYTES'])."]
    }
    assert not Job.objects.exists()


def test_the_schema_describes_templates_parameters_and_run(owner):
    api = APIClient()
    api.force_authenticate(owner)
    schema = api.get("/api/schema/?format=json").json()
    parameter = schema["components"]["schemas"]["Parameter"]["properties"]
    assert set(parameter) == {
        "name",
        "label",
        "type",
        "choices",
        "default",
        "help",
        "required",
        "passed_as",
        "target",
    }
    kind = parameter["type"]
    if "$ref" in kind or "allOf" in kind:  # drf-spectacular names the enum as a component
        ref = kind.get("$ref") or kind["allOf"][0]["$ref"]
        kind = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert kind["enum"] == ["text", "integer", "float", "choice", "boolean", "file"]
    run = schema["paths"]["/api/templates/{id}/run/"]["post"]
    assert set(run["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "202" in run["responses"]
    assert "/api/inputs/" in schema["paths"]


def _template_post(python3, server, **parameter) -> dict:
    data = {
        "name": "From the admin",
        "description": "",
        "active": "on",
        "interpreter": python3.pk,
        "servers": [server.pk],
        "remote_filename": "job.py",
        "program": "print(1)\r\n",
        "resources": "{}",
        "parameters-TOTAL_FORMS": 1,
        "parameters-INITIAL_FORMS": 0,
    }
    for key, value in {"position": 1, "type": "text", "passed_as": "option", **parameter}.items():
        data[f"parameters-0-{key}"] = value
    return data


def test_staff_define_a_template_and_its_parameters_in_the_admin(python3, server):
    from django.contrib.auth import get_user_model

    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("boss"))
    url = "/admin/django_remote_submission/jobtemplate/add/"
    bad = admin.post(url, _template_post(python3, server, name="title", type="integer"))
    assert bad.status_code == 200
    form = bad.context["inline_admin_formsets"][0].formset.forms[0]
    assert form.errors == {
        "name": ["'title' is taken by the form itself (password, server, title, username)."]
    }
    good = admin.post(
        url,
        _template_post(
            python3, server, name="bins", type="choice", choices='["1", "2"]', default="2"
        ),
    )
    assert good.status_code == 302
    template = JobTemplate.objects.get(name="From the admin")
    assert template.program == "print(1)\n"
    assert list(template.servers.all()) == [server]
    assert [(p.name, p.type, p.choices, p.default) for p in template.parameters.all()] == [
        ("bins", "choice", ["1", "2"], "2")
    ]


def test_a_file_value_named_like_the_program_answers_400(python3, server, owner):
    template = JobTemplate.objects.create(
        name="Named", interpreter=python3, program="print(1)", remote_filename="run.py"
    )
    template.parameters.create(name="data", type="file", passed_as="positional")
    api = APIClient()
    api.force_authenticate(owner)
    answer = api.post(
        f"/api/templates/{template.pk}/run/",
        {"server": server.pk, "password": "pw", "data": SimpleUploadedFile("run.py", b"x")},
        format="multipart",
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "non_field_errors": ["'run.py' is the job's program file; give the input another name."]
    }
    assert not Job.objects.exists()
