"""The documentation's examples run as they are written.

The tutorial's two pages are followed step by step: ``make demo`` with the output the page
shows, the sample job and its result; then a fresh ``startproject`` built from the README's
Quickstart blocks (the same ones the page shows), every console command with the output the
page shows, the shell session as a doctest, the host key compared with the host's own, the
worker and daphne, the *New job* form filled in as the page's table says, the live log and
the result compared with the page's. The how-to guides then run in that project: their shell
sessions as doctests, their commands and curl sessions with the output they show, the
embedded live log in Chromium. Only the values a reader replaces are replaced (the host, its
port, the login, the Redis port, the directory on the host, ids read from an answer): each
must occur on the page, or the test fails.
"""

from __future__ import annotations

import html
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, unavailable
from tests.docs_pages import blocks, console, matches, named, table
from tests.services import free_port, start_redis, wait_for
from tests.test_readme import PRIVATE, Project, Site, make_token, readme_blocks, receive

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FINAL = ("success", "failure", "cancelled")


# --- the checker of internal links ------------------------------------------------------------


def test_checklinks_reports_a_missing_page_and_a_missing_anchor(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        from checklinks import broken_links
    finally:
        sys.path.remove(str(DOCS))
    (tmp_path / "a.html").write_text(
        '<a href="b.html#here">ok</a> <a href="b.html#gone">no anchor</a> '
        '<a href="c.html">no page</a> <a href="https://example.org/x">external</a> '
        '<img src="_static/x.png"> <a id="top" href="#top">self</a>'
    )
    (tmp_path / "b.html").write_text('<h1 id="here">B</h1>')
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.png").write_bytes(b"")
    checked, broken = broken_links(tmp_path)
    assert checked == 5
    assert broken == ["a.html: b.html#gone (no such anchor)", "a.html: c.html (no such file)"]


def test_the_tutorial_shows_the_readme_quickstart_files():
    markers = [b.argument for b in blocks(DOCS / "tutorial/first-project.rst")]
    shown = [m for m in markers if m.startswith("# proj/")]
    readme = [first for first, _ in readme_blocks((ROOT / "README.rst").read_text())]
    assert shown == [m for m in readme if m.startswith("# proj/")]


# --- the demo ----------------------------------------------------------------------------------


class Output:
    """The lines a process prints, read as they come."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue = queue.Queue()
        self.text = ""
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {needle!r} within {timeout} s:\n{self.text}")
            if line is None:
                pytest.fail(f"the process ended before {needle!r}:\n{self.text}")
            self.text += line
        return self.text

    def rest(self) -> str:
        while (line := self.lines.get(timeout=60)) is not None:
            self.text += line
        return self.text


def job_page_state(site: Site, pk: int) -> str:
    page = site.text(f"jobs/{pk}/")
    return re.search(r'id="drs-job" data-job="\d+" data-status="(\w+)"', page).group(1)


def download(site: Site, page: str, filename: str) -> bytes:
    link = re.search(rf'href="(/jobs/\d+/results/\d+/)"[^>]*>{re.escape(filename)}<', page)
    assert link, f"no result {filename} on the page"
    status, _, body = site.get(link.group(1).lstrip("/"))
    assert status == 200
    return body


@pytest.mark.slow
def test_the_demo_page_runs_as_written(tmp_path, redis_url):
    # (redis_url: the machine can run a redis-server; the demo starts its own)
    page = blocks(DOCS / "tutorial/demo.rst")
    start = console(named(page, "demo-start").text)
    assert [command for command, _ in start][:1] == ["cd django-remote-submission"]  # this tree
    command, expected = start[1]
    assert command == "make demo"
    port = free_port()
    expected = expected.replace("8000", str(port))
    (tmp_path / "example").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE and k != "REDIS_URL"}
    env.update(
        PORT=str(port),
        DRS_DEMO_ENV=str(tmp_path / "example" / ".env"),
        HOME=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        MEDIA_ROOT=str(tmp_path / "media"),
    )
    # ``-o``: make does not rebuild the virtualenv this test runs in (make test just did).
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "demo"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as in a terminal
    )
    output = Output(demo.stdout)
    try:
        started = output.until("Press Ctrl-C to stop.\n")
        assert matches(expected, started), (
            f"the page shows:\n{expected}\nthe demo printed:\n{started}"
        )
        username, password = re.search(r"Log in as (\S+) / (\S+)", started).groups()

        site = Site(f"http://127.0.0.1:{port}/")
        site.log_in(username, password)
        jobs = site.text("")
        pk = int(re.search(r'href="/jobs/(\d+)/">Sample: coloured lines', jobs).group(1))
        assert job_page_state(site, pk) == "initial"
        assert ">Submit<" in site.text(f"jobs/{pk}/")
        token = site.cookie("csrftoken")
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode()
        site.open(f"jobs/{pk}/submit/", body).close()
        wait_for(lambda: job_page_state(site, pk) in FINAL, timeout=60, interval=0.3)
        assert job_page_state(site, pk) == "success"
        log = ANSI.sub("", site.text(f"jobs/{pk}/log.txt"))
        assert matches(named(page, "demo-log").text, log), log
        result = download(site, site.text(f"jobs/{pk}/"), "result.txt").decode()
        assert result == named(page, "demo-result").text + "\n"
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        try:
            demo.wait(60)
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
    stopped = output.rest().split("Press Ctrl-C to stop.\n", 1)[1]
    shown = named(page, "demo-stop").text.replace("^C\n", "")
    assert matches(shown, stopped), f"the page shows:\n{shown}\nthe demo printed:\n{stopped}"


# --- your first project, and the how-to guides in it -------------------------------------------

# Commands that prepare what the test already has: a virtualenv with the app installed.
PREPARED = {
    "python3 -m venv venv",
    ". venv/bin/activate",
    'pip install "django-remote-submission[daphne]"',
}
# The form's fields by the label the page's table gives them.
FORM_FIELDS = {
    "Title": "title",
    "Server": "server",
    "Interpreter": "interpreter",
    "Program": "program",
    "Remote directory": "remote_directory",
    "Remote filename": "remote_filename",
    "Log in with": "auth",
    "Password": "password",
    "Time limit (s)": "timeout",
}
ADMIN = ("admin", "admin-Passw0rd")
SHELL = ("curl", "cat", "export", "ssh-keyscan")


def unliteral(cell: str) -> str:
    """A table cell's value: ``hello`` -> hello; "(blank: ...)" -> ""."""
    return "" if cell.startswith("(blank") else cell.replace("``", "")


def substituted(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def shown(page: list, replacements: dict[str, str]) -> None:
    """Each value the test replaces must be on the page, or the test no longer follows it."""
    text = "\n".join(b.text + "\n" + b.argument for b in page)
    text += "".join(code for _, code in readme_blocks((ROOT / "README.rst").read_text()))
    missing = [old for old in replacements if old not in text]
    assert not missing, f"the page no longer shows {missing}"


class Terminal:
    """The reader's terminals in the tutorial's project: commands run in the current
    directory; the worker and daphne in the background, their output in log files."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.cwd = tmp_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.project: Project | None = None
        self.outputs: dict[str, str] = {}
        self.exports: list[str] = []
        self.background: dict[str, list[str]] = {}

    def session(self, text: str, replacements: dict[str, str], learn=None) -> None:
        """Run a console block's commands, each compared with the output the page shows;
        ``learn(command, output, expected)`` returns the expected output with what a reader
        reads in the output (an id) in place of the page's example."""
        for command, expected in console(text):
            command = substituted(command, replacements)
            self.run(command, substituted(expected, replacements), learn)

    def run(self, command: str, expected: str, learn=None) -> str:
        argv = command.split()
        prefix = False
        if command in PREPARED:
            return ""
        if command == "django-admin startproject proj":
            actual = self._run([sys.executable, "-m", "django", *argv[1:]])
        elif argv[0] == "cd":
            self.cwd = self.cwd / argv[1]
            self.project = Project(self.cwd, self.port)
            self.project.env["NO_PROXY"] = "127.0.0.1"
            return ""
        elif argv[:3] == ["python", "manage.py", "createsuperuser"]:
            assert argv[argv.index("--username") + 1] == ADMIN[0]
            actual = self._run(
                [sys.executable, *argv[1:], "--noinput"], DJANGO_SUPERUSER_PASSWORD=ADMIN[1]
            )
            expected = "\n".join(x for x in expected.splitlines() if not x.startswith("Password"))
        elif argv[:2] == ["python", "manage.py"]:
            actual = self._run([sys.executable, *argv[1:]])
        elif argv[0] == "ssh-keygen":
            actual = self._run(argv)
        elif argv[0] in SHELL:
            if argv[0] == "curl" and " -u admin " in f" {command} ":
                command = command.replace("-u admin ", f"-u {ADMIN[0]}:{ADMIN[1]} ")
                expected = "\n".join(x for x in expected.splitlines() if "password" not in x)
            actual = self._shell(command)
        elif argv[0] == "celery":
            actual, prefix = self._start("celery", argv, "ready."), True
        elif argv[0] == "daphne":
            argv = ["daphne", "-b", "127.0.0.1", "-p", str(self.port), *argv[1:]]
            expected = expected.replace("8000", str(self.port))
            actual, prefix = self._start("daphne", argv, "Listening on TCP address"), True
        else:
            raise AssertionError(f"the test does not know how to run {command!r}")
        self.outputs[command] = actual
        if learn:
            expected = learn(command, actual, expected)
        assert matches(expected, actual, prefix=prefix), (
            f"$ {command}\nthe page shows:\n{expected}\nit printed:\n{actual}"
        )
        return actual

    def _run(self, argv: list[str], **env: str) -> str:
        base = self.project.env if self.project else os.environ
        done = subprocess.run(
            argv,
            cwd=self.cwd,
            env={**base, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as a terminal shows them, in order
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}"
        return done.stdout

    def _shell(self, command: str) -> str:
        if command.startswith("export "):
            self.exports.append(command)
            return ""
        # curl prints its progress meter when its output is not a terminal: not on a screen.
        quiet = 'curl() { command curl -sS "$@"; }'
        script = "\n".join([*self.exports, quiet, "set -o pipefail", command])
        return self._run(["bash", "-c", script])

    def _start(self, name: str, argv: list[str], ready: str) -> str:
        self.background[name] = argv
        self.project.start(name, argv)
        log = self.cwd / f"{name}.log"

        def printed() -> str | None:
            for proc, path in self.project.children:
                if proc.poll() is not None:
                    raise AssertionError(f"{path.name} exited:\n{self.project.logs()}")
            text = log.read_text(errors="replace")
            return text if ready in text else None

        return wait_for(printed, timeout=60, interval=0.1, message=self.project.logs)

    def restart(self, name: str, ready: str) -> None:
        """Stop a background process and start it again (to read changed code)."""
        for proc, log in list(self.project.children):
            if log.name == f"{name}.log":
                proc.terminate()
                proc.wait(20)
                self.project.children.remove((proc, log))
                log.unlink()
        self._start(name, self.background[name], ready)

    def doctest(self, session: str) -> None:
        """A ``pycon`` block, run as a doctest in ``python manage.py shell``."""
        path = self.cwd / "session.txt"
        path.write_text(session + "\n")
        code = (
            "import doctest, sys\n"
            f"text = open({str(path)!r}).read()\n"
            "test = doctest.DocTestParser().get_doctest(text, {}, 'session', 'session.txt', 0)\n"
            "runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)\n"
            "runner.run(test)\n"
            "sys.exit(1 if runner.failures else 0)\n"
        )
        self._run([sys.executable, "manage.py", "shell", "-c", code])

    def write(self, marker: str, code: str) -> None:
        """A file of the page: its first line names it (``# proj/urls.py``, ``{# ... #}``)."""
        path = self.cwd / re.sub(r"^(#|\{#)\s*", "", marker).split()[0].rstrip(":")
        path.parent.mkdir(parents=True, exist_ok=True)
        if "add at the end" in marker:
            code = path.read_text() + "\n" + code
        path.write_text(code + "\n")

    def api(self, path: str, key: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + "api/" + path, data, headers)
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read())


class Tutorial:
    """What the first project's page left: its terminal, the job it ran and what came back."""

    terminal: Terminal
    job: int
    statuses: list[str]
    stdout: str
    result: str


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory, sshd) -> Iterator[Tutorial]:
    """The page ``tutorial/first-project.rst`` followed block by block, services left running
    for the how-to guides."""
    if sshd.password is None:
        pytest.skip("the tutorial logs in with a password: needs the password user (root)")
    redis = start_redis()
    terminal = Terminal(tmp_path_factory.mktemp("tutorial"), free_port())
    host_key_pub = Path(sshd.tmp_dir) / "ssh_host_ed25519_key.pub"
    replacements = {
        "127.0.0.1:6379": f"127.0.0.1:{redis.port}",
        '"hpc.example.org"': f'"{sshd.host}"',
        "port=22": f"port={sshd.port}",
        "<hpc.example.org:22>": f"<{sshd.host}:{sshd.port}>",
        "hpc.example.org ssh-ed25519": f"[{sshd.host}]:{sshd.port} ssh-ed25519",
        'username="alice"': f'username="{sshd.password_user}"',
        "<ServerAccount: alice on HPC>": f"<ServerAccount: {sshd.password_user} on HPC>",
        "/etc/ssh/ssh_host_ed25519_key.pub": str(host_key_pub),
    }
    page = blocks(DOCS / "tutorial/first-project.rst")
    shown(page, replacements)
    readme = dict(readme_blocks((ROOT / "README.rst").read_text()))
    tutorial = Tutorial()
    tutorial.terminal = terminal
    try:
        commands = []
        for block in page:
            if block.directive == "readme-block":
                terminal.write(block.argument, substituted(readme[block.argument], replacements))
            elif block.directive == "code-block" and block.argument == "console":
                terminal.session(block.text, replacements)
                commands += [command for command, _ in console(block.text)]
            elif block.directive == "code-block" and block.argument == "pycon":
                terminal.doctest(substituted(block.text, replacements))
        assert PREPARED <= set(commands)
        # The fingerprint the app fetched is the one the host shows.
        fetched = terminal.outputs["python manage.py drs_fetch_host_key HPC"].splitlines()[1]
        assert fetched == terminal.outputs[f"ssh-keygen -lf {host_key_pub}"].split()[1]
        run_the_job(tutorial, page, sshd)
        yield tutorial
    finally:
        if terminal.project:
            terminal.project.stop()
        redis.stop()


def run_the_job(tutorial: Tutorial, page, sshd) -> None:
    """The page's browser steps: log in, the New job form, the live log, the result."""
    site = Site(tutorial.terminal.url)
    site.log_in(*ADMIN)
    assert 'href="/jobs/new/">New job<' in site.text("")
    form = site.text("jobs/new/")
    assert ">Submit job<" in form
    rows = table(named(page, "tutorial-form").text)
    assert rows[0] == ["Field", "Value"]
    values = {FORM_FIELDS[label]: unliteral(value) for label, value in rows[1:]}
    for label in FORM_FIELDS:
        assert f"{html.escape(label)}:" in form, f"the form has no field {label!r}"
    assert values["server"] == "HPC" and values["interpreter"] == "python3"
    assert values["auth"] == "my password" and "my password" in form
    assert values["remote_directory"] == "drs-jobs/hello"
    fields = {
        **values,
        "server": re.search(r'<option value="(\d+)"[^>]*>HPC &lt;', form).group(1),
        "interpreter": re.search(r'<option value="(\d+)"[^>]*>python3 \(', form).group(1),
        "auth": "password",
        "password": sshd.password,
        "program": named(page, "tutorial-program").text + "\n",
        "remote_directory": f"{sshd.base_dir_pw}/hello",
        "csrfmiddlewaretoken": site.cookie("csrftoken"),
    }
    with site.open("jobs/new/", urllib.parse.urlencode(fields).encode()) as response:
        tutorial.job = int(re.search(r"/jobs/(\d+)/$", response.url).group(1))
        assert "Job “hello” queued." in response.read().decode()

    with site.websocket(f"ws/job-log/{tutorial.job}/") as ws:
        messages = receive(
            ws, lambda m: m["type"] == "status" and m["job"]["status"] in FINAL, timeout=60
        )
    tutorial.statuses = [m["job"]["status"] for m in messages if m["type"] == "status"]
    rows = [row for m in messages if m["type"] == "logs" for row in m["logs"]]
    tutorial.stdout = "".join(r["content"] for r in rows if r["stream"] == "stdout")
    if tutorial.statuses[-1] == "success":
        page_html = site.text(f"jobs/{tutorial.job}/")
        tutorial.result = download(site, page_html, "answer.txt").decode()


@pytest.mark.slow
def test_the_first_project_page_runs_as_written(tutorial):
    page = blocks(DOCS / "tutorial/first-project.rst")
    assert tutorial.statuses[-1] == "success", tutorial.terminal.project.logs()
    assert "running" in tutorial.statuses  # watched live
    assert tutorial.stdout == named(page, "tutorial-log").text + "\n"
    assert tutorial.result == named(page, "tutorial-result").text + "\n"


@pytest.mark.slow
def test_the_servers_guide_runs_as_written(tutorial, sshd):
    terminal = tutorial.terminal
    page = blocks(DOCS / "howto/servers.rst")
    host = f"[{sshd.host}]:{sshd.port}"
    replacements = {
        'hostname="login.cluster.example.org"': f'hostname="{sshd.host}", port={sshd.port}',
        "<login.cluster.example.org:22>": f"<{sshd.host}:{sshd.port}>",
        "login.cluster.example.org ssh-ed25519": f"{host} ssh-ed25519",
        "-t ed25519 login.cluster.example.org": f"-t ed25519 -p {sshd.port} {sshd.host}",
        "... login.cluster.example.org (ED25519)": f"... {host} (ED25519)",
    }
    shown(page, replacements)
    terminal.doctest(substituted(named(page, "servers-create").text, replacements))
    for name in ("servers-fetch", "servers-keyscan", "servers-save"):
        terminal.session(named(page, name).text, replacements)
    assert terminal.outputs["python manage.py drs_fetch_host_key Cluster --save"].startswith(
        sshd.host_key + "\n"
    )
    # The host's key changed: another key is on record when the page replaces it.
    other = f"{host} " + " ".join(Path(sshd.key_file + ".pub").read_text().split()[:2])
    terminal.doctest(
        ">>> from django_remote_submission.models import Server\n"
        f">>> Server.objects.filter(title='Cluster').update(host_key={other!r})\n1"
    )
    terminal.session(named(page, "servers-replace").text, replacements)


@pytest.mark.slow
def test_the_local_guide_runs_as_written(tutorial, tmp_path):
    page = blocks(DOCS / "howto/local.rst")
    replacements = {'remote_directory="/tmp/drs-local-hello"': f'remote_directory="{tmp_path}"'}
    shown(page, replacements)
    tutorial.terminal.doctest(substituted(named(page, "local-session").text, replacements))


@pytest.mark.slow
def test_the_api_guide_curl_sessions_run_as_written(tutorial, sshd, tmp_path):
    terminal = tutorial.terminal
    page = blocks(DOCS / "howto/api-scripts.rst")
    replacements = {
        "http://127.0.0.1:8000/": terminal.url,
        '"drs-jobs/hello"': f'"{sshd.base_dir_pw}/hello-curl"',
        "your-password": sshd.password,
    }
    shown(page, replacements)
    terminal.cwd = tmp_path  # where curl -OJ saves the result
    learnt: dict[str, str] = {}

    def learn(command: str, output: str, expected: str) -> str:
        """Values a reader reads in an answer and types into the next commands."""
        if token := re.search(r'"token":"(drs_[^"]+)"', output):
            learnt["drs_2c1f..."] = token.group(1)
        if (job := re.match(r'\{"id":(\d+),', output)) and "$API/jobs/ " in command:
            pk = job.group(1)
            learnt.update({"/jobs/7/": f"/jobs/{pk}/", "job=7": f"job={pk}"})
            learnt.update({'"id":7,': f'"id":{pk},', '"job":7,': f'"job":{pk},'})
        if (after := re.match(r'\{"after":(\d+)', output)) and "after=0" in command:
            last = after.group(1)
            learnt.update({"after=12": f"after={last}", '"after":12': f'"after":{last}'})
            learnt['"id":12,'] = f'"id":{last},'
        if (result := re.search(r'"results":\[\{"id":(\d+)', output)) and "results/?" in command:
            learnt.update({"results/3/": f"results/{result.group(1)}/"})
            learnt['"id":3,'] = f'"id":{result.group(1)},'
        return substituted(expected, learnt)

    try:
        terminal.session(named(page, "api-curl-token").text, replacements, learn)
        session = console(named(page, "api-curl-job").text)
        for command, expected in session:
            if "$API/logs/?job=7&after=0" in command:  # the reader waits for the job to end
                job_ended(terminal, learnt["/jobs/7/"].lstrip("/"), learnt["drs_2c1f..."])
            both = {**replacements, **learnt}
            terminal.run(substituted(command, both), substituted(expected, replacements), learn)
    finally:
        terminal.exports.clear()
        terminal.cwd = terminal.project.dir


def job_ended(terminal: Terminal, path: str, key: str, after: str | None = None) -> dict:
    """The job once it is final (and, with ``after``, finished later than that)."""

    def ended() -> dict | None:
        job = terminal.api(path, key)
        done = job["status"] in FINAL and (after is None or job["finished_at"] != after)
        return job if done else None

    return wait_for(ended, timeout=60, interval=0.2)


@pytest.mark.slow
def test_the_ssh_keys_guide_api_session_runs_as_written(tutorial, sshd):
    terminal = tutorial.terminal
    page = blocks(DOCS / "howto/ssh-keys.rst")
    key = make_token(terminal.url, ADMIN)
    replacements = {
        "http://127.0.0.1:8000/": terminal.url,
        "drs_2c1f...": key,
        '"alice","login":"alice"': f'"{sshd.password_user}","login":"{sshd.password_user}"',
        "your-password": sshd.password,
    }
    shown(page, replacements)
    try:
        terminal.session(named(page, "keys-api").text, replacements)
        # The key logs in: a job submitted without a password succeeds.
        before = terminal.api(f"jobs/{tutorial.job}/", key)["finished_at"]
        terminal.api(f"jobs/{tutorial.job}/resubmit/", key, {})
        job = job_ended(terminal, f"jobs/{tutorial.job}/", key, after=before)
        assert job["status"] == "success", job
    finally:
        terminal.exports.clear()
        terminal.api("accounts/1/remove-key/", key, {})  # leave the test account as it was


@pytest.mark.slow
def test_the_embed_guide_shows_a_live_log_in_a_page_of_the_project(tutorial, sshd):
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    terminal = tutorial.terminal
    page = blocks(DOCS / "howto/embed-live-log.rst")
    for name in ("embed-template", "embed-view", "embed-urls", "embed-settings"):
        code = named(page, name).text
        terminal.write(code.splitlines()[0], code)
    terminal.restart("daphne", "Listening on TCP address")
    tutorial_page = blocks(DOCS / "tutorial/first-project.rst")
    log = named(tutorial_page, "tutorial-log").text + "\n"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_context().new_page()
            tab.set_default_timeout(30_000)
            tab.goto(terminal.url + "login/")
            tab.fill("#id_username", ADMIN[0])
            tab.fill("#id_password", ADMIN[1])
            tab.click("button[type=submit]")
            tab.wait_for_url(terminal.url)
            tab.goto(terminal.url + f"my/jobs/{tutorial.job}/log/")
            tab.wait_for_function("document.getElementById('log').textContent.length > 0")
            assert tab.text_content("#log") == log  # the stored rows
            # Run it again: the new rows arrive live, after the old ones.
            key = make_token(terminal.url, ADMIN)
            terminal.api(f"jobs/{tutorial.job}/resubmit/", key, {"password": sshd.password})
            tab.wait_for_function("document.getElementById('status').textContent === 'running'")
            tab.wait_for_function("document.getElementById('status').textContent === 'success'")
            tab.wait_for_function(
                f"document.getElementById('log').textContent.length == {2 * len(log)}"
            )
            assert tab.text_content("#log") == log + log
        finally:
            browser.close()
