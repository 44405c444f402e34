"""1,000 trivial jobs through a real ``celery worker`` process and redis, on SQLite and on
PostgreSQL: jobs per second from the first submission to the end of the last job.

The bench process sends ``submit_job_to_server.delay(job.pk, password=...)`` for each job (the
public path: the password travels encrypted through redis); one ``celery -A bench.celery_app
worker`` process (bench.settings, the same database file and redis) runs them against the
bench's sshd. Each job appends its own token to one file on the host and prints it: at the end
the file holds each token once, every job is a success, its log is exactly its line and its
audit trail shows one run. The PostgreSQL half runs a second bench in a subprocess
(``python -m bench.workers``) with a throwaway cluster in place of the sqlite file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid

from .harness import ROOT, Bench, MachineCpu, Row

N = int(os.environ.get("BENCH_WORKER_JOBS", 1000))
# (pool, concurrency) of the one worker process, each measured in turn.
CONFIGS = [
    tuple(c.split(":"))
    for c in os.environ.get("BENCH_WORKER_CONFIGS", "threads:8,prefork:4").split(",")
]


def _one(b: Bench, pool: str, concurrency: int, database: str) -> Row:
    import bench.celery_app  # noqa: F401  (the default app: .delay sends to the bench's redis)
    from django_remote_submission.models import FINAL_STATES, Event, Job
    from django_remote_submission.tasks import submit_job_to_server
    from tests.services import start_worker, wait_for
    from tests.test_scale import ONE_RUN, PROGRAM  # the test's job and checks

    marks = f"{b.base}/marks-{uuid.uuid4().hex[:8]}"
    tokens = [uuid.uuid4().hex for _ in range(N)]
    jobs = [b.job(PROGRAM.format(marks=marks, token=token)) for token in tokens]
    pks = [job.pk for job in jobs]
    worker = start_worker(
        b.redis.url,
        concurrency=concurrency,
        pool=pool,
        app="bench.celery_app",
        extra_env={"DJANGO_SETTINGS_MODULE": "bench.settings"},
    )
    with MachineCpu() as machine:
        try:
            started = time.time()
            for pk in pks:
                submit_job_to_server.delay(pk, **b.creds)
            sent = time.time() - started
            finished = Job.objects.filter(pk__in=pks, status__in=FINAL_STATES)
            wait_for(
                lambda: finished.count() == N,
                timeout=900,
                interval=0.2,
                message=lambda: f"{finished.count()} of {N} jobs finished",
            )
            last = max(Job.objects.filter(pk__in=pks).values_list("finished_at", flat=True))
            seconds = last.timestamp() - started
            worker_cpu = _cpu(worker.pid)
        finally:
            worker.stop()
    successes = Job.objects.filter(pk__in=pks, status="success").count()
    marks_text = b.sshd.run_as(b.user, f"cat {marks}").stdout.split()
    once = sorted(marks_text) == sorted(tokens)
    exact = True
    for job, token in zip(Job.objects.filter(pk__in=pks).order_by("pk"), tokens, strict=True):
        logs = list(job.logs.values_list("stream", "content"))
        trail = Event.objects.filter(job=job, action=Event.Action.state).order_by("time", "id")
        exact &= logs == [("stdout", f"{token}\n")]
        exact &= list(trail.values_list("from_state", "to_state")) == ONE_RUN
    b.forget_all(jobs)
    b.sshd.run_as(b.user, f"rm -f {marks}")
    ok = successes == N and once and exact
    notes = (
        f"{seconds:.1f} s; success: {successes}/{N}; each exactly once: {'yes' if once else 'no'}"
        f"; exact output and one run each: {'yes' if exact else 'no'}"
        f"; sending {sent:.1f} s; worker CPU {worker_cpu:.1f} s (children included, its start"
        f" too), {worker_cpu / N * 1000:.0f} ms a job; machine CPU busy {machine.busy:.0%}"
        f" (both cores, every process); load average {os.getloadavg()[0]:.1f}"
    )
    return Row(
        f"{N} trivial jobs, one Celery worker (--pool {pool} -c {concurrency}) + redis, {database}",
        "jobs/s",
        [N / seconds],
        None,
        ">= 30 jobs/s",
        minimum=30,
        ok=ok,
        notes=notes,
    )


def _cpu(pid: int) -> float:
    """User + system CPU of a live process and its waited-for children (prefork's pool)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    total = ticks / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):  # prefork's processes are alive until the worker stops
        with open(f"/proc/{child}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rows(b: Bench, database: str) -> list[Row]:
    rows = []
    for pool, concurrency in CONFIGS:
        rows.append(_one(b, pool, int(concurrency), database))
    return rows


def workers(b: Bench) -> list[Row]:
    """SQLite in this bench; PostgreSQL in a second bench, a subprocess."""
    rows = _rows(b, "SQLite")
    env = {**os.environ, "DRS_BENCH_DATABASE": "postgres"}
    for name in ("DJANGO_SETTINGS_MODULE", "DRS_BENCH_TMP", "DRS_BENCH_REDIS"):
        env.pop(name, None)  # the second bench's own
    env.pop("DRS_BENCH_RUN_ROOT", None)
    ran = subprocess.run(
        [sys.executable, "-m", "bench.workers", str(b.reps)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = ran.stdout.strip().splitlines()
    if ran.returncode or not lines:
        tail = (ran.stdout + ran.stderr).strip().splitlines()[-1:] or ["no output"]
        return [*rows, Row("workers on PostgreSQL: ERROR", "jobs/s", [], ok=False, notes=tail[0])]
    return rows + [Row(**r) for r in json.loads(lines[-1])]


def main() -> int:
    """The PostgreSQL half: a bench of its own; its rows as JSON on the last line."""
    from .rows import warm_up

    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with Bench(reps) as b:
        warm_up(b)
        rows = _rows(b, "PostgreSQL")
    print(json.dumps([dataclasses.asdict(r) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
