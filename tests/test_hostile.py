"""A hostile or broken job fails alone: bounded memory, disk and time on the worker.

Every case runs through a real Celery worker of its own (queue ``hostile``) whose storage is
a 256 MiB tmpfs, so a runaway copy can never fill the machine, and then checks: the job's
final state and reason, the worker's peak memory growth, that storage holds exactly what
the job's ``Result`` rows list (size and SHA-256 included), and that a normal job right
after succeeds on the same worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from django_remote_submission.logs import LogPolicy
from django_remote_submission.models import FINAL_STATES, Job
from django_remote_submission.tasks import submit_job_to_server
from tests.conftest import unavailable
from tests.services import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1 << 20
QUEUE = "hostile"
# The worker's limits: the log cap is lowered to keep the run short; the result limits are
# the defaults, except the free-space floor, which a 256 MiB tmpfs could never satisfy.
LIMITS = {"LOG_MAX_BYTES": 16 * MiB, "STORAGE_MIN_FREE_BYTES": 8 * MiB}
MEMORY_BUDGET = 100 * MiB
RUN_ROOT = "~/.django-remote-submission/runs/"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A 256 MiB tmpfs for the worker's MEDIA_ROOT."""
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs for the worker's storage needs root")
    path = tmp_path_factory.mktemp("media-tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def hostile_worker(celery_app, redis_url, media):
    env = {"DRS_TEST_MEDIA": str(media), "DRS_TEST_SETTINGS": json.dumps(LIMITS)}
    worker = start_worker(redis_url, concurrency=4, extra_env=env, queue=QUEUE)
    yield worker
    worker.stop()


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Site:
    """The worker, its storage and the jobs of one test; ``check()`` at the end of a test."""

    def __init__(self, worker, media: Path, make_job, sshd) -> None:
        self.worker, self.media, self.make_job, self.sshd = worker, media, make_job, sshd
        self.jobs: list[Job] = []
        with open(f"/proc/{worker.pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        self.rss_before = _status_kb(worker.pid, "VmRSS") * 1024

    def run(self, program: str, wait: float = 120, **kwargs) -> Job:
        job = self.make_job(program, **kwargs.pop("fields", {}))
        self.jobs.append(job)
        submit_job_to_server.apply_async(
            (job.pk,), {"password": self.sshd.password, **kwargs}, queue=QUEUE
        )
        wait_for(
            lambda: Job.objects.get(pk=job.pk).status in FINAL_STATES,
            timeout=wait,
            message=lambda: f"job {job.pk} final; worker log: {self.worker.log()[-3000:]}",
        )
        job.refresh_from_db()
        return job

    def growth(self) -> int:
        return _status_kb(self.worker.pid, "VmHWM") * 1024 - self.rss_before

    def stored(self, job: Job) -> dict[str, tuple[int, str]]:
        """What storage holds for the job: {storage name: (size, sha256)}."""
        base = self.media / "results" / str(job.uuid)
        found = {}
        for path in sorted(base.rglob("*")) if base.exists() else []:
            if path.is_file():
                data = path.read_bytes()
                name = str(path.relative_to(self.media))
                found[name] = (len(data), hashlib.sha256(data).hexdigest())
        return found

    def check(self) -> None:
        """Memory stayed bounded, storage matches the rows, and the worker still works."""
        growth = self.growth()
        for job in self.jobs:
            job.refresh_from_db()
            rows = {r.local_file.name: (r.size, r.sha256) for r in job.results.all()}
            assert self.stored(job) == rows, job.title
            stored = sum(size for size, _sha in rows.values())
            print(  # the measured outcome, for the record (pytest -s shows it)
                f"\nHOSTILE {job.title}: {job.status}, {job.error!r}; worker peak RSS "
                f"+{growth / MiB:.1f} MiB; log {stored_bytes(job)} bytes; results "
                f"{len(rows)} files, {stored} bytes"
            )
        normal = self.run('print("still fine")')
        assert normal.status == Job.STATUS.success, normal.error
        assert text(normal) == "still fine\n"
        assert growth < MEMORY_BUDGET, f"worker peak RSS grew by {growth / MiB:.0f} MiB"

    def cleanup(self) -> None:
        for job in self.jobs:
            job.refresh_from_db()
            if job.run_dir.startswith("/"):
                shutil.rmtree(job.run_dir, ignore_errors=True)


@pytest.fixture
def site(hostile_worker, media, make_job, sshd, settings):
    if sshd.password is None:
        unavailable("the hostile-job tests log in as the password user (needs root)")
    settings.MEDIA_ROOT = str(media)
    settings.DRS = {**settings.DRS, **LIMITS}
    s = Site(hostile_worker, media, make_job, sshd)
    yield s
    s.cleanup()


def text(job: Job, stream: str = "stdout") -> str:
    rows = job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True)
    return "".join(rows)


def stored_bytes(job: Job) -> int:
    return job.stdout_offset + job.stderr_offset


RUN_FILES = ("before", "pid", "exit", "out", "err", "lock")


def replace_run_files(how: str, names=RUN_FILES, wait: float = 1.0) -> str:
    """A program that replaces the files of its own run directory, then lingers a moment."""
    return (
        "import os, time\n"
        f"run = os.path.expanduser({RUN_ROOT!r} + os.environ['DRS_RUN_ID'])\n"
        f"for name in {tuple(names)!r}:\n"
        "    path = os.path.join(run, name)\n"
        "    if os.path.lexists(path):\n"
        "        os.remove(path)\n"
        f"    {how}\n"
        "print('replaced', flush=True)\n"
        f"time.sleep({wait})\n"
    )


FULL_NOTICE = "The log reached 16.0 MiB (DRS['LOG_MAX_BYTES']): further output is not stored"


def test_run_directory_files_replaced_by_symlinks_to_dev_zero(site):
    job = site.run(replace_run_files("os.symlink('/dev/zero', path)"))
    assert job.status == Job.STATUS.failure
    assert job.error.startswith(
        f"The run directory's exit file is not a number ({job.run_dir}/exit): the job changed "
        "its run directory"
    ), job.error
    # tail gives up on an output file that is no longer a regular file: what the program
    # printed after replacing it is not shown.
    assert text(job) == text(job, "stderr") == text(job, "system") == ""
    assert job.results.count() == 0
    site.check()


def test_run_directory_files_replaced_by_fifos(site):
    job = site.run(replace_run_files("os.mkfifo(path)"), timeout=5)
    # The wrapper blocks writing its exit status into the FIFO: the job hangs, alone, until
    # its timeout stops it; nothing on the worker waits for the FIFOs.
    assert job.status == Job.STATUS.failure
    assert job.error == "Timed out after 5 s; its processes were stopped.", job.error
    assert job.finished_at and (job.finished_at - job.started_at).total_seconds() < 30
    site.check()


def test_run_directory_files_replaced_by_huge_sparse_files(site):
    # (Its lock is left alone: a job that replaces it ends its own watch early, as the first
    # case shows.)
    names = [name for name in RUN_FILES if name != "lock"]
    job = site.run(replace_run_files("open(path, 'wb').truncate(1 << 40)", names))
    # The wrapper rewrites the exit file as the program ends, so the job itself succeeds;
    # the 1 TB stdout/stderr files are read up to the log limit only.
    assert job.status == Job.STATUS.success, job.error
    assert stored_bytes(job) == LIMITS["LOG_MAX_BYTES"]
    assert FULL_NOTICE in text(job, "system")
    site.check()


def test_sparse_terabyte_result_is_skipped_and_the_small_one_stored(site):
    job = site.run(
        "open('small.txt', 'w').write('small')\nopen('big.bin', 'wb').truncate(1 << 40)\n"
    )
    assert job.status == Job.STATUS.success, job.error
    assert [(r.remote_filename, r.size) for r in job.results.all()] == [("small.txt", 5)]
    assert text(job, "system") == (
        "Skipped result big.bin: 1.0 TiB is over the limit of 1.0 GiB per file "
        "(DRS['RESULT_MAX_BYTES']).\n"
    )
    site.check()


def test_a_hundred_thousand_result_files_store_the_first_thousand(site):
    job = site.run(
        "import os\nos.mkdir('many')\n"
        "for i in range(100000):\n"
        "    with open(f'many/{i:06d}', 'w') as f:\n"
        "        f.write(str(i % 10))\n",
        wait=300,
    )
    assert job.status == Job.STATUS.success, job.error
    names = list(job.results.order_by("remote_filename").values_list("remote_filename", flat=True))
    assert names == [f"many/{i:06d}" for i in range(1000)]
    directory = job.options["directory"]
    assert text(job, "system") == (
        "Stored at most 1000 result files (DRS['RESULTS_MAX_FILES']): 99000 more new files stay "
        f"on the host in {directory}.\n"
    )
    site.check()


def test_result_names_that_storage_cannot_hold_are_skipped_and_the_others_stored(site):
    long_path = "/".join(["d" * 100, "e" * 100, "f" * 98])  # 300 bytes, parts under 255
    too_long = "/".join(["g" * 250] * 5)  # 1254 bytes: more than a FileField holds
    job = site.run(
        "import os\n"
        "open(b'bad\\xff.txt', 'w').write('bad')\n"
        "open('new\\nline.txt', 'w').write('nl')\n"
        f"os.makedirs(os.path.dirname({long_path!r}))\n"
        f"open({long_path!r}, 'w').write('long')\n"
        f"os.makedirs(os.path.dirname({too_long!r}))\n"
        f"open({too_long!r}, 'w').write('too long')\n"
        "open('normal.txt', 'w').write('normal')\n"
    )
    assert job.status == Job.STATUS.success, job.error
    assert sorted(job.results.values_list("remote_filename", "size")) == [
        (long_path, 4),
        ("normal.txt", 6),
    ]
    assert text(job, "system") == (
        "Skipped result bad\\xff.txt: its name is not valid UTF-8.\n"
        f"Skipped result {too_long}: its name is longer than "
        f"{1024 - len(f'results/{job.uuid}/')} bytes.\n"
        "Skipped result new\\nline.txt: its name contains control characters "
        "(a newline, a tab, ...).\n"
    )
    site.check()


def test_one_gigabyte_line_without_newline_is_cut_at_the_log_limit(site):
    job = site.run(
        "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n"
        "    sys.stdout.buffer.write(chunk)\n"
    )
    assert job.status == Job.STATUS.success, job.error
    assert text(job) == "x" * LIMITS["LOG_MAX_BYTES"]
    rows = job.logs.filter(stream="stdout")
    assert max(len(r.content) for r in rows) == 256 * 1024  # LOG_ROW_BYTES pieces
    assert text(job, "system") == (
        f"{FULL_NOTICE} here. The job's whole output stays on the host in {job.run_dir}/out "
        f"and {job.run_dir}/err.\n"
    )
    site.check()


def test_ten_gigabytes_of_output_under_log_total(site, sshd):
    # Ten GiB as asked, unless the host's disk cannot take it (the output is written there).
    size = min(10 << 30, shutil.disk_usage(sshd.password_user_home).free // 4) // MiB * MiB
    job = site.run(
        "import os\nline = b'y' * (MiB - 1) + b'\\n'\n".replace("MiB", str(MiB))
        + f"for _ in range({size // MiB}):\n    os.write(1, line)\n",
        log_policy=LogPolicy.LOG_TOTAL,
        wait=600,
    )
    assert job.status == Job.STATUS.success, job.error
    line = "y" * (MiB - 1) + "\n"
    assert text(job) == line * (LIMITS["LOG_MAX_BYTES"] // MiB)
    assert stored_bytes(job) == LIMITS["LOG_MAX_BYTES"]
    assert FULL_NOTICE in text(job, "system")
    site.check()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def victim(sshd):
    """A process of the job's own login, in a session of its own: a job must not get it killed."""
    started = sshd.run_as(sshd.password_user, "setsid sleep 600 >/dev/null 2>&1 & echo $!")
    pid = int(started.stdout)
    yield pid
    if _alive(pid):
        os.kill(pid, 9)


def test_a_job_that_rewrites_its_pid_file_is_stopped_alone_at_its_timeout(site, victim):
    job = site.run(
        "import os, time\n"
        f"run = os.path.expanduser({RUN_ROOT!r} + os.environ['DRS_RUN_ID'])\n"
        f"open(os.path.join(run, 'pid'), 'w').write('{victim}\\n')\n"
        "print('rewrote', flush=True)\n"
        "time.sleep(600)\n",
        timeout=3,
    )
    assert job.status == Job.STATUS.failure
    assert job.error == "Timed out after 3 s; its processes were stopped."
    assert text(job) == "rewrote\n"
    assert _alive(victim)
    site.check()


def test_processes_that_leave_the_session_are_stopped_by_a_timeout_too(site):
    job = site.run(
        "import subprocess, time\n"
        "p = subprocess.Popen(['setsid', 'sleep', '600'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n",
        timeout=3,
    )
    assert job.status == Job.STATUS.failure
    assert job.error == "Timed out after 3 s; its processes were stopped."
    escaped = int(text(job))
    assert not _alive(escaped)
    site.check()


def test_kill_without_a_trusted_pid_ignores_the_rewritten_pid_file(site, sshd, victim):
    """The wrapper's pid is known from the launch; a second worker that attached to a run
    has only the pid file, which the job may have changed."""
    from django_remote_submission.launchers.base import Run
    from django_remote_submission.launchers.direct import DirectLauncher
    from django_remote_submission.remote import Credentials, Target
    from django_remote_submission.remote.ssh import SSHTransport

    job = site.make_job(
        "import os, subprocess, time\n"
        f"run = os.path.expanduser({RUN_ROOT!r} + os.environ['DRS_RUN_ID'])\n"
        f"open(os.path.join(run, 'pid'), 'w').write('{victim}\\n')\n"
        "subprocess.Popen(['setsid', 'sleep', '600'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    site.jobs.append(job)
    submit_job_to_server.apply_async((job.pk,), {"password": sshd.password}, queue=QUEUE)
    wait_for(lambda: text(job) == "ready\n", timeout=60, message="job started")
    job.refresh_from_db()
    target = Target(sshd.host, sshd.port, sshd.host_key)
    creds = Credentials(sshd.password_user, password=sshd.password)
    with SSHTransport.connect(target, creds) as t:
        stopped = DirectLauncher(t).kill(Run(job.run_dir), 1.0)
    assert stopped.verified is False and stopped.left == 0
    assert stopped.stopped >= 4  # wrapper, two cats, python, the escaped sleep
    assert _alive(victim)
    wait_for(lambda: Job.objects.get(pk=job.pk).status in FINAL_STATES, timeout=60)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error == "The program exited with status 143.", job.error
    site.check()


def test_disk_full_during_stage_out_keeps_no_partial_file(site, media):
    import threading
    import time

    ballast = media / "ballast"
    free = shutil.disk_usage(media).free
    with open(ballast, "wb") as f:  # leave 210 MiB: a 200 MiB result passes the checks
        f.truncate(0)
        f.write(b"\0" * (free - 210 * MiB))
    stop = threading.Event()

    def fill_when_copying() -> None:
        # Once the copy has begun, take the space it still needs: the disk fills midway.
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            if list(media.glob("results/*/big.bin")):
                with open(ballast, "ab") as f:
                    f.write(b"\0" * (40 * MiB))
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=fill_when_copying)
    watcher.start()
    try:
        job = site.run(
            "open('a.txt', 'w').write('kept')\n"
            "with open('big.bin', 'wb') as f:\n"
            "    for _ in range(200):\n"
            "        f.write(b'z' * (1 << 20))\n"
        )
    finally:
        stop.set()
        watcher.join()
        ballast.unlink()
    assert job.status == Job.STATUS.success, job.error
    assert [(r.remote_filename, r.size) for r in job.results.all()] == [("a.txt", 4)]
    assert text(job, "system") == "Skipped result big.bin: No space left on device.\n"
    site.check()
