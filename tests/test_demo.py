"""``make demo`` as a new user meets it: example/demo.py starts everything, the printed login
works, the sample job runs and leaves its result, a script gets in with an API token, and
Ctrl-C leaves no process behind."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# The test run's own settings must not leak into the demo's processes.
pytestmark = pytest.mark.own_project  # its own project and database
PRIVATE = (
    "DJANGO_SETTINGS_MODULE",
    "DRS_TEST_TMP",
    "DRS_TEST_DB",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DRS_CHANNEL_REDIS",
    "REDIS_URL",
    "DATABASE_URL",
)


class Browser:
    """Just enough of one: cookies, Django's CSRF token, form posts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.url + path.lstrip("/"), timeout=10) as response:
            return response.read().decode()

    def post(self, path: str, data: dict) -> str:
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}).encode()
        with self.opener.open(self.url + path.lstrip("/"), body, timeout=10) as response:
            return response.read().decode()


def api(url: str, path: str, body: dict | None = None, basic=None, bearer=None) -> dict:
    """A JSON request to the demo's API, with HTTP basic or an API token."""
    if basic:
        auth = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    else:
        auth = f"Bearer {bearer}"
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}api/{path}", data, headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def test_demo_starts_runs_the_sample_job_and_stops_cleanly(tmp_path, redis_url):
    # (redis_url: the machine can run a redis-server, or the test would only time out)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE}
    env.update(
        PORT=str(port),
        DRS_DEMO_ENV=str(tmp_path / ".env"),
        HOME=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        MEDIA_ROOT=str(tmp_path / "m"),
    )
    demo = subprocess.Popen(
        [sys.executable, "example/demo.py"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(demo.stdout, lines), daemon=True).start()
    output: list[str] = []

    def printed(pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in output:
                if match := re.search(pattern, line):
                    return match
            try:
                output.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"demo did not print {pattern!r}:\n{''.join(output)}")

    try:
        url = printed(r"The demo runs at (http://\S+)").group(1)
        assert url == f"http://127.0.0.1:{port}/"
        username, password = printed(r"Log in as (\S+) / (\S+)").groups()
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", "".join(output))]
        assert len(pids) == 3  # redis-server, celery worker, daphne
        assert "SECRET_KEY=" in (tmp_path / ".env").read_text()

        browser = Browser(url)
        browser.get("login/")
        jobs = browser.post("login/", {"username": username, "password": password})
        assert "All jobs" in jobs  # the admin is staff
        offered = browser.get("templates/")  # two templates to run without writing code
        assert "CSV analysis: a histogram of one column" in offered
        assert "Count words (bash)" in offered
        pk = re.search(r'href="/jobs/(\d+)/">Sample', jobs).group(1)
        browser.get(f"jobs/{pk}/")
        browser.post(f"jobs/{pk}/submit/", {})

        def finished() -> str | None:
            page = browser.get(f"jobs/{pk}/")
            status = re.search(r'id="drs-job" data-job="\d+" data-status="(\w+)"', page).group(1)
            return page if status in ("success", "failure", "cancelled") else None

        page = wait_for(finished, timeout=30, interval=0.3, message="the sample job to end")
        assert 'data-status="success"' in page
        result = re.search(r'href="(/jobs/\d+/results/\d+/)"[^>]*>result.txt<', page).group(1)
        assert browser.get(result) == "The sample job ran.\n"
        log = browser.get(f"jobs/{pk}/log.txt")
        assert "line 10 of 10" in log and "a note on stderr after line 4" in log

        # A script's way in: a token made with the password, then the API with it.
        assert printed(r"API tokens: (\S+)").group(1) == f"{url}tokens/"
        assert "My API tokens" in browser.get("tokens/")
        key = api(url, "tokens/", {"name": "demo script"}, basic=(username, password))["token"]
        listed = api(url, "jobs/?page_size=100", bearer=key)["results"]
        assert int(pk) in [j["id"] for j in listed]
        # The dashboard's history: ten finished jobs of another user over the last day.
        earlier = sorted(j["status"] for j in listed if j["title"].startswith("Earlier run"))
        assert earlier == ["cancelled"] + ["failure"] * 2 + ["success"] * 7
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            demo.wait(40)
        finally:
            if demo.poll() is None:
                demo.kill()
    printed(r"stopped redis-server", timeout=5)
    assert demo.returncode == 0, "".join(output)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # nothing left in its process group either
