"""A large input is staged through a real Celery worker with bounded memory (real sshd)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from django.core.files import File

from django_remote_submission import services
from django_remote_submission.models import FINAL_STATES, Job
from django_remote_submission.tasks import submit_job_to_server
from tests.conftest import unavailable
from tests.services import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1 << 20
QUEUE = "inputs-large"
SIZE = 200 * MiB
MEMORY_BUDGET = 50 * MiB

# Reads its input in chunks and prints its size and SHA-256.
DIGEST = (
    "import hashlib\n"
    "h, n = hashlib.sha256(), 0\n"
    "with open('big/input.bin', 'rb') as f:\n"
    "    while chunk := f.read(1 << 20):\n"
    "        h.update(chunk)\n"
    "        n += len(chunk)\n"
    "print(n, h.hexdigest())\n"
)


@pytest.fixture(scope="module")
def inputs_worker(celery_app, redis_url):
    worker = start_worker(redis_url, concurrency=2, queue=QUEUE)
    yield worker
    worker.stop()


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_a_200_mib_input_is_staged_with_bounded_worker_memory(
    inputs_worker, make_job, sshd, tmp_path
):
    if sshd.password is None:
        unavailable("this test logs in as the password user (needs root)")
    source, digest = tmp_path / "input.bin", hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(SIZE // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
    job = make_job(DIGEST)
    with open(source, "rb") as f:
        row = services.add_input(job, job.owner, "big/input.bin", File(f, name="input.bin"))
    source.unlink()
    assert (row.size, row.sha256) == (SIZE, digest.hexdigest())

    pid = inputs_worker.pid
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
    before = _status_kb(pid, "VmRSS") * 1024
    started = time.monotonic()
    submit_job_to_server.apply_async((job.pk,), {"password": sshd.password}, queue=QUEUE)
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status in FINAL_STATES,
        timeout=300,
        message=lambda: f"job {job.pk} final; worker log: {inputs_worker.log()[-3000:]}",
    )
    took = time.monotonic() - started
    growth = _status_kb(pid, "VmHWM") * 1024 - before
    job.refresh_from_db()
    try:
        assert job.status == Job.STATUS.success, job.error
        out = "".join(job.logs.filter(stream="stdout").values_list("content", flat=True))
        assert out == f"{SIZE} {digest.hexdigest()}\n"
        assert not job.results.exists()  # an unchanged input is not a result
        print(
            f"\nINPUTS 200 MiB staged and run in {took:.1f} s; worker peak RSS "
            f"+{growth / MiB:.1f} MiB"
        )
        assert growth < MEMORY_BUDGET, f"worker peak RSS grew by {growth / MiB:.0f} MiB"
    finally:
        sshd.ssh(sshd.password_user, f"rm -rf -- {job.remote_directory}")
        row.file.delete(save=False)
