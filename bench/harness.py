"""What every row needs: the services, the database, jobs, timed OpenSSH commands, a table.

    with Bench(reps=3, slow_reps=2) as b:             # sshd + redis + migrated sqlite DB
        seconds, job = b.submit(b.job('print("hi")'))  # the project, in this process
        with b.master() as cm:                        # an OpenSSH ControlMaster
            run(b.ssh(cm) + ["true"]).seconds         # the baseline, through it

Everything runs on this machine: the sshd stands in for the remote host.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# OpenSSH's defaults, spelled out: the test sshd allows more (MaxSessions 50, MaxStartups 100).
STOCK_LIMITS = ("MaxSessions 10", "MaxStartups 10:30:100")


@dataclass
class Row:
    """One line of the table: samples of the project and of the baseline, and the target."""

    work: str
    unit: str  # "s", "ms", "MB"
    project: list[float]
    baseline: list[float] | None = None
    target: str = ""
    limit: float | None = None  # met if value <= limit
    max_ratio: float | None = None  # met if value / median(baseline) <= max_ratio
    minimum: float | None = None  # met if value >= minimum (a rate: jobs/s)
    ok: bool = True  # a correctness condition (exact output, all jobs succeeded)
    notes: str = ""
    # The number held against the target: the median of ``project`` unless given (the
    # websocket rows give the percentile over all lines of all repetitions).
    value: float | None = None

    @staticmethod
    def stats(samples: list[float] | None, value: float | None = None) -> dict | None:
        if not samples:
            return None
        return {
            "median": statistics.median(samples) if value is None else value,
            "min": min(samples),
            "max": max(samples),
            "samples": samples,
        }

    @property
    def headline(self) -> float | None:
        if not self.project:
            return None
        return statistics.median(self.project) if self.value is None else self.value

    @property
    def ratio(self) -> float | None:
        if not (self.project and self.baseline):
            return None
        return self.headline / statistics.median(self.baseline)

    @property
    def met(self) -> bool | None:
        if not self.project:
            return None
        checks = [self.ok]
        if self.limit is not None:
            checks.append(self.headline <= self.limit)
        if self.max_ratio is not None:
            checks.append(self.ratio is not None and self.ratio <= self.max_ratio)
        if self.minimum is not None:
            checks.append(self.headline >= self.minimum)
        return all(checks)

    def as_dict(self) -> dict:
        return {
            "work": self.work,
            "unit": self.unit,
            "project": self.stats(self.project, self.value),
            "baseline": self.stats(self.baseline),
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "notes": self.notes,
        }


def _fmt(value: float, unit: str) -> str:
    if unit == "s" and value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.3g} {unit}" if unit != "s" or value < 100 else f"{value:.0f} s"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = [
        "work",
        "project (median [min-max])",
        "baseline (median)",
        "ratio",
        "target",
        "met?",
        "notes",
    ]
    lines = [head]
    for r in rows:
        p, b = Row.stats(r.project, r.value), Row.stats(r.baseline)
        lines.append(
            [
                r.work,
                f"{_fmt(p['median'], r.unit)} [{_fmt(p['min'], r.unit)} - {_fmt(p['max'], r.unit)}]"
                if p
                else "-",
                _fmt(b["median"], r.unit) if b else "-",
                f"{r.ratio:.2f}" if r.ratio is not None else "-",
                r.target,
                {True: "yes", False: "NO", None: "-"}[r.met],
                r.notes,
            ]
        )
    return "\n".join(
        "| " + " | ".join(cells) + " |" for cells in [lines[0], ["---"] * len(head), *lines[1:]]
    )


@dataclass
class Ran:
    """A finished OpenSSH command: wall seconds, client CPU seconds and max RSS, exit code."""

    seconds: float
    cpu: float
    maxrss_mb: float
    returncode: int
    stderr: str = field(default="", repr=False)


def run(argv: list[str], stdout=subprocess.DEVNULL, timeout: float = 600) -> Ran:
    """Run ``argv``, timing it; the rusage is the child's own (``wait4``)."""
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
    _, status, ru = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    return Ran(
        seconds,
        ru.ru_utime + ru.ru_stime,
        ru.ru_maxrss / 1024,
        proc.returncode,
        err.read().decode(errors="replace"),
    )


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads: paramiko's too)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class MachineCpu:
    """How busy the machine's CPUs were (all processes, ours and others'), from /proc/stat:
    ``with MachineCpu() as m: ...; m.busy`` is a fraction, 1.0 when every core was busy."""

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return sum(ticks), idle

    def __enter__(self) -> MachineCpu:
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        total, idle = self._read()
        spent = total - self._start[0]
        self.busy = 1 - (idle - self._start[1]) / spent if spent else 0.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssPeak:
    """Samples this process's RSS every 5 ms: ``with RssPeak() as p: ...; p.growth`` in MB."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval

    def __enter__(self) -> RssPeak:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.start


class Bench:
    """The bench's sshd, redis and database, and the project's objects pointing at them."""

    def __init__(self, reps: int, slow_reps: int | None = None) -> None:
        self.reps = reps
        self.slow_reps = slow_reps or reps  # rows whose one repetition takes over 10 s
        self._masters = 0

    def __enter__(self) -> Bench:
        self._cleanup = ExitStack()  # undone in reverse order, also when starting fails
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._cleanup.close()

    def _start(self) -> None:
        from tests.services import start_redis, start_sshd

        self.tmp = tempfile.mkdtemp(prefix="drs-bench-")
        self._cleanup.callback(shutil.rmtree, self.tmp, True)
        os.environ["DRS_BENCH_TMP"] = self.tmp
        self.redis = start_redis()
        self._cleanup.callback(self.redis.stop)
        os.environ["DRS_BENCH_REDIS"] = self.redis.url
        self.sshd = start_sshd()
        self._cleanup.callback(self.sshd.stop)
        self.user = self.sshd.password_user or self.sshd.key_user
        self.base = self.sshd.base_dir_pw or self.sshd.base_dir_key
        os.environ["DRS_BENCH_RUN_ROOT"] = f"{self.base}/runs"  # removed with the base dir
        if os.environ.get("DRS_BENCH_DATABASE") == "postgres":  # else the sqlite file
            from tests.services import start_postgres

            pg = start_postgres()
            self._cleanup.callback(pg.stop)
            os.environ["DRS_BENCH_DATABASE_URL"] = pg.create_database("drs_bench")
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

        import django
        from django.core.management import call_command

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connections

        from django_remote_submission.models import Interpreter
        from django_remote_submission.remote.ssh import pool

        self._cleanup.callback(connections.close_all)
        self._cleanup.callback(pool.clear)
        call_command("migrate", verbosity=0)

        self.owner = get_user_model().objects.create_user(self.user)
        self.python3 = Interpreter.objects.create(
            name="python3", path="/usr/bin/python3", arguments=["-u"]
        )
        self.server = self._server("bench sshd", self.sshd)
        self.creds = self._creds(self.sshd)
        self._stock = None

    def _server(self, title: str, sshd):
        from django_remote_submission.models import Server

        server = Server.objects.create(
            title=title,
            hostname=sshd.host,
            port=sshd.port,
            username=self.user,
            host_key=sshd.host_key,
        )
        server.interpreters.set([self.python3])
        return server

    @staticmethod
    def _creds(sshd) -> dict:
        """How the project logs in: password when we are root (drs_pw), else the key."""
        return (
            {"password": sshd.password} if sshd.password else {"public_key_filename": sshd.key_file}
        )

    def stock(self):
        """(sshd, Server, creds) of a second sshd with OpenSSH's stock limits (``MaxSessions
        10``, ``MaxStartups 10:30:100``), as users' hosts have; started on first use."""
        if self._stock is None:
            from tests.services import start_sshd

            sshd = start_sshd(extra=STOCK_LIMITS)
            self._cleanup.callback(sshd.stop)
            self._stock = (sshd, self._server("stock sshd", sshd), self._creds(sshd))
        return self._stock

    # --- the project ------------------------------------------------------------------------

    def job(self, program: str, server=None):
        """A new job running ``python3 -u job.py`` in a fresh remote directory."""
        from django_remote_submission.models import Job

        return Job.objects.create(
            title="bench",
            program=program,
            owner=self.owner,
            server=server or self.server,
            interpreter=self.python3,
            remote_directory=f"{self.base}/{uuid.uuid4().hex[:12]}",
            remote_filename="job.py",
        )

    def submit(self, job, creds: dict | None = None, **kwargs) -> tuple[float, object]:
        """Run ``job`` through ``runner.submit`` in this process: (seconds, refreshed job)."""
        from django_remote_submission import runner

        t0 = time.perf_counter()
        runner.submit(job.pk, **(creds or self.creds), **kwargs)
        seconds = time.perf_counter() - t0
        job.refresh_from_db()
        return seconds, job

    def forget(self, job) -> None:
        """Drop a job, its rows, stored files and remote directory (keeps runs comparable)."""
        for result in job.results.all():
            result.local_file.delete(save=False)
        self.sshd.run_as(self.user, f"rm -rf -- {shlex.quote(job.remote_directory)}")
        job.delete()

    def forget_all(self, jobs) -> None:
        """``forget`` of many jobs at once: one ``rm`` on the host, one DELETE."""
        from django_remote_submission.models import Job

        pks = [job.pk for job in jobs]
        for job in Job.objects.filter(pk__in=pks):
            for result in job.results.all():
                result.local_file.delete(save=False)
        dirs = " ".join(shlex.quote(job.remote_directory) for job in jobs)
        self.sshd.run_as(self.user, f"rm -rf -- {dirs}")
        Job.objects.filter(pk__in=pks).delete()

    # --- the OpenSSH baseline --------------------------------------------------------------

    def ssh(self, control_path: str | None = None, sshd=None) -> list[str]:
        """``ssh ... user@host`` (a new connection, or one multiplexed on ``control_path``)."""
        argv = (sshd or self.sshd).ssh_argv(self.user)
        if control_path:
            argv[-1:-1] = ["-o", "ControlMaster=no", "-o", f"ControlPath={control_path}"]
        return argv

    def scp(self, remote_path: str, local_path: str) -> list[str]:
        argv = self.sshd.ssh_argv(self.user)
        opts = ["-P" if a == "-p" else a for a in argv[1:-1]]
        return ["scp", "-q", *opts, f"{self.user}@{self.sshd.host}:{remote_path}", local_path]

    @contextmanager
    def master(self, sshd=None):
        """A ControlMaster connection, up before the block starts; yields its ControlPath."""
        self._masters += 1
        path = os.path.join(self.tmp, f"cm{self._masters}")
        argv = (sshd or self.sshd).ssh_argv(self.user)
        argv[-1:-1] = ["-N", "-o", "ControlMaster=yes", "-o", f"ControlPath={path}"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

        def control(command: str) -> int:  # ssh -O check|exit
            argv = self.ssh(path, sshd)
            argv[-1:-1] = ["-O", command]
            return subprocess.run(argv, capture_output=True).returncode

        deadline = time.monotonic() + 15
        while control("check") != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the ControlMaster did not come up")
            time.sleep(0.02)
        try:
            yield path
        finally:
            control("exit")
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
