"""The README's Quickstart, verbatim: ``django-admin startproject proj`` plus exactly the code
blocks of README.rst (read from it, so the two cannot drift), then the README's commands: a
real Celery worker and daphne. The README's job runs on the test sshd and succeeds; pages, API
(with a session and with an API token), admin, static files and websockets answer through
daphne; a websocket left idle for 60 s is still open and still told of changes.

Only the values a reader replaces are replaced (host, port, login, password, directory, the
Redis port): each must occur in the README, or the test fails.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.services import free_port, start_redis, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
pytestmark = pytest.mark.own_project  # its own project and database
IDLE = 60.0  # seconds a websocket is left without a message
# The test run's own settings must not leak into the project's processes.
PRIVATE = (
    "DJANGO_SETTINGS_MODULE",
    "DRS_TEST_TMP",
    "DRS_TEST_DB",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DRS_CHANNEL_REDIS",
    "DRS_TEST_HEARTBEAT",
)
MARKERS = ("# proj/", "# python manage.py shell", "# in the project directory")


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """``(first line, code)`` of each literal block whose first line is one of ``MARKERS``."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not (line.rstrip().endswith("::") or line.startswith(".. code-block::")):
            continue
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and not following.startswith(" "):
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        first = code.splitlines()[0] if code.strip() else ""
        if first.startswith(MARKERS):
            blocks.append((first, code))
    return blocks


def substituted(blocks, replacements: dict[str, str]):
    text = "".join(code for _, code in blocks)
    missing = [old for old in replacements if old not in text]
    assert not missing, f"the README no longer shows {missing}"
    result = []
    for first, code in blocks:
        for old, new in replacements.items():
            code = code.replace(old, new)
        result.append((first, code))
    return result


class Site:
    """A logged-in client of the project: cookies, CSRF, JSON."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def open(self, path: str, data: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.url + path, data, headers or {})
        return self.opener.open(request, timeout=15)

    def get(self, path: str, accept: str = "*/*") -> tuple[int, str, bytes]:
        with self.open(path, headers={"Accept": accept}) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()

    def text(self, path: str, accept: str = "*/*") -> str:
        status, _, body = self.get(path, accept)
        assert status == 200, path
        return body.decode()

    def log_in(self, username: str, password: str) -> None:
        self.get("login/")
        body = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.cookie("csrftoken"),
            }
        ).encode()
        with self.open("login/", body) as response:
            assert response.url == self.url, response.url  # redirected to the job list

    def post_json(self, path: str, data: dict) -> dict:
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.cookie("csrftoken")}
        with self.open(path, json.dumps(data).encode(), headers) as response:
            return json.loads(response.read())

    def websocket(self, path: str):
        return connect(
            self.url.replace("http://", "ws://") + path,
            additional_headers={
                "Cookie": f"sessionid={self.cookie('sessionid')}",
                "Origin": self.url.rstrip("/"),
            },
            proxy=None,
            ping_interval=None,  # as a browser: no client pings keep anything busy
        )


def receive(ws, until, timeout: float = 30) -> list[dict]:
    """Messages of ``ws`` up to the first for which ``until(message)`` is true."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        messages.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        if until(messages[-1]):
            return messages


class Project:
    """The processes and commands of the project directory."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if k not in PRIVATE}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.children: list[tuple[subprocess.Popen, Path]] = []

    def run(self, argv: list[str], **env: str) -> str:
        done = subprocess.run(
            [sys.executable, *argv],
            cwd=self.dir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=self.dir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.children.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')}" for _, log in self.children
        )

    def stop(self) -> None:
        for proc, _ in reversed(self.children):
            proc.terminate()
        for proc, _ in self.children:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def command(self, line: str, admin: tuple[str, str]) -> str:
        """One line of a README command block, as a reader would type it."""
        argv = shlex.split(line, comments=True)
        if argv[:2] == ["python", "manage.py"]:
            if argv[2] == "createsuperuser":
                return self.run(
                    ["manage.py", "createsuperuser", "--noinput"],
                    DJANGO_SUPERUSER_USERNAME=admin[0],
                    DJANGO_SUPERUSER_PASSWORD=admin[1],
                    DJANGO_SUPERUSER_EMAIL="admin@example.org",
                )
            return self.run(argv[1:])
        if argv[0] == "celery":
            self.start("celery", argv)
            return ""
        if argv[0] == "daphne":  # on a free port rather than 8000
            self.start("daphne", ["daphne", "-b", "127.0.0.1", "-p", str(self.port), *argv[1:]])
            return ""
        raise AssertionError(f"the test does not know how to run {line!r} from the README")


def test_the_quickstart_verbatim_runs_a_live_job_in_a_fresh_project(tmp_path, sshd):
    if sshd.password is None:
        pytest.skip("the Quickstart logs in with a password: needs the password user (root)")
    started = time.monotonic()
    redis = start_redis()
    project = Project(tmp_path / "proj", free_port())
    site = Site(f"http://127.0.0.1:{project.port}/")
    admin = ("admin", "admin-Passw0rd")
    text = README.read_text()
    assert 'pip install "django-remote-submission[daphne]"' in text
    blocks = substituted(
        readme_blocks(text),
        {
            "127.0.0.1:6379": f"127.0.0.1:{redis.port}",
            '"hpc.example.org"': f'"{sshd.host}"',
            "port=22": f"port={sshd.port}",
            'username="alice"': f'username="{sshd.password_user}"',
            '"alice\'s password"': f'"{sshd.password}"',
            '"drs-jobs/hello"': f'"{sshd.base_dir_pw}/hello"',
        },
    )
    assert [first for first, _ in blocks] == [
        "# proj/settings.py: add at the end",
        "# proj/celery.py",
        "# proj/__init__.py",
        "# proj/asgi.py",
        "# proj/urls.py",
        "# in the project directory",
        "# python manage.py shell",
        "# in the project directory",
        "# python manage.py shell",
    ]
    try:
        subprocess.run(
            [sys.executable, "-m", "django", "startproject", "proj"],
            cwd=tmp_path,
            check=True,
            env=project.env,
        )
        outputs = []
        for first, code in blocks:
            if first.startswith("# proj/"):
                path = project.dir / first.split()[1].rstrip(":")
                if "add at the end" in first:
                    code = path.read_text() + "\n" + code
                path.write_text(code)
            elif first == "# python manage.py shell":
                outputs.append(project.run(["manage.py", "shell", "-c", code]))
            else:
                for line in code.splitlines()[1:]:
                    outputs.append(project.command(line, admin))
                if any("daphne" in line for line in code.splitlines()):
                    wait_until_serving(project, site, redis.url)
        check_output, host_key_output, job_output = outputs[2], outputs[-2], outputs[-1]
        assert check_output == "System check identified no issues (0 silenced).\n"
        assert host_key_output.splitlines()[0] == sshd.host_key
        pk = int(re.search(r"/jobs/(\d+)/", job_output).group(1))

        site.log_in(*admin)
        key = make_token(site.url, admin)  # the tokens app of the Quickstart
        job = wait_for(
            lambda: final(site_json(site, f"api/jobs/{pk}/")),
            timeout=60,
            interval=0.1,
            message=lambda: project.logs(),
        )
        live_after = time.monotonic() - started
        assert job["status"] == "success", (job, project.logs())
        logs = site_json(site, f"api/logs/?job={pk}")["results"]
        assert bearer_json(site.url, key, f"api/jobs/{pk}/")["status"] == "success"
        assert "".join(r["content"] for r in logs if r["stream"] == "stdout") == "hello world\n"
        print(f"\nREADME quickstart: startproject to a succeeded job in {live_after:.1f} s")

        # A websocket left idle while everything else is checked beside it.
        errors: list[BaseException] = []
        checks = threading.Thread(target=collect(errors, check_site), args=(site, pk))
        with site.websocket("ws/job-user/") as idle:
            [jobs] = receive(idle, lambda m: m["type"] == "jobs")
            assert [j["id"] for j in jobs["jobs"]] == [pk]
            opened = time.monotonic()
            checks.start()
            try:
                message = idle.recv(timeout=IDLE)
            except TimeoutError:
                message = None
            except ConnectionClosed as exc:
                pytest.fail(
                    f"the idle websocket was closed after {time.monotonic() - opened:.1f} s "
                    f"({exc}):\n{project.logs()}"
                )
            assert message is None, message
            idle_for = time.monotonic() - opened
            checks.join(60)
            assert not errors, errors
            # Still open, and still told: run the job again through the API.
            site.post_json(f"api/jobs/{pk}/resubmit/", {"password": sshd.password})
            statuses = receive(
                idle, lambda m: m["type"] == "status" and m["job"]["status"] == "success"
            )
        assert [m["job"]["status"] for m in statuses][-1] == "success"
        print(f"README quickstart: a websocket idle for {idle_for:.1f} s stayed open")
        assert "TimeoutError" not in project.logs()
    finally:
        project.stop()
        redis.stop()


def make_token(url: str, login: tuple[str, str]) -> str:
    """An API token, made with the password (HTTP basic)."""
    basic = base64.b64encode(":".join(login).encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
    request = urllib.request.Request(url + "api/tokens/", b'{"name": "readme"}', headers)
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())["token"]


def bearer_json(url: str, key: str, path: str) -> dict:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def site_json(site: Site, path: str) -> dict:
    return json.loads(site.text(path, accept="application/json"))


def final(job: dict) -> dict | None:
    return job if job["status"] in ("success", "failure", "cancelled") else None


def wait_until_serving(project: Project, site: Site, broker: str) -> None:
    from celery import Celery

    def running() -> None:
        for proc, log in project.children:
            if proc.poll() is not None:
                raise AssertionError(f"{log.name} exited:\n{project.logs()}")

    def answers() -> bool:
        running()
        try:
            return site.get("login/")[0] == 200
        except OSError:
            return False

    probe = Celery(broker=broker, set_as_current=False)
    try:
        wait_for(answers, timeout=30, interval=0.1, message=project.logs)
        wait_for(
            lambda: running() or probe.control.ping(timeout=0.5),
            timeout=30,
            message=project.logs,
        )
    finally:
        probe.close()


def collect(errors: list, check):
    def run(*args) -> None:
        try:
            check(*args)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    return run


def check_site(site: Site, pk: int) -> None:
    """Pages, API, admin, static files and a job's websocket, through daphne."""
    jobs = site.text("")
    assert "Your jobs" in jobs or "All jobs" in jobs
    assert f'href="/jobs/{pk}/">hello</a>' in jobs
    css = re.search(r'href="(/static/django_remote_submission/drs\.css)"', jobs).group(1)
    status, content_type, _ = site.get(css.lstrip("/"))
    assert (status, content_type.split(";")[0]) == (200, "text/css")
    assert 'data-status="success"' in site.text(f"jobs/{pk}/")
    assert 'id="drs-job-form"' in site.text("jobs/new/")
    anonymous = Site(site.url)
    assert 'name="username"' in anonymous.text("login/")

    assert site_json(site, "api/jobs/")["results"][0]["id"] == pk
    assert "Job List" in site.text("api/jobs/", accept="text/html")  # the browsable API
    assert site.text("api/schema/").startswith("openapi: 3")
    docs = site.text("api/docs/")
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs)
    assert assets and all(a.startswith("/static/drf_spectacular_sidecar/") for a in assets)
    for asset in assets:
        assert site.get(asset.lstrip("/"))[0] == 200, asset

    assert "Site administration" in site.text("admin/")
    assert ">hello<" in site.text("admin/django_remote_submission/job/")
    assert site.get("static/admin/css/base.css")[0] == 200

    with site.websocket(f"ws/job-log/{pk}/") as ws:
        messages = receive(ws, lambda m: m["type"] == "logs")
    assert messages[0]["type"] == "status" and messages[0]["job"]["status"] == "success"
    assert [row["content"] for row in messages[-1]["logs"] if row["stream"] == "stdout"] == [
        "hello world\n"
    ]
