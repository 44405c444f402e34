"""The job page of a job whose log holds a million rows, in Debian's chromium (Playwright).

The rows are bulk-inserted into the bench's database (``tests.factories.log_lines``: one line
each, ``line 0`` to ``line 999999``), the job left ``running``. daphne serves the test
project (``tests.asgi``: the app's pages, its API and websockets, static files) on that
database, migrated for the test project's apps as well, and serves the page once untimed.
For each repetition a fresh browser context logs in, then navigates to the job's page:

- first lines: ``performance.now()`` (from the navigation's start) at the first animation
  frame in which the log's last row shows exactly ``line 999999``;
- memory: the PSS of chromium's processes (all of them: the browser, its GPU, network and
  zygote processes, the renderer; PSS shares each shared page among the processes mapping
  it), their RSS (which counts shared pages in each: an upper bound), and the page's JS heap
  (CDP ``Performance.getMetrics``), once the page is live; the baseline is the PSS with the
  same browser logged in on ``about:blank``, just before;
- rows in the DOM (``.drs-row``) at the tail and after scrolling to the top;
- responsiveness: from setting ``scrollTop = 0`` to the frame showing ``line 0``, then from
  scrolling to the middle to the frame showing ``line 500000``; the longest main-thread task
  from the navigation to then (``longtask`` entries, over 50 ms; 0 when there was none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .harness import ROOT, Bench, Row

LINES = int(os.environ.get("BENCH_PAGE_LINES", 1_000_000))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

LONG_TASKS = """
window.__longest = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__longest = Math.max(window.__longest, entry.duration);
  }
}).observe({ type: "longtask", buffered: true });
"""

# Resolves to performance.now() at the first frame where the condition holds (fails after 30 s).
AT_FRAME = """(condition) => new Promise((resolve, reject) => {
  const until = performance.now() + 30000;
  const check = () => {
    if (eval(condition)) resolve(performance.now());
    else if (performance.now() > until) reject(new Error(`not met in 30 s: ${condition}`));
    else requestAnimationFrame(check);
  };
  check();
})"""
LAST_ROW = (
    f"document.querySelector('#drs-log .drs-row:last-child')?.textContent === 'line {LINES - 1}\\n'"
)
FIRST_ROW = "document.querySelector('#drs-log .drs-row')?.textContent === 'line 0\\n'"
SCROLL_TOP = f"""() => {{
  const t = performance.now();
  document.getElementById("drs-log").scrollTop = 0;
  return ({AT_FRAME})({json.dumps(FIRST_ROW)}).then((at) => at - t);
}}"""
MIDDLE_ROW = (
    "[...document.querySelectorAll('#drs-log .drs-row')]"
    f".some((row) => row.textContent === 'line {LINES // 2}\\n')"
)
SCROLL_MIDDLE = f"""() => {{
  const t = performance.now(), log = document.getElementById("drs-log");
  log.scrollTop = (log.scrollHeight - log.clientHeight) / 2;
  return ({AT_FRAME})({json.dumps(MIDDLE_ROW)}).then((at) => at - t);
}}"""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _chromium_memory_mb() -> tuple[float, float, int]:
    """PSS and RSS (MB) of the chromium processes this process started (through Playwright's
    driver), and how many: PSS shares each shared page among the processes mapping it, RSS
    counts it in each."""
    pss = rss = processes = 0
    for pid in _descendants(os.getpid()):
        try:
            if "chromium" not in Path(f"/proc/{pid}/cmdline").read_text():
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
            processes += 1
        except OSError:
            continue
    return pss / 1024, rss / 1024, processes


def _seed(b: Bench):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import MD5PasswordHasher

    from django_remote_submission.models import Job
    from tests import factories

    # The site runs the test settings, whose only password hasher is MD5.
    password = MD5PasswordHasher().encode("page-pw", "benchpage")
    user = get_user_model().objects.create(username="page-viewer", password=password)
    job = Job.objects.create(
        title="a million lines",
        program="print(1)",
        owner=user,
        server=b.server,
        interpreter=b.python3,
        remote_directory="page",
        remote_filename="job.py",
        status="running",
    )
    started = time.perf_counter()
    factories.log_lines(job, LINES)
    return job, time.perf_counter() - started


def job_page(b: Bench) -> list[Row]:
    """The job page of a 1M-line job in chromium: first lines, memory, DOM, responsiveness."""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    from tests.services import start_daphne

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    job, seeding = _seed(b)
    env = {
        "DRS_TEST_TMP": os.path.join(b.tmp, "site"),
        "DRS_TEST_DB": settings.DATABASES["default"]["NAME"],
        "DRS_CHANNEL_REDIS": b.redis.url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    os.makedirs(env["DRS_TEST_TMP"], exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v", "0", "--skip-checks"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    site = start_daphne(env)
    first: list[float] = []
    pss: list[float] = []
    rss: list[float] = []
    heap: list[float] = []
    scroll: list[float] = []
    middle: list[float] = []
    longest: list[float] = []
    tail_rows: list[int] = []
    top_rows: list[int] = []
    blank: list[float] = []  # PSS with the page on about:blank instead
    processes = 0
    exact = True
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                warm = browser.new_page()  # the site's first answers (imports, templates)
                warm.goto(site.url + f"jobs/{job.pk}/")
                warm.close()
                for _ in range(b.reps):
                    context = browser.new_context()
                    context.set_default_timeout(30_000)
                    page = context.new_page()
                    page.goto(site.url + "login/")
                    page.fill("input[name=username]", "page-viewer")
                    page.fill("input[name=password]", "page-pw")
                    with page.expect_navigation():
                        page.click("button[type=submit]")
                    if "/login/" in page.url:
                        raise RuntimeError("the login failed")
                    page.add_init_script(LONG_TASKS)
                    page.goto("about:blank")
                    blank.append(_chromium_memory_mb()[0])
                    page.goto(site.url + f"jobs/{job.pk}/", wait_until="commit")
                    first.append(page.evaluate(AT_FRAME, LAST_ROW) / 1000)
                    texts = page.locator("#drs-log .drs-row").all_text_contents()
                    exact &= texts == [f"line {i}\n" for i in range(LINES - len(texts), LINES)]
                    tail_rows.append(len(texts))
                    page.wait_for_selector("[data-role=connection][data-state=live]")
                    cdp = context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    metrics = {
                        m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                    }
                    heap.append(metrics["JSHeapUsedSize"] / 2**20)
                    pss_mb, rss_mb, processes = _chromium_memory_mb()
                    pss.append(pss_mb)
                    rss.append(rss_mb)
                    scroll.append(page.evaluate(SCROLL_TOP) / 1000)
                    texts = page.locator("#drs-log .drs-row").all_text_contents()
                    exact &= texts == [f"line {i}\n" for i in range(len(texts))]
                    top_rows.append(len(texts))
                    middle.append(page.evaluate(SCROLL_MIDDLE) / 1000)
                    longest.append(page.evaluate("window.__longest") / 1000)
                    context.close()
            finally:
                browser.close()
    finally:
        site.stop()
    work = "job page of a 1M-line job in chromium"
    return [
        Row(
            f"{work}: navigation -> last lines painted",
            "s",
            first,
            None,
            "first lines <= 1 s",
            limit=1.0,
            ok=exact,
            notes=f"exact: {'yes' if exact else 'NO'}; the job is running (websocket live); "
            f"seeding {LINES:,} rows took {seeding:.1f} s",
        ),
        Row(
            "  browser memory: PSS of all chromium processes",
            "MB",
            pss,
            blank,
            "memory <= 300 MB",
            limit=300,
            notes=f"baseline: the same browser, logged in, on about:blank; {processes} "
            f"processes; their RSS (shared pages counted in each): "
            f"{min(rss):.0f} - {max(rss):.0f} MB; the page's JS heap: "
            f"{min(heap):.1f} - {max(heap):.1f} MB",
        ),
        Row(
            "  .drs-row elements in the DOM at the tail",
            "rows",
            [float(n) for n in tail_rows],
            None,
            "< 500 (windowed)",
            limit=499,
            notes=f"after scrolling to the top: {', '.join(str(n) for n in top_rows)}",
        ),
        Row(
            "  scroll to the top -> first lines painted",
            "s",
            scroll,
            None,
            "<= 100 ms",
            limit=0.1,
            notes="a page fetched by position from api/logs/window/",
        ),
        Row(
            "  then to the middle -> line 500000 painted",
            "s",
            middle,
            None,
            "<= 500 ms",
            limit=0.5,
            notes="its page by position: an offset of 500,000 in the (job, id) index",
        ),
        Row(
            "  longest main-thread task, navigation to the last scroll's end",
            "s",
            longest,
            None,
            "<= 50 ms",
            limit=0.05,
            notes="longtask entries (0: none over 50 ms)",
        ),
    ]
