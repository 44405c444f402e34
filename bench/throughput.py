"""Jobs per second through real Celery workers on PostgreSQL: 1, 2 and 4 worker processes.

The measurement is the suite's many-workers test (``tests/test_scale.py``) with 500 jobs on a
throwaway PostgreSQL cluster: separate ``celery worker`` processes (threads and prefork pools)
on the run's redis-server take 500 trivial jobs submitted at once against the real sshd; the
time runs from the first submission to the end of the last job, and the test checks that each
job ran exactly once. It runs in a subprocess: it needs the suite's own services.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .harness import ROOT, Bench, Row

JOBS = 500
LINE = re.compile(
    r"^(\d) worker\(s\) \(([^)]*)\) on (\w+): (\d+) jobs in ([\d.]+) s, ([\d.]+) jobs/s"
)


def throughput(b: Bench) -> list[Row]:
    env = {**os.environ, "DRS_TEST_DATABASE": "postgres", "DRS_TEST_SCALE_JOBS": str(JOBS)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the bench's own: the test takes the suite's
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--ds", "tests.settings"]
        + ["tests/test_scale.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    found = [m for m in map(LINE.match, ran.stdout.splitlines()) if m]
    passed = ran.returncode == 0
    rows = []
    for m in found:
        count, pools, vendor, jobs, seconds, rate = m.groups()
        rows.append(
            Row(
                f"{jobs} trivial jobs, {count} worker process(es) ({pools}), {vendor}, jobs/s",
                "jobs/s",
                [float(rate)],
                ok=passed,
                notes=f"{float(seconds):.1f} s; each job exactly once: {'yes' if passed else 'no'}",
            )
        )
    if not rows:
        tail = (ran.stdout + ran.stderr).strip().splitlines()[-1:] or ["no output"]
        rows.append(Row("throughput: ERROR", "jobs/s", [], ok=False, notes=tail[0]))
    return rows
