"""Resources for batch schedulers: checked wherever they come from (the form, the API,
``submit_job_to_server``), turned into each scheduler's options, shown on the pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from django_remote_submission import resources
from django_remote_submission.launchers import launcher_for
from django_remote_submission.launchers.base import SchedulerState
from django_remote_submission.launchers.batch import Board
from django_remote_submission.models import Interpreter, Job, Server, Status
from tests.api_world import build_world, client

pytestmark = pytest.mark.django_db


def test_resources_are_stored_in_seconds_and_mib():
    asked = {"walltime": "1-2:03:04", "memory": "2G", "cpus": "4", "gpus": 0, "partition": ""}
    assert resources.clean(asked) == {"walltime": 93784, "memory": 2048, "cpus": 4, "gpus": 0}
    assert resources.format_walltime(93784) == "26:03:04"


@pytest.mark.parametrize(
    "asked, field, message",
    [
        ({"partition": "a\nb"}, "partition", "Only letters"),
        ({"partition": "debug --uid=0"}, "partition", "Only letters"),
        ({"walltime": "0:61:00"}, "walltime", "Minutes and seconds go up to 59."),
        ({"walltime": 0}, "walltime", "More than zero"),
        ({"memory": "lots"}, "memory", "MiB, or a size"),
        ({"cpus": 0}, "cpus", "A whole number from 1"),
        ({"extra": ["--comment=a\n#SBATCH --uid=0"]}, "extra", "without newlines"),
        ({"extra": ["constraint=avx2"]}, "extra", "starts with an option"),
        ({"extra": ['--comment="open']}, "extra", "No closing quotation"),
        ({"nodes": 2}, "nodes", "Unknown resource"),
    ],
)
def test_a_value_that_could_end_a_directive_is_a_field_error(asked, field, message):
    with pytest.raises(resources.ResourceError) as caught:
        resources.clean(asked)
    assert list(caught.value.errors) == [field]
    assert message in caught.value.errors[field]


def test_options_the_app_sets_are_refused_per_scheduler():
    slurm = launcher_for("slurm", None).reserved
    sge = launcher_for("sge", None).reserved
    assert "may not be given" in slurm(["--output=/tmp/x"])
    assert "may not be given" in slurm(["-J", "x"])
    assert slurm(["--constraint=avx2"]) == ""
    assert "may not be given" in sge(["-o", "/tmp/x"])
    assert sge(["-l", "arch=lx-amd64"]) == ""


def test_each_scheduler_gets_its_own_options():
    asked = {
        "partition": "short",
        "walltime": 90061,
        "cpus": 4,
        "memory": 2048,
        "gpus": 2,
        "account": "proj42",
        "extra": ["--constraint=avx2", "-l arch=lx-amd64"],
    }
    assert launcher_for("slurm", None).directives(asked) == [
        "--partition=short",
        "--time=1-1:01:01",
        "--cpus-per-task=4",
        "--mem=2048M",
        "--gres=gpu:2",
        "--account=proj42",
        "--constraint=avx2",
        "-l",
        "arch=lx-amd64",
    ]
    assert launcher_for("sge", None).directives(asked) == [
        "-q",
        "short",
        "-l",
        "h_rt=90061",
        "-pe",
        "smp",
        "4",
        "-l",
        "h_vmem=2048M",
        "-l",
        "gpu=2",
        "-A",
        "proj42",
        "--constraint=avx2",
        "-l",
        "arch=lx-amd64",
    ]


def test_defaults_layer_server_then_interpreter_then_job_and_timeout_is_the_walltime():
    server = {"partition": "long", "walltime": 3600, "extra": ["--a=1"]}
    interpreter = {"cpus": 4, "extra": ["--b=2"]}
    job = {"partition": "short"}
    assert resources.effective(server, interpreter, job, timeout=60) == {
        "partition": "short",
        "walltime": 3600,
        "cpus": 4,
        "extra": ["--a=1", "--b=2"],
    }
    assert resources.effective(None, None, None, timeout=59.5) == {"walltime": 60}


def test_one_status_query_answers_every_job_of_a_board():
    board, calls = Board(), []

    def poll():
        calls.append(1)
        return {"1": SchedulerState("PENDING"), "2": SchedulerState("RUNNING")}

    assert board.state("1", poll, 60).state == "PENDING"
    assert board.state("2", poll, 60).state == ""  # not asked for in that query: next one
    assert board.state("1", poll, 60).state == "PENDING"
    assert len(calls) == 1
    assert board.state("2", poll, 0).state == "RUNNING"
    assert len(calls) == 2


def test_slurm_and_sge_answers_are_read_exactly():
    slurm = launcher_for("slurm", None)
    states = slurm.parse_states("12|PENDING|Priority\n13|RUNNING|None\nbad line\n")
    assert [(k, v.shown, v.phase) for k, v in states.items()] == [
        ("12", "PENDING (Priority)", "queued"),
        ("13", "RUNNING", "running"),
    ]
    record = (
        "scontrol JobId=5 JobName=JobState=COMPLETED UserId=a(1) JobState=TIMEOUT "
        "Reason=TimeLimit ExitCode=0:15 TimeLimit=00:05:00 Command=/x ExitCode=0:0"
    )
    # The first JobState is the job name's: a job's own words come after the fields read.
    ending = slurm.ending_of(None, record.replace("JobName=JobState=COMPLETED", "JobName=x"))
    assert ending.error == "The scheduler stopped the job: walltime exceeded (limit 0:05:00)."
    ending = slurm.ending_of(None, "sacct OUT_OF_MEMORY|0:125|00:10:00|2000M")
    assert ending.error == "The scheduler stopped the job: out of memory (limit 2000M)."
    ending = slurm.ending_of(None, "sacct CANCELLED by 0|0:15|00:10:00|")
    assert (
        ending.cancelled
        == "Cancelled on the cluster, outside this app (Slurm: CANCELLED by 0 0:15)."
    )
    ending = slurm.ending_of(None, "sacct NODE_FAIL|0:0|00:10:00|")
    assert ending.error == "The node running the job failed (Slurm NODE_FAIL)."
    assert slurm.ending_of(None, "unknown\n") is None

    sge = launcher_for("sge", None)
    row = "{:>7} {:7} {:10} {:12} {:5} {:19} {:30} {:>5}\n"
    table = (
        row.format("job-ID", "prior", "name", "user", "state", "submit/start at", "queue", "slots")
        + "-" * 100
        + "\n"
        + row.format(7, "0.00000", "a b c", "ada", "hqw", "12/01/2026 16:22:10", "", 1)
        + row.format(8, "0.50000", "job", "ada", "r", "12/01/2026 16:22:33", "all.q@vm", 1)
    )
    assert {k: v.shown for k, v in sge.parse_states(table).items()} == {
        "7": "hqw (on hold)",
        "8": "r (running)",
    }
    walltime = "failed       37  : qmaster enforced h_rt\nexit_status  137\nru_wallclock 4s\n"
    walltime += "category     -l h_rt=3\n"
    assert sge.ending_of(None, walltime).error == (
        "The scheduler stopped the job: walltime exceeded (limit 0:00:03)."
    )
    assert sge.ending_of(None, "failed 0\nexit_status 3\n").exit_code == 3


@pytest.fixture
def cluster():
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3")
    server = Server.objects.create(
        title="hpc", hostname="hpc.example.org", scheduler="slurm", resources={"walltime": 600}
    )
    server.interpreters.add(python3)
    return server, python3


def test_the_form_asks_for_resources_and_refuses_injection(
    client, cluster, monkeypatch, django_capture_on_commit_callbacks
):
    from django_remote_submission import tasks

    sent = []
    monkeypatch.setattr(tasks.submit_job_to_server, "delay", lambda *a, **kw: sent.append(kw))
    server, python3 = cluster
    get_user_model().objects.create_user("alice", password="pw")
    client.login(username="alice", password="pw")
    form = client.get(reverse("drs:job-create")).content.decode()
    assert 'data-scheduler="slurm"' in form and 'name="walltime"' in form
    data = {
        "title": "t",
        "server": server.pk,
        "interpreter": python3.pk,
        "program": "print(1)",
        "remote_directory": "x",
        "auth": "password",
        "password": "pw",
        "partition": "debug\r\n#SBATCH --uid=0",
        "walltime": "0:10:00",
    }
    page = client.post(reverse("drs:job-create"), data).content.decode()
    assert "Only letters, digits" in page and not Job.objects.exists()
    data["partition"] = "debug"
    data["extra"] = "--constraint=avx2\r\n--nice=5"
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(reverse("drs:job-create"), data).status_code == 302
    assert sent[0]["resources"] == {
        "partition": "debug",
        "walltime": 600,
        "extra": ["--constraint=avx2", "--nice=5"],
    }


def test_the_api_takes_resources_with_field_errors(monkeypatch):
    world = build_world()
    world.server.scheduler = "slurm"
    world.server.save()
    api = client(world, "owner")
    url = f"/api/jobs/{world.job.pk}/submit/"
    body = {"password": "pw", "resources": {"partition": "a\nb", "extra": ["--output=/x"]}}
    response = api.post(url, body, format="json")
    assert response.status_code == 400
    errors = response.json()["resources"]
    assert errors["partition"][0].startswith("Only letters")
    assert errors["extra"][0].startswith("'--output=/x': --output may not be given")
    servers = api.get(f"/api/servers/{world.server.pk}/").json()
    assert (servers["scheduler"], servers["resources"]) == ("slurm", {})


def test_the_job_page_and_admin_show_the_scheduler_job(client, admin_client, cluster):
    server, python3 = cluster
    alice = get_user_model().objects.create_user("alice", password="pw")
    job = Job.objects.create(
        title="t",
        program="1",
        remote_directory="x",
        remote_filename="x",
        owner=alice,
        server=server,
        interpreter=python3,
        status=Status.queued,
        scheduler_id="4242",
        scheduler_state="PENDING (Priority)",
        options={"resources": {"cpus": 2}},
    )
    client.login(username="alice", password="pw")
    page = client.get(reverse("drs:job-detail", args=[job.pk])).content.decode()
    assert '<code data-role="scheduler_id">4242</code>' in page
    assert '<dd data-role="scheduler_state">PENDING (Priority)</dd>' in page
    assert "walltime <code>0:10:00</code> · CPUs <code>2</code>" in page
    assert 'class="drs-badge drs-status-queued"' in page
    listing = admin_client.get(reverse("admin:django_remote_submission_job_changelist"))
    assert "4242 PENDING (Priority)" in listing.content.decode()
