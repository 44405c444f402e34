"""The rows of the benchmark: each runs the project and its OpenSSH baseline, returns Rows.

The project side always runs in this process through ``runner.submit`` with a warm
per-process SSH pool (a warm-up job runs first), exactly what a Celery worker does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import datetime

from .harness import ROOT, Bench, MachineCpu, Row, RssPeak, cpu_seconds, run


def _cmd(program: str) -> str:
    """The remote command line the baseline runs: the same interpreter and program."""
    return shlex.join(["python3", "-u", "-c", program])


def _stdout(job) -> str:
    return "".join(
        job.logs.filter(stream="stdout").order_by("id").values_list("content", flat=True)
    )


def warm_up(b: Bench) -> None:
    """One untimed job, so that the pool holds an authenticated connection."""
    _, job = b.submit(b.job('print("warm")'))
    assert job.status == "success", f"warm-up job failed: {job.error}"
    b.forget(job)


def trivial(b: Bench) -> list[Row]:
    """``print("hi")``: submit call to success, results scan included."""
    program = 'print("hi")'
    reps = 5 * b.reps  # cheap: more samples
    project, ok = [], True
    for _ in range(reps):
        seconds, job = b.submit(b.job(program))
        ok &= job.status == "success" and _stdout(job) == "hi\n"
        project.append(seconds)
        b.forget(job)
    with b.master() as cm:
        mux = [run(b.ssh(cm) + [_cmd(program)]).seconds for _ in range(reps)]
    raw = [run(b.ssh() + [_cmd(program)]).seconds for _ in range(reps)]
    note = f"exact: {'yes' if ok else 'no'}"
    return [
        Row(
            "trivial job, warm worker, vs ssh via ControlMaster",
            "s",
            project,
            mux,
            "<= 1.2 x",
            max_ratio=1.2,
            ok=ok,
            notes=note,
        ),
        Row(
            "trivial job, warm worker, vs raw new-connection ssh",
            "s",
            project,
            raw,
            "far below (<= 0.5 x)",
            max_ratio=0.5,
            ok=ok,
            notes=note,
        ),
    ]


LINES = 'for i in range({n}):\n    print(f"line {{i:07d}} of the benchmark output")\n'


def lines(b: Bench) -> list[Row]:
    """100k and 1M lines with LOG_LIVE, every byte stored, vs ``ssh host prog > /dev/null``;
    and this process's CPU (all threads) per million lines."""
    rows = []
    for n, label in ((100_000, "100k"), (1_000_000, "1M")):
        program = LINES.format(n=n)
        expected = "".join(f"line {i:07d} of the benchmark output\n" for i in range(n))
        project, cpu, exact = [], [], True
        for _ in range(b.reps):
            before = cpu_seconds()
            seconds, job = b.submit(b.job(program))
            cpu.append((cpu_seconds() - before) * 1_000_000 / n)
            exact &= job.status == "success" and _stdout(job) == expected
            project.append(seconds)
            b.forget(job)
        baseline = [run(b.ssh() + [_cmd(program)]).seconds for _ in range(b.reps)]
        mb = len(expected) / 1e6
        note = f"exact: {'yes' if exact else 'no'}"
        rows.append(
            Row(
                f"{label} lines ({mb:.0f} MB), LOG_LIVE, all stored",
                "s",
                project,
                baseline,
                "<= 1.2 x",
                max_ratio=1.2,
                ok=exact,
                notes=note,
            )
        )
        rows.append(
            Row(
                f"  worker CPU per million lines ({label} lines)",
                "s",
                cpu,
                None,
                "<= 0.5 s",
                limit=0.5,
                notes="this process, all threads, the database's work included",
            )
        )
    return rows


SLEEP = "import time\ntime.sleep(10)\n"
# A progress bar: output without a newline, then a long quiet spell.
PARTIAL = "import sys, time\nsys.stdout.write('50%'); sys.stdout.flush()\ntime.sleep(10)\nprint()\n"


def sleeping(b: Bench) -> list[Row]:
    """CPU of this process (all threads) while a job sleeps 10 s; baseline: an ssh client's."""
    rows = []
    for label, program in (("", SLEEP), (" after a partial line", PARTIAL)):
        project, baseline = [], []
        for _ in range(b.slow_reps):
            job = b.job(program)
            # The baseline runs at the same time: its CPU is its own (wait4), not ours.
            ssh = subprocess.Popen(
                b.ssh() + [_cmd(program)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
            before = cpu_seconds()
            _, job = b.submit(job)
            project.append(cpu_seconds() - before)
            _, _, ru = os.wait4(ssh.pid, 0)
            baseline.append(ru.ru_utime + ru.ru_stime)
            b.forget(job)
        work = f"worker CPU while a job sleeps 10 s{label} (baseline: ssh client CPU)"
        rows.append(Row(work, "s", project, baseline, "<= 0.1 s", limit=0.1))
    return rows


BIG = (
    "import os\nwith open('big.bin', 'wb') as f:\n"
    "    for _ in range(200):\n        f.write(os.urandom(1 << 20))\n"
)
BIG_SIZE = 200 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _samples(values: list[float], unit: str = "s") -> str:
    return "every repetition: " + ", ".join(f"{v:.2f}" for v in values) + f" {unit}"


def big_result(b: Bench) -> list[Row]:
    """A 200 MiB result file, as a user sees it: the whole submit of the job minus the same
    job's submit with ``store_results=[]`` (no stage-out), vs ``scp`` of the file. The
    stage-out alone (``results.collect``, timed in this process) is a row of its own."""
    from django_remote_submission.runner import run as job_run  # where JobRun calls collect

    whole, bare, collects, growth, scp, scp_rss, exact = [], [], [], [], [], [], True
    collect = job_run.collect

    def timed_collect(*args, **kwargs):  # wraps the runner's stage-out, in this process only
        t0 = time.perf_counter()
        out = collect(*args, **kwargs)
        collects.append(time.perf_counter() - t0)
        return out

    job_run.collect = timed_collect
    try:
        for _ in range(b.reps):
            seconds, job = b.submit(b.job(BIG), store_results=[])
            exact &= job.status == "success" and not job.results.exists()
            bare.append(seconds)
            b.forget(job)
            with RssPeak() as peak:
                seconds, job = b.submit(b.job(BIG))
            whole.append(seconds)
            growth.append(peak.growth)
            remote = os.path.join(job.remote_directory, "big.bin")  # same machine: readable
            result = job.results.get()
            exact &= (
                job.status == "success"
                and result.size == BIG_SIZE
                and result.sha256 == _sha256(remote) == _sha256(result.local_file.path)
            )
            local = os.path.join(b.tmp, "scp.bin")
            ran = run(b.scp(remote, local))
            exact &= ran.returncode == 0 and os.path.getsize(local) == BIG_SIZE
            scp.append(ran.seconds)
            scp_rss.append(ran.maxrss_mb)
            os.remove(local)
            b.forget(job)
    finally:
        job_run.collect = collect
    diffs = [w - s for w, s in zip(whole, bare, strict=True)]
    note = f"exact: {'yes' if exact else 'no'}"
    return [
        Row(
            "200 MiB result, whole submit minus the same with store_results=[]",
            "s",
            diffs,
            scp,
            "<= 1.2 x scp in every repetition",
            max_ratio=1.2,
            ok=exact,
            value=max(diffs),  # every repetition must meet it: the worst counts
            notes=f"{note}; value: the worst repetition; {_samples(diffs)}",
        ),
        Row(
            "  200 MiB result, results.collect alone (stage-out)",
            "s",
            collects,
            scp,
            "<= 1.2 x scp in every repetition",
            max_ratio=1.2,
            ok=exact,
            value=max(collects),
            notes=f"value: the worst repetition; {_samples(collects)}",
        ),
        Row(
            "  worker RSS growth during that whole submit",
            "MB",
            growth,
            None,
            "< 50 MB",
            limit=50,
            value=max(growth),  # a memory bound: the worst repetition counts
            notes=f"value: the worst repetition; scp's own max RSS {max(scp_rss):.0f} MB",
        ),
    ]


def _at_once(b: Bench, n: int, program: str, server, creds: dict, sshd) -> dict:
    """``n`` jobs submitted at once to this process from an ``n``-thread pool (like ``celery
    worker --pool threads --concurrency n``): wall time until all returned, successes, the
    connections the pool opened, this process's CPU and RSS (sampled every 50 ms), errors."""
    from django.db import connection

    from django_remote_submission import runner
    from django_remote_submission.models import Job
    from django_remote_submission.remote.ssh import pool

    def one(pk: int) -> str | None:
        try:
            runner.submit(pk, **creds)
        except Exception as exc:  # counted below: the job is not a success
            return f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()  # each thread has its own DB connection

    errors: Counter = Counter()
    jobs = [b.job(program, server) for _ in range(n)]
    pks = [job.pk for job in jobs]
    cpu = cpu_seconds()
    with RssPeak(interval=0.05) as rss, MachineCpu() as machine:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as threads:
            raised = list(threads.map(one, pks))
        seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu
    conns = sum(len(cs) for key, cs in pool._conns.items() if key[1] == sshd.port)
    done = Job.objects.filter(pk__in=pks)
    successes = done.filter(status="success").count()
    errors.update([j.error[:70] for j in done.exclude(status="success")])
    errors.update(e[:70] for e in raised if e)
    b.forget_all(jobs)
    return {
        "seconds": seconds,
        "successes": successes,
        "connections": conns,
        "cpu": cpu,
        "rss_start": rss.start,
        "rss_peak": rss.peak,
        "machine_busy": machine.busy,
        "errors": errors,
    }


def _many(b: Bench, server, creds: dict, sshd, sessions: int, label: str) -> Row:
    """200 jobs sleeping 10 s submitted at once to one worker (threads, like
    ``celery worker --pool threads --concurrency 200``) vs 200 ssh sessions on as many
    ControlMasters as the sshd's ``MaxSessions`` needs."""
    n = 200
    project, successes, conns, errors = [], [], [], Counter()
    for _ in range(b.slow_reps):
        got = _at_once(b, n, SLEEP, server, creds, sshd)
        project.append(got["seconds"])
        successes.append(got["successes"])
        conns.append(got["connections"])
        errors.update(got["errors"])
        cpu = got["cpu"]

    baseline, baseline_ok = [], []
    k = -(-n // sessions)
    with ExitStack() as stack:
        masters = [stack.enter_context(b.master(sshd)) for _ in range(k)]

        def ssh(i: int) -> bool:
            return run(b.ssh(masters[i % k], sshd) + [_cmd(SLEEP)]).returncode == 0

        for _ in range(b.slow_reps):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as threads:
                baseline_ok.append(sum(threads.map(ssh, range(n))))
            baseline.append(time.perf_counter() - t0)
    notes = f"success: {', '.join(f'{s}/{n}' for s in successes)}"
    notes += f"; connections: {', '.join(map(str, conns))}; CPU {cpu:.1f} s (last)"
    notes += f"; {_samples(project)}"
    notes += "".join(f"; {c} x {e!r}" for e, c in errors.most_common())
    if min(baseline_ok) < n:
        notes += f"; baseline ok: {baseline_ok}"
    work = f"200 jobs sleeping 10 s at once, one worker, {label} (baseline: {k} ControlMasters)"
    ok = min(successes) == n
    return Row(work, "s", project, baseline, "all success <= 12 s", limit=12, ok=ok, notes=notes)


def many(b: Bench) -> list[Row]:
    """200 jobs at once against an sshd with stock limits (what users' hosts run), and
    against the test sshd's generous ones (``MaxSessions 50``, ``MaxStartups 100``)."""
    sshd, server, creds = b.stock()
    return [
        _many(b, server, creds, sshd, 10, "stock sshd (MaxSessions 10, MaxStartups 10:30:100)"),
        _many(b, b.server, b.creds, b.sshd, 50, "sshd with MaxSessions 50"),
    ]


SLEEP30 = "import time\ntime.sleep(30)\n"


def thousand(b: Bench) -> list[Row]:
    """1,000 jobs sleeping 30 s submitted at once to one worker process (a 1,000-thread pool,
    like ``celery worker --pool threads --concurrency 1000``) against the sshd with stock
    limits; one repetition (``BENCH_THOUSAND_REPS``), no baseline."""
    sshd, server, creds = b.stock()
    n = 1000
    runs = [
        _at_once(b, n, SLEEP30, server, creds, sshd)
        for _ in range(int(os.environ.get("BENCH_THOUSAND_REPS", 1)))
    ]
    errors: Counter = Counter()
    for got in runs:
        errors.update(got["errors"])
    ok = min(got["successes"] for got in runs) == n
    notes = "success: " + ", ".join(f"{got['successes']}/{n}" for got in runs)
    notes += f"; connections: {', '.join(str(got['connections']) for got in runs)}"
    notes += f"; {_samples([got['seconds'] for got in runs])}"
    notes += "; machine CPU busy " + ", ".join(f"{got['machine_busy']:.0%}" for got in runs)
    notes += f" (both cores, every process); load average {os.getloadavg()[0]:.1f}"
    notes += "".join(f"; {c} x {e!r}" for e, c in errors.most_common(5))
    work = f"{n} jobs sleeping 30 s at once, one worker process ({n} threads), stock sshd"
    return [
        Row(
            work,
            "s",
            [got["seconds"] for got in runs],
            None,
            "all success <= 40 s",
            limit=40,
            ok=ok,
            notes=notes,
        ),
        Row(
            "  worker RSS (peak, sampled every 50 ms) during those jobs",
            "MB",
            [got["rss_peak"] for got in runs],
            None,
            "<= 400 MB",
            limit=400,
            value=max(got["rss_peak"] for got in runs),
            notes="this process: " + ", ".join(f"{got['rss_start']:.0f} MB before" for got in runs),
        ),
        Row(
            "  worker CPU during those jobs",
            "s",
            [got["cpu"] for got in runs],
            None,
            "<= 10 s",
            limit=10,
            value=max(got["cpu"] for got in runs),
            notes="this process, all threads, the database's work included",
        ),
    ]


WS_PROGRAM = "import time\nfor _ in range(100):\n    print(time.time())\n    time.sleep(0.05)\n"


def _listen(url: str, cookie: str, n: int, ready: threading.Event, latencies: list[float]) -> None:
    """Collect ``receive time - printed time`` of ``n`` lines from the websocket."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=10, additional_headers={"Cookie": cookie}) as ws:
        ready.set()
        while len(latencies) < n:
            message = json.loads(ws.recv(timeout=30))
            now = time.time()
            for row in message.get("logs", []) if message.get("type") == "logs" else []:
                latencies.extend(now - float(line) for line in row["content"].split())


@contextmanager
def _daphne(b: Bench):
    """daphne serving bench.asgi on a free port: yields (port, session cookie of the owner)."""
    import socket

    from django.test import Client

    from tests.services import free_port, wait_for

    browser = Client()
    browser.force_login(b.owner)  # the consumers want an authenticated session
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    daphne = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "bench.asgi:application",
        ],
        cwd=ROOT,
        env=env,
    )
    try:

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout=30, message="daphne")
        yield port, cookie
    finally:
        daphne.terminate()
        daphne.wait(10)


def _consumer() -> str:
    from importlib.util import find_spec

    if find_spec("django_remote_submission.routing"):
        return "the app's consumer"
    return "bench stand-in consumer"


def websocket(b: Bench) -> list[Row]:
    """A remote ``print`` -> a message on a websocket client (daphne + channels_redis)."""
    p50, p99, pooled = [], [], []
    with _daphne(b) as (port, cookie):
        for _ in range(b.reps):
            job = b.job(WS_PROGRAM)
            latencies: list[float] = []
            ready = threading.Event()
            client = threading.Thread(
                target=_listen,
                daemon=True,
                args=(f"ws://127.0.0.1:{port}/ws/job-log/{job.pk}/", cookie, 100, ready, latencies),
            )
            client.start()
            if not ready.wait(15):
                raise RuntimeError("the websocket client could not connect")
            b.submit(job)
            client.join(30)
            ms = sorted(x * 1000 for x in latencies)
            pooled += ms
            p50.append(statistics.median(ms))
            p99.append(ms[int(0.99 * (len(ms) - 1))])
            b.forget(job)
    pooled.sort()
    p50_all, p99_all = statistics.median(pooled), pooled[int(0.99 * (len(pooled) - 1))]
    note = f"{_consumer()}; {len(pooled)} lines; value: over all lines, [range]: per repetition"
    work = "remote print -> websocket message"
    return [
        Row(f"{work}, p50", "ms", p50, None, "<= 50 ms", limit=50, notes=note, value=p50_all),
        Row(f"{work}, p99", "ms", p99, None, "<= 100 ms", limit=100, value=p99_all),
    ]


FLOOD_CLIENTS = 100
FLOOD_LINES = 5000  # 1,000 lines/s for 5 s
# Each line: its number and the time it was printed; on schedule, not drifting behind it.
WS_FLOOD = (
    "import time\nt0 = time.time()\nfor i in range({n}):\n"
    "    wait = t0 + i / 1000 - time.time()\n"
    "    if wait > 0:\n        time.sleep(wait)\n"
    "    print(i, time.time())\n"
)


async def _flood_clients(
    url: str, cookie: str, clients: int, ready: threading.Event, timeout: float
) -> list[dict]:
    """``clients`` websockets on one event loop; each returns the line numbers it received in
    order, their latencies (receive time - printed time), and how it was served."""
    import asyncio

    from websockets.asyncio.client import connect

    async def one(ws) -> dict:
        got: dict = {
            "numbers": [],
            "latencies": [],
            "arrived": [],  # the row's time (the worker read it) - printed time
            "history_rows": 0,
            "messages": 0,
        }
        last_ack = 0.0
        while True:
            message = json.loads(await ws.recv())
            now = time.time()
            got["messages"] += 1
            if message.get("type") == "logs":
                for row in message["logs"]:
                    if row["stream"] != "stdout":
                        continue
                    got["history_rows"] += bool(message.get("history"))
                    arrived = datetime.fromisoformat(row["time"]).timestamp()
                    for line in row["content"].splitlines():
                        number, printed = line.split()
                        got["numbers"].append(int(number))
                        got["latencies"].append(now - float(printed))
                        got["arrived"].append(arrived - float(printed))
            elif message.get("type") == "status" and message["job"]["status"] in (
                "success",
                "failure",
            ):
                return got  # sent after every row stored before it
            if now - last_ack > 0.1:  # the protocol's flow control: ack at most every 100 ms
                last_ack = now
                await ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))

    sockets = [
        await connect(url, open_timeout=30, additional_headers={"Cookie": cookie}, max_size=None)
        for _ in range(clients)
    ]
    try:
        for ws in sockets:  # the job's status on connect: each socket is joined to the group
            assert json.loads(await ws.recv())["type"] == "status"
        ready.set()
        return await asyncio.wait_for(asyncio.gather(*(one(ws) for ws in sockets)), timeout)
    finally:
        for ws in sockets:
            await ws.close()


def websocket_clients(b: Bench) -> list[Row]:
    """100 websocket clients on one job printing 1,000 lines/s for 5 s: printed on the host
    -> received by a client, each client must get every line once, in order."""
    import asyncio

    p50, p99, pooled, complete, history, messages = [], [], [], [], [], []
    arrived: list[float] = []
    expected = list(range(FLOOD_LINES))
    with _daphne(b) as (port, cookie):
        for _ in range(b.reps):
            job = b.job(WS_FLOOD.format(n=FLOOD_LINES))
            url = f"ws://127.0.0.1:{port}/ws/job-log/{job.pk}/"
            ready, out, failed = threading.Event(), [], []

            def listen(url=url, ready=ready, out=out, failed=failed) -> None:
                try:
                    out += asyncio.run(_flood_clients(url, cookie, FLOOD_CLIENTS, ready, 120))
                except BaseException as exc:  # reported below
                    failed.append(exc)
                    ready.set()

            clients = threading.Thread(target=listen, daemon=True)
            clients.start()
            if not ready.wait(60) or failed:
                raise RuntimeError(f"the websocket clients could not connect: {failed}")
            _, job = b.submit(job)
            clients.join(150)
            if failed or clients.is_alive():
                raise RuntimeError(f"the websocket clients failed: {failed or 'timed out'}")
            ms = sorted(x * 1000 for got in out for x in got["latencies"])
            pooled += ms
            p50.append(statistics.median(ms))
            p99.append(ms[int(0.99 * (len(ms) - 1))])
            arrived += [x * 1000 for got in out for x in got["arrived"]]
            complete.append(sum(got["numbers"] == expected for got in out))
            history.append(sum(got["history_rows"] for got in out))
            messages.append(statistics.median(got["messages"] for got in out))
            b.forget(job)
    pooled.sort()
    p50_all, p99_all = statistics.median(pooled), pooled[int(0.99 * (len(pooled) - 1))]
    ok = min(complete) == FLOOD_CLIENTS
    n = FLOOD_CLIENTS
    note = "; ".join(
        [
            f"{_consumer()}",
            f"{n} clients on one event loop in the bench process, one session",
            f"every line once in order: {', '.join(f'{c}/{n}' for c in complete)} clients",
            f"rows resent from the database (history): {', '.join(map(str, history))}",
            f"messages per client (median): {', '.join(f'{m:.0f}' for m in messages)}",
            f"max {max(pooled):.0f} ms",
            # A row's time is when the worker read its first bytes: for the row's first line,
            # how long the line took to reach the worker (the row's later lines came after).
            f"row's time - printed time (host -> worker), max {max(arrived):.0f} ms",
            "value: over all lines of all clients, [range]: per repetition",
        ]
    )
    work = f"{n} websocket clients, a job printing 1,000 lines/s for 5 s: print -> client"
    return [
        Row(
            f"{work}, p50",
            "ms",
            p50,
            None,
            "<= 50 ms; no line missed",
            limit=50,
            ok=ok,
            notes=note,
            value=p50_all,
        ),
        Row(f"{work}, p99", "ms", p99, None, "<= 100 ms", limit=100, ok=ok, value=p99_all),
    ]


ROWS = {
    "trivial": trivial,
    "lines": lines,
    "sleep": sleeping,
    "big": big_result,
    "many": many,
    "many1000": thousand,
    "ws": websocket,
    "ws100": websocket_clients,
}
