"""Jobs through real batch schedulers: a single-node Slurm and a single-node Grid Engine
(tests/schedulers.py), reached over the real sshd as a normal login.

Every case runs against both schedulers; the cases every launcher must pass (``LAUNCHERS``)
run against ``direct`` too, so the three keep one contract. The login's scheduler commands
are wrappers that count each call, so "submitted once" and "one status query per interval"
are counted, not assumed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest

from django_remote_submission import runner
from django_remote_submission.launchers import launcher_for
from django_remote_submission.launchers.base import Spec
from django_remote_submission.models import FINAL_STATES, Job, Server
from django_remote_submission.remote import Credentials, Target
from django_remote_submission.remote.ssh import SSHTransport
from django_remote_submission.tasks import cancel_job, submit_job_to_server
from tests.conftest import unavailable
from tests.schedulers import USER, make_login, start_sge, start_slurm
from tests.services import (
    KEY_USER,
    PASSWORD_USER,
    TEST_PASSWORD,
    ServiceUnavailable,
    start_sshd,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.scheduler, pytest.mark.django_db(transaction=True)]

POLL = {"slurm": "squeue", "sge": "qstat"}
SUBMIT = {"slurm": "sbatch", "sge": "qsub"}
# Resources that keep a job waiting: Slurm's partition "held" is down, Grid Engine holds it.
WAITING = {"slurm": {"partition": "held"}, "sge": {"extra": ["-h"]}}
WAITING_STATE = {"slurm": "PENDING (PartitionDown)", "sge": "hqw (on hold)"}
DONE_STATE = {"direct": "", "slurm": "COMPLETED 0:0", "sge": "failed 0, exit_status 0"}
# The launcher contract: these cases run against every launcher.
LAUNCHERS = pytest.mark.parametrize("kind", ["direct", "slurm", "sge"], indirect=True)


@pytest.fixture(scope="session")
def sched_sshd():
    """The test sshd, letting the scheduler login in too."""
    if os.geteuid() != 0:
        unavailable("batch schedulers need root (daemons, packages, a test login)")
    try:
        server = start_sshd(extra=(f"AllowUsers {KEY_USER} {PASSWORD_USER} {USER}",))
    except ServiceUnavailable as exc:
        unavailable(f"sshd unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def login(sched_sshd):
    with open(sched_sshd.key_file + ".pub") as f:
        login = make_login(f.read().strip())
    base = f"{login.home}/drs-tests-{secrets.token_hex(4)}"
    os.mkdir(base)
    shutil.chown(base, USER, USER)
    login.base = base
    yield login
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    try:
        cluster = start_slurm()
    except ServiceUnavailable as exc:
        unavailable(f"Slurm unavailable: {exc}")
    yield cluster
    cluster.release()


@pytest.fixture(scope="session")
def sge_cluster():
    try:
        cluster = start_sge()
    except ServiceUnavailable as exc:
        unavailable(f"Grid Engine unavailable: {exc}")
    yield cluster
    cluster.release()


@pytest.fixture(params=["slurm", "sge"])
def kind(request, login) -> str:
    if request.param != "direct":
        request.getfixturevalue(f"{request.param}_cluster")
    login.reset_calls()
    return request.param


@pytest.fixture
def cluster_server(db, kind, sched_sshd, python3, bash):
    server = Server.objects.create(
        title=f"{kind} test cluster",
        hostname=sched_sshd.host,
        port=sched_sshd.port,
        host_key=sched_sshd.host_key,
        scheduler=kind,
    )
    server.interpreters.set([python3, bash])
    return server


@pytest.fixture
def sched_owner(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(USER)


@pytest.fixture
def make_cluster_job(cluster_server, sched_owner, python3, login, request):
    def make(program: str, **fields) -> Job:
        return Job.objects.create(
            title=request.node.name,
            program=program,
            owner=sched_owner,
            server=cluster_server,
            interpreter=fields.pop("interpreter", python3),
            remote_directory=f"{login.base}/{uuid.uuid4().hex[:10]}",
            remote_filename="job.py",
            **fields,
        )

    return make


class Background:
    """``runner.submit`` in a thread, as a worker would run it."""

    running: list[Background] = []

    def __init__(self, job: Job, **kwargs) -> None:
        kwargs.setdefault("password", TEST_PASSWORD)
        self.job = job
        self.thread = threading.Thread(target=runner.submit, args=(job.pk,), kwargs=kwargs)
        self.thread.start()
        self.running.append(self)

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"


@pytest.fixture(autouse=True)
def no_run_left_behind():
    """A test that failed midway leaves no run going into the next test's database."""
    yield
    while Background.running:
        run = Background.running.pop()
        if run.thread.is_alive():
            runner.cancel(run.job.pk)
            run.thread.join(120)


def stream(job: Job, name: str = "stdout") -> str:
    rows = job.logs.filter(stream=name).order_by("id").values_list("content", flat=True)
    return "".join(rows)


def fresh(job: Job) -> Job:
    job.refresh_from_db()
    return job


def final(job: Job, timeout: float = 120) -> Job:
    wait_for(
        lambda: fresh(job).status in FINAL_STATES,
        timeout=timeout,
        message=lambda: f"job {job.pk} final (now {job.status}: {job.scheduler_state})",
    )
    return job


def scheduler_record(kind: str, login, job: Job) -> str:
    command = {"slurm": "scontrol show job {}", "sge": "qstat -j {}"}[kind]
    return login.run(command.format(job.scheduler_id)).stdout


GO = (
    "import os, sys, time\n"
    "for i in range(3):\n"
    "    print(f'line {i}', flush=True)\n"
    "print('err', file=sys.stderr, flush=True)\n"
    "while not os.path.exists('go'):\n"
    "    time.sleep(0.05)\n"
    "os.remove('go')\n"
    "print('end')\n"
    "open('result.txt', 'w').write('done')\n"
)


def go(job: Job) -> None:
    path = os.path.join(job.remote_directory, "go")
    with open(path, "w"):
        pass
    shutil.chown(path, USER, USER)


@LAUNCHERS
def test_success_streams_lines_while_it_runs(kind, login, make_cluster_job):
    job = make_cluster_job(GO)
    t0 = time.monotonic()
    run = Background(job)
    wait_for(
        lambda: stream(job).startswith("line 0\n"),
        timeout=60,
        message=lambda: f"first line; job {fresh(job).status} {job.scheduler_state}",
    )
    first_line = time.monotonic() - t0
    wait_for(lambda: stream(job) == "line 0\nline 1\nline 2\n", timeout=30)
    assert fresh(job).status == Job.STATUS.running  # the lines came before the end
    assert job.scheduler_id.isdigit() == (kind != "direct")
    go(job)
    run.join()
    fresh(job)
    assert job.status == Job.STATUS.success, job.error
    assert (job.exit_code, job.error) == (0, "")
    assert stream(job) == "line 0\nline 1\nline 2\nend\n"
    assert stream(job, "stderr") == "err\n"
    assert stream(job, "system") == ""
    assert job.scheduler_state == DONE_STATE[kind]
    assert {r.remote_filename: r.local_file.read() for r in job.results.all()} == {
        "result.txt": b"done"
    }
    assert login.calls().count(SUBMIT.get(kind)) == (kind != "direct")
    states = list(job.events.values_list("to_state", flat=True))
    queued = [] if kind == "direct" else ["queued"]
    assert states == ["submitted", *queued, "running", "success"]
    print(f"\n{kind}: submit -> first live line {first_line:.2f} s")


@LAUNCHERS
def test_nonzero_exit_is_a_failure_with_the_exit_code(kind, make_cluster_job):
    job = make_cluster_job("import sys\nprint('x', file=sys.stderr)\nsys.exit(3)\n")
    runner.submit(job.pk, password=TEST_PASSWORD)
    fresh(job)
    assert job.status == Job.STATUS.failure
    assert job.exit_code == 3
    assert job.error == "The program exited with status 3."
    assert stream(job, "stderr") == "x\n"


def test_walltime_exceeded_fails_with_the_limit(kind, make_cluster_job):
    # Slurm enforces whole minutes (a minute and up to ~30 s more): one test of it.
    walltime = {"slurm": 60, "sge": 3}[kind]
    job = make_cluster_job("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    runner.submit(job.pk, password=TEST_PASSWORD, resources={"walltime": walltime})
    fresh(job)
    limit = {"slurm": "0:01:00", "sge": "0:00:03"}[kind]
    assert job.status == Job.STATUS.failure
    assert job.error == f"The scheduler stopped the job: walltime exceeded (limit {limit})."
    assert stream(job) == "started\n"


def test_timeout_becomes_the_walltime(kind, login, make_cluster_job):
    job = make_cluster_job("print(1)")
    run = Background(job, timeout=400, resources=WAITING[kind])
    wait_for(lambda: fresh(job).status == Job.STATUS.queued and job.scheduler_id, timeout=60)
    record = scheduler_record(kind, login, job)
    assert {"slurm": "TimeLimit=00:07:00", "sge": "h_rt=400"}[kind] in record
    runner.cancel(job.pk)
    run.join()


def test_cancel_while_queued(kind, login, make_cluster_job):
    job = make_cluster_job("print('never')")
    run = Background(job, resources=WAITING[kind])
    wait_for(
        lambda: fresh(job).scheduler_state == WAITING_STATE[kind],
        timeout=60,
        message=lambda: f"queued; now {job.status} {job.scheduler_state!r}",
    )
    assert job.status == Job.STATUS.queued
    cancel_job(job.pk)
    run.join()
    fresh(job)
    assert job.status == Job.STATUS.cancelled
    expected = {
        "slurm": "Cancelled on request; the scheduler confirmed it ended (CANCELLED 0:0).",
        "sge": "Cancelled on request; the scheduler removed it from its queue.",
    }[kind]
    assert job.error == expected
    assert stream(job) == "" and stream(job, "stderr") == ""
    assert list(job.events.values_list("to_state", flat=True)) == [
        "submitted",
        "queued",
        "cancelled",
    ]


@LAUNCHERS
def test_cancel_while_running_keeps_output_and_files(kind, make_cluster_job):
    job = make_cluster_job(
        "import time\nopen('partial.txt', 'w').write('p')\nprint('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    run = Background(job)
    wait_for(lambda: stream(job) == "started\n", timeout=60, message="started")
    cancel_job(job.pk)
    run.join()
    fresh(job)
    assert job.status == Job.STATUS.cancelled
    expected = {
        "direct": "Cancelled on request; its processes were stopped.",
        "slurm": "Cancelled on request; the scheduler confirmed it ended (CANCELLED 0:15).",
        "sge": "Cancelled on request; the scheduler confirmed it ended (failed 100 : "
        "assumedly after job, exit_status 137                  (Killed)).",
    }[kind]
    assert job.error == expected
    assert stream(job) == "started\n"
    assert [r.remote_filename for r in job.results.all()] == ["partial.txt"]


def test_resources_reach_the_scheduler(kind, login, make_cluster_job):
    asked = {
        "slurm": {
            "partition": "held",
            "walltime": "0:07:00",
            "cpus": 2,
            "memory": "300M",
            "account": "proj42",
            "extra": ["--comment=from-drs", "--nice=7"],
        },
        "sge": {
            "partition": "all.q",
            "walltime": "0:07:00",
            "memory": "300M",
            "account": "proj42",
            "extra": ["-h", "-p -5"],
        },
    }[kind]
    job = make_cluster_job("print(1)")
    run = Background(job, resources=asked)
    wait_for(lambda: fresh(job).status == Job.STATUS.queued and job.scheduler_id, timeout=60)
    record = scheduler_record(kind, login, job)
    expected = {
        "slurm": [
            "Partition=held",
            "TimeLimit=00:07:00",
            "CPUs/Task=2",
            "MinMemoryNode=300M",
            "Account=proj42",
            "Comment=from-drs",
            "Nice=7",
            f"JobName=drs-{job.run_dir.rsplit('/', 1)[1]}",
        ],
        "sge": [
            "hard resource_list:         h_rt=420,h_vmem=300M",
            "hard_queue_list:            all.q",
            "account:                    proj42",
            "priority:                   -5",
            f"job_name:                   drs-{job.run_dir.rsplit('/', 1)[1]}",
        ],
    }[kind]
    for line in expected:
        assert line in record, record
    runner.cancel(job.pk)
    run.join()


@pytest.mark.parametrize(
    "resources, field, message",
    [
        ({"partition": "debug\n#SBATCH --uid=0"}, "partition", "Only letters"),
        ({"account": "a b"}, "account", "Only letters"),
        ({"extra": ["--comment=x\n#SBATCH --uid=0"]}, "extra", "without newlines"),
        ({"extra": ["--output=/tmp/x"]}, "extra", "may not be given"),
        ({"walltime": "5 minutes"}, "walltime", "H:MM:SS"),
    ],
)
def test_directive_injection_is_refused(kind, login, make_cluster_job, resources, field, message):
    if field == "extra" and "output" in str(resources) and kind == "sge":
        resources = {"extra": ["-o /tmp/x"]}
    job = make_cluster_job("print(1)")
    runner.submit(job.pk, password=TEST_PASSWORD, resources=resources)
    fresh(job)
    assert job.status == Job.STATUS.failure
    assert job.error.startswith("Invalid submission: "), job.error
    assert message in job.error
    assert login.count(SUBMIT[kind]) == 0


def _launch_spec(job: Job) -> Spec:
    return Spec(
        job.remote_directory,
        job.remote_filename,
        job.program.encode(),
        f".django-remote-submission/runs/{job.uuid}.twice",
        ["/usr/bin/python3", "-u"],
        {},
    )


def test_two_launches_of_one_run_submit_once(kind, login, sched_sshd, make_cluster_job):
    job = make_cluster_job("import time\ntime.sleep(1)\n")
    spec = _launch_spec(job)
    target = Target(sched_sshd.host, sched_sshd.port, sched_sshd.host_key)
    creds = Credentials(USER, password=TEST_PASSWORD)
    answers = []

    def launch() -> None:
        with SSHTransport.connect(target, creds) as t:
            answers.append(launcher_for(kind, t, "twice").launch(spec)[0])

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 2
    assert answers[0].scheduler_id == answers[1].scheduler_id
    assert sorted(a.attached for a in answers) == [False, True]
    assert login.count(SUBMIT[kind]) == 1


def test_double_delivery_of_one_submission_is_one_scheduler_job(
    kind, login, make_cluster_job, worker
):
    job = make_cluster_job("print('done')")
    tid = f"dup-{uuid.uuid4().hex}"
    a = submit_job_to_server.apply_async((job.pk,), {"password": TEST_PASSWORD}, task_id=tid)
    b = submit_job_to_server.apply_async((job.pk,), {"password": TEST_PASSWORD}, task_id=tid)
    final(job)
    a.get(timeout=60), b.get(timeout=60)
    late = submit_job_to_server.apply_async((job.pk,), {"password": TEST_PASSWORD}, task_id=tid)
    late.get(timeout=60)
    assert fresh(job).status == Job.STATUS.success, job.error
    assert stream(job) == "done\n"
    assert login.count(SUBMIT[kind]) == 1


def test_worker_killed_between_submit_and_database_is_recovered_once(
    kind, login, make_cluster_job, celery_app, redis_url
):
    env = {"DRS_TEST_HEARTBEAT": "1"}
    first = start_worker(redis_url, extra_env=env)
    try:
        job = make_cluster_job("print('once')")
        login.hold_submit()
        submit_job_to_server.delay(job.pk, password=TEST_PASSWORD)
        pgid, answer = wait_for(login.held, timeout=60, message="the submit command ran")
        first.kill()  # the scheduler has the job; the worker never heard of it
        os.killpg(pgid, signal.SIGKILL)  # nor did the run directory (no jobid written)
        assert fresh(job).status == Job.STATUS.submitted and job.scheduler_id == ""
    finally:
        first.stop()
    second = start_worker(redis_url, extra_env=env)
    try:
        final(job, timeout=90)
    finally:
        second.stop()
    assert job.status == Job.STATUS.success, job.error
    assert answer.split(";")[0].strip() == job.scheduler_id
    assert stream(job) == "once\n"
    assert login.count(SUBMIT[kind]) == 1


@LAUNCHERS
def test_worker_killed_while_running_is_resumed(
    kind, login, make_cluster_job, celery_app, redis_url
):
    env = {"DRS_TEST_HEARTBEAT": "1"}
    job = make_cluster_job(GO)
    first = start_worker(redis_url, extra_env=env)
    try:
        submit_job_to_server.delay(job.pk, password=TEST_PASSWORD)
        wait_for(lambda: stream(job) == "line 0\nline 1\nline 2\n", timeout=60)
        first.kill()
    finally:
        first.stop()
    second = start_worker(redis_url, extra_env=env)
    try:
        wait_for(lambda: fresh(job).heartbeat and job.status == Job.STATUS.running, timeout=30)
        go(job)
        final(job, timeout=90)
    finally:
        second.stop()
    assert job.status == Job.STATUS.success, job.error
    assert stream(job) == "line 0\nline 1\nline 2\nend\n"
    assert stream(job, "stderr") == "err\n"
    assert login.calls().count(SUBMIT.get(kind)) == (kind != "direct")


def test_worker_killed_while_queued_is_resumed_and_runs(
    kind, login, make_cluster_job, celery_app, redis_url
):
    env = {"DRS_TEST_HEARTBEAT": "1"}
    job = make_cluster_job("print('ran')")
    first = start_worker(redis_url, extra_env=env)
    try:
        submit_job_to_server.delay(job.pk, password=TEST_PASSWORD, resources=WAITING[kind])
        wait_for(lambda: fresh(job).scheduler_state == WAITING_STATE[kind], timeout=60)
        first.kill()
    finally:
        first.stop()
    second = start_worker(redis_url, extra_env=env)
    try:
        # The cluster lets it run (Slurm: to a partition that is up) while no worker follows
        # it: the recovery sweep of the new worker picks it up and follows it to its end.
        release = {
            "slurm": f"scontrol update JobId={job.scheduler_id} Partition=debug",
            "sge": f"qrls {job.scheduler_id}",
        }[kind]
        done = (
            subprocess.run(["sh", "-c", release], capture_output=True, text=True)
            if kind == "slurm"
            else login.run(release)
        )
        assert done.returncode == 0, done.stderr
        final(job, timeout=90)
    finally:
        second.stop()
    assert job.status == Job.STATUS.success, job.error
    assert stream(job) == "ran\n"
    states = list(job.events.values_list("to_state", flat=True))
    assert states == ["submitted", "queued", "running", "success"]
    assert login.count(SUBMIT[kind]) == 1


def test_many_queued_jobs_cost_one_status_query_per_interval(
    kind, login, make_cluster_job, celery_app, redis_url
):
    count = 200
    # DRS_TEST_POLL="10 60": the default interval over a minute (the suite keeps it short).
    interval, window = map(float, os.environ.get("DRS_TEST_POLL", "1 10").split())
    env = {"DRS_TEST_SETTINGS": json.dumps({"SCHEDULER_POLL_INTERVAL": interval})}
    many = start_worker(redis_url, concurrency=count + 20, extra_env=env, queue="many")
    try:
        jobs = [make_cluster_job("print(1)") for _ in range(count)]
        for job in jobs:
            submit_job_to_server.apply_async(
                (job.pk,), {"password": TEST_PASSWORD, "resources": WAITING[kind]}, queue="many"
            )
        queued = Job.objects.filter(pk__in=[j.pk for j in jobs], status=Job.STATUS.queued)
        wait_for(
            lambda: queued.exclude(scheduler_state="").count() == count,
            timeout=300,
            interval=0.5,
            message=lambda: f"{queued.count()} of {count} queued",
        )
        assert login.count(SUBMIT[kind]) == count
        login.reset_calls()
        time.sleep(window)  # the measurement: what the waiting jobs cost meanwhile
        polls = login.count(POLL[kind])
        assert 1 <= polls <= window / interval + 1, polls
        assert login.calls() == [POLL[kind]] * polls  # nothing else asked the scheduler
        print(f"\n{kind}: {count} queued jobs, {polls} status queries in {window:g} s")
        login.run({"slurm": f"scancel -u {USER}", "sge": f"qdel -u {USER}"}[kind])
        done = Job.objects.filter(pk__in=[j.pk for j in jobs], status=Job.STATUS.cancelled)
        wait_for(
            lambda: done.count() == count,
            timeout=180,
            interval=0.5,
            message=lambda: str(
                Counter(
                    Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", "error")
                )
            ),
        )
    finally:
        many.stop()
    reason = {
        "slurm": "Cancelled on the cluster, outside this app (Slurm: CANCELLED 0:0).",
        "sge": "Removed from the Grid Engine queue on the cluster before it started, "
        "outside this app.",
    }[kind]
    assert set(done.values_list("error", flat=True)) == {reason}


@LAUNCHERS
def test_arguments_environment_and_inputs_reach_the_batch_job(kind, make_cluster_job):
    from django.core.files.base import ContentFile

    from django_remote_submission import services

    arguments = ["two words", "$(id)", "line\nbreak", "-x", "é ✓"]
    environment = {"MODE": "'; echo pwned; '", "NAMES": '["MODE", "NAMES"]'}
    job = make_cluster_job(
        "import json, os, sys\n"
        "names = json.loads(os.environ['NAMES'])\n"
        "print(json.dumps([sys.argv[1:], {k: os.environ[k] for k in names}]))\n"
        "print(open('in/data.bin', 'rb').read().hex())\n",
        arguments=arguments,
        environment=environment,
    )
    services.add_input(job, job.owner, "in/data.bin", ContentFile(b"\0\xff\r\n", name="x"))
    runner.submit(job.pk, password=TEST_PASSWORD)
    fresh(job)
    assert job.status == Job.STATUS.success, job.error
    first, second = stream(job).splitlines()
    assert json.loads(first) == [arguments, environment]
    assert second == "00ff0d0a"
    assert not job.results.exists()
