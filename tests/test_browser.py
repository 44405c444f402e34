"""The whole stack in Debian's chromium: daphne, redis (broker and channel layer), a Celery
worker and the test sshd. A user logs in, submits a job, sees its lines arrive while it runs,
sees it succeed and downloads its result. A token made on "My API tokens" authorizes Swagger
UI.

Playwright's sync API keeps an asyncio loop running in this thread while it is open, so the
browser is opened for this module only (not pytest-playwright's session-wide fixtures, which
would leave every later database test facing Django's async-safety check), and the ORM calls
of this module are allowed beside it (``DJANGO_ALLOW_ASYNC_UNSAFE``: nothing here is async;
the consumers run in daphne).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from django_remote_submission.models import FINAL_STATES, Job
from tests import services
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, unavailable
from tests.services import ServiceUnavailable, wait_for

PROGRAM = """\
import sys, time
for i in range(10):
    print(f"\\033[32mline {i}\\033[0m", flush=True)
    time.sleep(0.3)
# An OSC 8 hyperlink: shown as its text, never as a link.
print("\\033]8;;https://evil.example/\\033\\\\to stderr\\033]8;;\\033\\\\", file=sys.stderr)
with open("out.txt", "w") as f:
    f.write("result 42\\n")
"""


@pytest.fixture(scope="module", autouse=True)
def orm_beside_playwright():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium) -> Page:
    """A fresh browser context and page (named so that pytest-playwright leaves it alone)."""
    context = chromium.new_context(accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    # The page's own errors fail the test that met them, with their message.
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda m: m.type == "error" and "Could not show" in m.text and errors.append(m.text),
    )
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def live_site(redis_url, django_db_setup):
    """Usage: ``live_site + "login/"``: daphne serving tests.asgi, with its own worker
    (``services.live_site``)."""
    try:
        with services.live_site(redis_url, 1) as url:
            yield url
    except ServiceUnavailable as exc:
        unavailable(str(exc))


@pytest.mark.django_db(transaction=True)
def test_a_user_watches_the_job_run_live_and_downloads_its_result(
    live_site, tab: Page, sshd, server
):
    page = tab
    from django.contrib.auth import get_user_model

    login = sshd.password_user or sshd.key_user
    get_user_model().objects.create_user(login, password="web-pw")
    if sshd.password is None:  # not root: key login as the current user
        share(server, sshd, login)
    python3 = server.interpreters.get(name="python3")
    base = sshd.base_dir_pw or sshd.base_dir_key

    page.goto(live_site)  # redirected to the login page
    page.fill("input[name=username]", login)
    page.fill("input[name=password]", "web-pw")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your jobs")

    page.goto(live_site + "jobs/new/")
    page.fill("input[name=title]", "live job")
    page.select_option("select[name=server]", str(server.pk))
    page.select_option("select[name=interpreter]", str(python3.pk))
    page.fill("textarea[name=program]", PROGRAM)
    page.fill("input[name=remote_directory]", f"{base}/{uuid.uuid4().hex[:10]}")
    if sshd.password:
        page.check("input[name=auth][value=password]")
        page.fill("input[name=password]", sshd.password)
    else:
        page.check("input[name=auth][value=stored]")
    started = time.monotonic()
    page.click("#drs-job-form button[type=submit]")
    expect(page.locator("#drs-job")).to_be_visible()

    log = page.locator("#drs-log")
    expect(log.locator(".drs-stdout").first).to_contain_text("line 0", timeout=20_000)
    job = Job.objects.get(title="live job")
    assert job.status not in FINAL_STATES, "the first line must show while the job runs"
    assert page.locator("#drs-job [data-role=status]").first.text_content() != "success"

    badge = page.locator("#drs-job [data-role=status]").first
    expect(badge).to_have_text("success", timeout=30_000)
    assert time.monotonic() - started < 30
    lines = log.locator(".drs-stdout")
    expect(lines).to_have_count(10)  # one row per flush of a line: each arrived on its own
    assert lines.all_text_contents() == [f"line {i}\n" for i in range(10)]
    assert "\x1b" not in log.text_content() and "[32m" not in log.text_content()
    assert lines.first.locator("span.ansi-green-fg").count() == 1  # ANSI rendered as colour
    expect(log.locator(".drs-stderr")).to_have_text("to stderr\n")
    expect(log.locator("a")).to_have_count(0)  # the OSC 8 link is text
    expect(page.locator("[data-role=exit_code]")).to_have_text("0")
    expect(page.locator("[data-role=cancel]")).to_be_hidden()

    with page.expect_download() as download:
        page.locator("[data-role=result]", has_text="out.txt").click()
    assert Path(download.value.path()).read_text() == "result 42\n"
    assert download.value.suggested_filename == "out.txt"


def share(server, sshd, login: str) -> None:
    """Not root: jobs log in with the key stored on the server, which needs the permission."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    server.username, server.private_key = sshd.key_user, sshd.key_text
    server.save()
    user = get_user_model().objects.get(username=login)
    user.user_permissions.add(Permission.objects.get(codename="use_shared_credentials"))


def log_in(page: Page, live_site: str, username: str, password: str) -> None:
    page.goto(live_site + "login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()


BASH_PROGRAM = """\
name=world
for i in 1 2 3; do
  echo "hello $name $i"
done
if [ -n "$name" ]; then
  echo done
fi
"""


@pytest.mark.django_db(transaction=True)
def test_a_bash_program_typed_into_the_form_runs(live_site, tab: Page, sshd, server):
    page = tab
    from django.contrib.auth import get_user_model

    login = sshd.password_user or sshd.key_user
    get_user_model().objects.create_user(login, password="web-pw")
    if sshd.password is None:
        share(server, sshd, login)
    bash = server.interpreters.get(name="bash")
    base = sshd.base_dir_pw or sshd.base_dir_key
    log_in(page, live_site, login, "web-pw")

    page.goto(live_site + "jobs/new/")
    page.fill("input[name=title]", "bash job")
    page.select_option("select[name=server]", str(server.pk))
    page.select_option("select[name=interpreter]", str(bash.pk))
    page.locator("textarea[name=program]").press_sequentially(BASH_PROGRAM)
    page.fill("input[name=remote_directory]", f"{base}/{uuid.uuid4().hex[:10]}")
    if sshd.password:
        page.check("input[name=auth][value=password]")
        page.fill("input[name=password]", sshd.password)
    else:
        page.check("input[name=auth][value=stored]")
    page.click("#drs-job-form button[type=submit]")

    badge = page.locator("#drs-job [data-role=status]").first
    expect(badge).to_have_text("success", timeout=30_000)
    job = Job.objects.get(title="bash job")
    assert job.program == BASH_PROGRAM  # the browser sent CRLF; stored as typed, with LF
    # The rows are whatever batches the lines arrived in: the text they make is exact.
    stdout = page.locator("#drs-log .drs-stdout")
    wait_for(
        lambda: (
            "".join(stdout.all_text_contents())
            == "hello world 1\nhello world 2\nhello world 3\ndone\n"
        ),
        timeout=15,
        message=lambda: repr(stdout.all_text_contents()),
    )
    # A finished job: no "live" mark, no "queued" notice left over from the submission.
    expect(page.locator("#drs-job [data-role=connection]")).to_be_hidden()
    expect(page.locator(".drs-message")).to_have_count(0)


@pytest.mark.django_db(transaction=True)
def test_the_api_docs_load_nothing_from_other_hosts(live_site, tab: Page):
    page = tab
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("docs-reader", password="pw")
    log_in(page, live_site, "docs-reader", "pw")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live_site + "api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Remote submission API")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    assert requested and all(url.startswith(live_site) for url in requested), requested
    assert any("/static/drf_spectacular_sidecar/" in url for url in requested)


@pytest.mark.django_db(transaction=True)
def test_the_job_list_and_the_admin_show_every_column_at_1280_px(
    live_site, tab: Page, sshd, server
):
    page = tab
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user(
        "wide-staff", password="pw", is_staff=True, is_superuser=True
    )
    python3 = server.interpreters.get(name="python3")
    now = timezone.now()
    for i in range(3):
        Job.objects.create(
            title=f"A job with a rather long title, number {i}",
            program="print(1)",
            owner=staff,
            server=server,
            interpreter=python3,
            remote_directory="d",
            remote_filename="job.py",
            status="cancelled",
            started_at=now,
            finished_at=now,
            exit_code=-15,
        )
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_site, "wide-staff", "pw")
    for path, table in (("", "#drs-jobs"), ("admin/django_remote_submission/job/", "#result_list")):
        page.goto(live_site + path)
        last = page.locator(f"{table} thead th").last
        expect(last).to_be_visible()
        box = last.bounding_box()
        container = page.evaluate("document.documentElement.clientWidth")
        assert box["x"] + box["width"] <= container, (path, box, container)
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= container, (path, scroll, container)


@pytest.mark.django_db(transaction=True)
def test_a_token_made_on_its_page_authorizes_swagger_ui(live_site, chromium):
    from django.contrib.auth import get_user_model

    from django_remote_submission.models import Interpreter, Server

    user = get_user_model().objects.create_user("token-maker", password="pw")
    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3")
    server = Server.objects.create(title="nowhere", hostname="127.0.0.1", port=9)
    server.interpreters.set([python3])
    Job.objects.create(
        title="listed with a token",
        program="print(1)",
        owner=user,
        server=server,
        interpreter=python3,
        remote_directory="d",
        remote_filename="job.py",
    )
    pages = [chromium.new_context(), chromium.new_context()]
    try:
        page = pages[0].new_page()
        log_in(page, live_site, "token-maker", "pw")
        page.click("text=My API tokens")
        page.fill("input[name=name]", "swagger")
        page.click("#drs-token-form button[type=submit]")
        key = page.locator("[data-role=token-key]").text_content()
        assert key.startswith("drs_")
        expect(page.locator("table.drs-tokens tbody tr")).to_have_count(1)

        docs = pages[1].new_page()  # no session: only the token
        docs.goto(live_site + "api/docs/")
        docs.click(".swagger-ui .auth-wrapper .authorize")
        bearer = docs.locator(".auth-container", has_text="apiToken")
        bearer.locator("input").fill(key)
        bearer.locator("button.authorize").click()
        docs.click("button.btn-done")
        operation = docs.locator("#operations-jobs-jobs_list")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tbody .response-col_status").first
        expect(status).to_have_text("200", timeout=10_000)
        expect(operation.locator(".live-responses-table")).to_contain_text("listed with a token")
    finally:
        for context in pages:
            context.close()


TEMPLATE_PROGRAM = """\
import json, os, sys
data = open(os.environ["DATA"]).read() if "DATA" in os.environ else ""
print(json.dumps([sys.argv[1:], os.environ.get("MODE"), data]))
"""


@pytest.mark.django_db(transaction=True)
def test_a_user_fills_a_templates_generated_form_and_sees_the_job_run(
    live_site, tab: Page, sshd, server, tmp_path
):
    from django.contrib.auth import get_user_model

    from django_remote_submission.models import JobTemplate

    page = tab
    login = sshd.password_user or sshd.key_user
    get_user_model().objects.create_user(login, password="web-pw")
    if sshd.password is None:
        share(server, sshd, login)
    template = JobTemplate.objects.create(
        name="Every type",
        interpreter=server.interpreters.get(name="python3"),
        program=TEMPLATE_PROGRAM,
        remote_filename="every.py",
    )
    template.servers.set([server])
    params = template.parameters
    params.create(position=1, name="bins", type="integer", default="10", required=True)
    params.create(position=2, name="scale", type="float", passed_as="positional")
    params.create(
        position=3,
        name="mode",
        type="choice",
        choices=["fast", "exact"],
        passed_as="environment",
    )
    params.create(position=4, name="verbose", type="boolean")
    params.create(position=5, name="label", type="text")
    params.create(position=6, name="data", type="file", passed_as="environment")
    upload = tmp_path / "points.csv"
    upload.write_text("x,y\n1,2\n")

    log_in(page, live_site, login, "web-pw")
    page.goto(live_site + "templates/")
    page.click("text=Every type")
    expect(page.locator("h1")).to_have_text("Every type")
    page.fill("input[name=bins]", "12")
    page.fill("input[name=scale]", "0.5")
    page.select_option("select[name=mode]", "exact")
    page.check("input[name=verbose]")
    page.fill("input[name=label]", "two words $(id)")
    page.set_input_files("input[name=data]", str(upload))
    if sshd.password:
        page.fill("input[name=password]", sshd.password)
    page.click("#drs-template-form button[type=submit]")
    expect(page.locator("#drs-job")).to_be_visible()
    expect(page.locator("#drs-job [data-role=status]").first).to_have_text(
        "success", timeout=30_000
    )
    expected = [
        ["--bins", "12", "0.5", "--verbose", "--label", "two words $(id)"],
        "exact",
        "x,y\n1,2\n",
    ]
    rows = page.locator("#drs-log .drs-stdout")
    wait_for(lambda: "".join(rows.all_text_contents()) == json.dumps(expected) + "\n", timeout=10)
    expect(page.locator("[data-role=inputs]")).to_contain_text("points.csv")

    page.click("text=Run again with changes")
    expect(page.locator("input[name=bins]")).to_have_value("12")
    expect(page.locator("select[name=mode]")).to_have_value("exact")
    # The page asks for a number; a hostile client sends anything: the server checks it.
    page.locator("input[name=bins]").evaluate("e => { e.type = 'text'; }")
    page.fill("input[name=bins]", "twelve")
    page.click("#drs-template-form button[type=submit]")
    expect(page.locator("[data-field=bins] .errorlist")).to_have_text("Enter a whole number.")


@pytest.mark.django_db(transaction=True)
def test_files_dropped_on_the_new_job_form_are_uploaded_and_staged(
    live_site, tab: Page, sshd, server
):
    from django.contrib.auth import get_user_model

    page = tab
    login = sshd.password_user or sshd.key_user
    get_user_model().objects.create_user(login, password="web-pw")
    if sshd.password is None:
        share(server, sshd, login)
    python3 = server.interpreters.get(name="python3")
    base = sshd.base_dir_pw or sshd.base_dir_key
    log_in(page, live_site, login, "web-pw")
    page.goto(live_site + "jobs/new/")
    page.fill("input[name=title]", "dropped files")
    page.select_option("select[name=server]", str(server.pk))
    page.select_option("select[name=interpreter]", str(python3.pk))
    page.fill(
        "textarea[name=program]",
        "import sys\nfor n in sys.argv[1:]:\n    print(n, open(n, 'rb').read())\n",
    )
    page.fill("input[name=arguments]", "a.txt 'b c.bin'")
    page.fill("input[name=remote_directory]", f"{base}/{uuid.uuid4().hex[:10]}")
    if sshd.password:
        page.check("input[name=auth][value=password]")
        page.fill("input[name=password]", sshd.password)
    else:
        page.check("input[name=auth][value=stored]")
    # Two drops, as a user drags files from a file manager onto the field.
    for name, content in (("a.txt", "first"), ("b c.bin", "\u00e9")):
        page.locator("[data-field=input_files]").evaluate(
            """(zone, [name, content]) => {
                const data = new DataTransfer();
                data.items.add(new File([content], name));
                zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
            }""",
            [name, content],
        )
    count = page.locator("input[name=input_files]").evaluate("i => i.files.length")
    assert count == 2
    page.click("#drs-job-form button[type=submit]")
    expect(page.locator("#drs-job")).to_be_visible()
    expect(page.locator("#drs-job [data-role=status]").first).to_have_text(
        "success", timeout=30_000
    )
    rows = page.locator("#drs-log .drs-stdout")
    expected = "a.txt b'first'\nb c.bin b'\\xc3\\xa9'\n"
    wait_for(lambda: "".join(rows.all_text_contents()) == expected, timeout=10)
    job = Job.objects.get(title="dropped files")
    assert sorted(job.inputs.values_list("path", "size")) == [("a.txt", 5), ("b c.bin", 2)]


CHART_TOTALS = """() => Object.fromEntries(
  [...document.querySelectorAll("canvas[data-chart]")].map((canvas) => [
    canvas.dataset.chart,
    Object.fromEntries(
      Chart.getChart(canvas).data.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + b, 0)])
    ),
  ])
)"""


# The rows of the dashboard's table of counts, as text, sorted.
COUNT_ROWS = """() => [...document.querySelectorAll('table[data-role=counts] tbody tr')]
    .map((tr) => [...tr.cells].map((td) => td.textContent.trim())).sort()"""


@pytest.mark.django_db(transaction=True)
def test_the_dashboards_charts_show_the_jobs_and_follow_a_job_that_ends(
    live_site, tab: Page, server, redis_url, settings
):
    page = tab
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    from django_remote_submission import events
    from django_remote_submission.conf import redis_channel_layer
    from django_remote_submission.models import Result, Server

    staff = get_user_model().objects.create_user("chart-staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    python3 = server.interpreters.get(name="python3")
    hpc2 = Server.objects.create(title="hpc2", hostname="hpc2.invalid")
    now = timezone.now()
    # A few hours of history: (server, status, hours ago it ended, wait s, run s, log bytes).
    plan = [
        (server, "success", 9, 3, 40, 2_000),
        (server, "success", 7, 12, 95, 8_000),
        (server, "failure", 7, 1, 2, 300),
        (hpc2, "success", 5, 45, 600, 40_000),
        (hpc2, "cancelled", 4, 400, 30, 0),
        (server, "success", 2, 2, 8, 1_500),
        (hpc2, "failure", 1, 20, 4_000, 12_000),
        (server, "success", 0, 5, 70, 6_000),
    ]
    for i, (where, status, ago, wait, run, logged) in enumerate(plan):
        finished = now - timedelta(hours=ago, minutes=5)
        started = finished - timedelta(seconds=run)
        job = Job.objects.create(
            title=f"history {i}",
            program="print(1)",
            owner=staff,
            server=where,
            interpreter=python3,
            remote_directory="d",
            remote_filename="job.py",
            status=status,
            exit_code=0 if status == "success" else 1,
            error={"failure": f"exit code {i}", "cancelled": "cancelled by chart-staff"}.get(
                status, ""
            ),
            submitted_at=started - timedelta(seconds=wait),
            started_at=started,
            finished_at=finished,
            stdout_offset=logged,
        )
        Job.objects.filter(pk=job.pk).update(created=started - timedelta(seconds=wait))
        if status == "success":
            Result.objects.create(job=job, remote_filename="out.txt", local_file="x", size=1_000)
    running = Job.objects.create(
        title="still running",
        program="print(1)",
        owner=staff,
        server=server,
        interpreter=python3,
        remote_directory="d",
        remote_filename="job.py",
        status="running",
        submitted_at=now - timedelta(seconds=30),
        started_at=now - timedelta(seconds=10),
    )

    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_site, "chart-staff", "pw")
    page.goto(live_site + "dashboard/")
    expect(page.locator("[data-role=connection]")).to_have_attribute("data-state", "live")
    for name in ("outcomes", "durations", "volume"):
        expect(page.locator(f'canvas[data-chart="{name}"]')).to_be_visible()
    assert page.evaluate(CHART_TOTALS) == {
        "outcomes": {"success": 5, "failure": 2, "cancelled": 1},
        "durations": {"wait": 9, "run": 8},
        "volume": {"logs": 69_800, "results": 5_000},
    }
    assert page.evaluate(
        "Chart.getChart(document.querySelector('canvas[data-chart=volume]')).data.labels"
    ) == ["hpc2", "test sshd"]
    assert page.evaluate(COUNT_ROWS) == [
        ["hpc2", "chart-staff", "cancelled", "1"],
        ["hpc2", "chart-staff", "failure", "1"],
        ["hpc2", "chart-staff", "success", "1"],
        ["test sshd", "chart-staff", "failure", "1"],
        ["test sshd", "chart-staff", "running", "1"],
        ["test sshd", "chart-staff", "success", "4"],
    ]
    if os.environ.get("DRS_SCREENSHOT") == "1":
        shot = Path(__file__).resolve().parent.parent / "docs" / "_static" / "dashboard.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)

    # The running job ends, as the runner ends jobs: the row, then the status broadcast.
    Job.objects.filter(pk=running.pk).update(
        status="success", exit_code=0, finished_at=timezone.now(), stdout_offset=200
    )
    running.refresh_from_db()
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(redis_url.rsplit("/", 1)[0] + "/2")}
    events.status_changed(running)
    page.wait_for_function(f"({CHART_TOTALS})().outcomes.success === 6", timeout=15_000)
    assert page.evaluate(CHART_TOTALS) == {
        "outcomes": {"success": 6, "failure": 2, "cancelled": 1},
        "durations": {"wait": 9, "run": 9},
        "volume": {"logs": 70_000, "results": 5_000},
    }
    # The tables follow too: the running job's row is gone, its success counted.
    page.wait_for_function(f"({COUNT_ROWS})().length === 5", timeout=15_000)
    assert page.evaluate(COUNT_ROWS) == [
        ["hpc2", "chart-staff", "cancelled", "1"],
        ["hpc2", "chart-staff", "failure", "1"],
        ["hpc2", "chart-staff", "success", "1"],
        ["test sshd", "chart-staff", "failure", "1"],
        ["test sshd", "chart-staff", "success", "5"],
    ]


LONG_LOG = 200_000  # rows; the bench opens a job of a million


def _shown(page: Page) -> list[str]:
    """The texts of the log rows in the page, and of those inside the log's viewport."""
    return page.evaluate(
        """() => {
        const log = document.getElementById("drs-log"), box = log.getBoundingClientRect();
        const rows = [...log.querySelectorAll(".drs-row")];
        const inside = rows.filter((r) => {
            const b = r.getBoundingClientRect();
            return b.top >= box.top - 0.5 && b.bottom <= box.bottom + 0.5;
        });
        return [rows.map((r) => r.textContent), inside.map((r) => r.textContent)];
    }"""
    )


@pytest.mark.django_db(transaction=True)
def test_the_page_of_a_long_log_holds_only_the_rows_near_the_viewport(
    live_site, tab: Page, redis_url, settings
):
    page = tab
    from django_remote_submission import events
    from django_remote_submission.conf import redis_channel_layer
    from django_remote_submission.models import Log
    from tests import factories

    user = factories.user("long-log", password="pw")
    python3 = factories.interpreter()
    host = factories.server(None, python3, hostname="long-log.invalid")
    job = factories.job(user, host, python3, title="long log", status="running")
    factories.log_lines(job, LONG_LOG)
    lines = [f"line {i}\n" for i in range(LONG_LOG)]

    log_in(page, live_site, "long-log", "pw")
    page.goto(live_site + f"jobs/{job.pk}/")
    log = page.locator("#drs-log")
    rows = log.locator(".drs-row")
    expect(rows.last).to_have_text(lines[-1])
    expect(page.locator("[data-role=connection]")).to_have_attribute("data-state", "live")
    in_page, visible = _shown(page)
    assert len(in_page) < 500
    assert in_page == lines[-len(in_page) :]  # the tail, in order, nothing else
    assert len(visible) > 10 and visible == lines[-len(visible) :]  # the last line at the bottom

    # The top: the first lines, fetched from the API.
    log.evaluate("el => { el.scrollTop = 0 }")
    expect(rows.first).to_have_text(lines[0])
    in_page, visible = _shown(page)
    assert len(in_page) < 500
    assert in_page == lines[: len(in_page)] and visible == lines[: len(visible)]
    expect(page.locator("[data-role=follow]")).to_be_hidden()

    # The middle: a jump fetches that page by position.
    log.evaluate("el => { el.scrollTop = (el.scrollHeight - el.clientHeight) / 2 }")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#drs-log .drs-row')].some("
        f"r => r.textContent === 'line {LONG_LOG // 2}\\n')"
    )
    in_page, visible = _shown(page)
    first = lines.index(in_page[0])
    assert in_page == lines[first : first + len(in_page)] and len(in_page) < 500
    assert lines[LONG_LOG // 2] in visible

    # Back at the bottom, new rows arrive over the websocket: shown, and followed.
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(redis_url.rsplit("/", 1)[0] + "/2")}

    def arrive(texts: list[str]) -> None:
        stored = Log.objects.bulk_create([Log(job=job, content=text) for text in texts])
        events.logs_stored(job, stored)
        lines.extend(texts)

    log.evaluate("el => { el.scrollTop = el.scrollHeight }")
    expect(rows.last).to_have_text(lines[-1])
    arrive([f"new {i}\n" for i in range(30)])
    expect(rows.last).to_have_text("new 29\n")
    page.wait_for_function(
        "() => { const log = document.getElementById('drs-log'),"
        " last = [...log.querySelectorAll('.drs-row')].pop();"
        " return last.getBoundingClientRect().bottom <= log.getBoundingClientRect().bottom + 0.5; }"
    )
    in_page, visible = _shown(page)
    assert in_page == lines[-len(in_page) :] and visible == lines[-len(visible) :]

    # Scrolled up a little: new rows wait below, behind the "follow" button.
    log.evaluate("el => { el.scrollTop -= 200 }")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    arrive(["later\n"])
    follow = page.locator("[data-role=follow]")
    expect(follow).to_be_visible()
    assert "later\n" not in _shown(page)[1]
    follow.click()
    expect(rows.last).to_have_text("later\n")
    page.wait_for_function(
        "() => { const log = document.getElementById('drs-log');"
        " return log.scrollHeight - log.scrollTop - log.clientHeight < 2; }"
    )
    assert _shown(page)[1][-1] == "later\n"

    # A new run: its rows replace the log on the page.
    Log.objects.filter(job=job).delete()
    Job.objects.filter(pk=job.pk).update(status="submitted")
    job.refresh_from_db()
    events.status_changed(job)
    arrive(["new run\n"])
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_text("new run\n")


@pytest.mark.django_db(transaction=True)
def test_rows_of_many_lines_scroll_by_the_wheel_and_keys_line_by_line(live_site, tab: Page):
    page = tab
    from django_remote_submission.models import Log
    from tests import factories

    user = factories.user("batched", password="pw")
    python3 = factories.interpreter()
    host = factories.server(None, python3, hostname="batched.invalid")
    job = factories.job(user, host, python3, title="batched log", status="success")
    # Output stored in batches: rows of 25 lines each, as a busy job's rows are.
    texts = ["".join(f"row {r} line {i}\n" for i in range(25)) for r in range(3000)]
    Log.objects.bulk_create([Log(job=job, content=text) for text in texts])

    log_in(page, live_site, "batched", "pw")
    page.goto(live_site + f"jobs/{job.pk}/")
    log = page.locator("#drs-log")
    rows = log.locator(".drs-row")
    expect(rows.last).to_have_text(texts[-1])
    in_page, _ = _shown(page)
    assert in_page == texts[-len(in_page) :] and sum(t.count("\n") for t in in_page) < 200
    bottom = "() => { const l = document.getElementById('drs-log'), r = l.lastElementChild"
    bottom += ".querySelector('.drs-row:last-child'); return Math.abs("
    bottom += "r.getBoundingClientRect().bottom - l.getBoundingClientRect().bottom) < 1; }"
    page.wait_for_function(bottom)  # the last line at the bottom of the view

    # The wheel moves the content by its pixels, inside a tall row too.
    box = log.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    last = rows.last
    before = last.bounding_box()
    assert before is not None
    page.mouse.wheel(0, -120)
    page.wait_for_function(
        "(y) => document.querySelector('#drs-log .drs-row:last-child')"
        ".getBoundingClientRect().top > y + 100",
        arg=before["y"],
    )
    after = last.bounding_box()
    assert after is not None and abs(after["y"] - before["y"] - 120) < 2
    expect(page.locator("[data-role=follow]")).to_be_hidden()  # nothing new arrived

    # Home: the first lines; End: the last ones again.
    log.focus()
    page.keyboard.press("Home")
    expect(rows.first).to_have_text(texts[0])
    in_page, _ = _shown(page)
    assert in_page == texts[: len(in_page)]
    page.wait_for_function(  # the first line at the top of the view
        "() => Math.abs(document.querySelector('#drs-log .drs-row').getBoundingClientRect().top"
        " - document.getElementById('drs-log').getBoundingClientRect().top) < 1"
    )
    page.keyboard.press("PageDown")
    page.wait_for_function(
        "() => document.querySelector('#drs-log .drs-row').getBoundingClientRect().top"
        " < document.getElementById('drs-log').getBoundingClientRect().top - 300"
    )
    page.keyboard.press("End")
    expect(rows.last).to_have_text(texts[-1])
    page.wait_for_function(bottom)
