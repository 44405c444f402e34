"""Result previews on the job page (``previews``, ``views.result_inline``): each type, an SVG
whose script must not run, and a 100 MB text file previewed within its bound."""

from __future__ import annotations

import base64
import hashlib
import html

import pytest
from django.core.files.base import ContentFile, File

from django_remote_submission import previews
from django_remote_submission.models import Result

pytestmark = pytest.mark.django_db

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>fetch('/steal?'+document.cookie)</script><rect width='10' height='10'/></svg>"
)


@pytest.fixture
def job(make_job):
    return make_job("print(1)", status="success")


def add(job, name: str, data: bytes) -> Result:
    result = Result(job=job, remote_filename=name, size=len(data))
    result.local_file.save(name, ContentFile(data), save=False)
    result.sha256 = hashlib.sha256(data).hexdigest()
    result.save()
    return result


def page(client, job) -> str:
    client.force_login(job.owner)
    response = client.get(f"/jobs/{job.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_an_image_is_drawn_from_a_url_that_serves_only_its_own_type(client, job):
    png = add(job, "plot.png", PNG)
    shown = page(client, job)
    url = f"/jobs/{job.pk}/results/{png.pk}/inline/"
    assert f'<img src="{url}" alt="plot.png"' in shown
    response = client.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == previews.IMAGE_CSP


def test_an_svg_is_served_with_a_policy_that_runs_no_script(client, job):
    svg = add(job, "figure.svg", SVG)
    page(client, job)
    response = client.get(f"/jobs/{job.pk}/results/{svg.pk}/inline/")
    assert response["Content-Type"] == "image/svg+xml"
    policy = [p.strip() for p in response["Content-Security-Policy"].split(";")]
    assert "default-src 'none'" in policy  # no script source at all
    assert "sandbox" in policy  # opened on its own, it is a sandboxed document
    assert "script-src" not in response["Content-Security-Policy"]


def test_csv_and_tsv_show_their_first_rows_as_a_table(client, job, settings):
    rows = ["x,y"] + [f"{i},{i * i}" for i in range(30)]
    add(job, "data.csv", ("\n".join(rows) + "\n").encode())
    add(job, "data.tsv", b"a\tb\n1\t<b>2</b>\n")
    shown = page(client, job)
    table = previews.of(job.results.get(remote_filename="data.csv"))
    assert table.kind == "table"
    assert table.rows == [["x", "y"]] + [[str(i), str(i * i)] for i in range(19)]
    assert table.truncated
    assert "<tr><th>x</th><th>y</th></tr><tr><td>0</td><td>0</td></tr>" in shown
    tsv = previews.of(job.results.get(remote_filename="data.tsv"))
    assert (tsv.rows, tsv.truncated) == ([["a", "b"], ["1", "<b>2</b>"]], False)
    assert "<td>&lt;b&gt;2&lt;/b&gt;</td>" in shown


def test_json_is_pretty_printed(client, job):
    add(job, "out.json", b'{"energy": [1.5, 2], "ok": true}')
    shown = page(client, job)
    pretty = '{\n  "energy": [\n    1.5,\n    2\n  ],\n  "ok": true\n}'
    assert f'<pre class="drs-preview-text">{html.escape(pretty)}</pre>' in shown


def test_text_is_shown_escaped(client, job):
    add(job, "notes.txt", b"<script>alert(1)</script>\nline 2\n")
    shown = page(client, job)
    assert (
        '<pre class="drs-preview-text">&lt;script&gt;alert(1)&lt;/script&gt;\nline 2\n</pre>'
        in shown
    )
    assert "<script>alert(1)" not in shown


def test_a_100_mb_text_file_is_previewed_within_its_bound(client, job, tmp_path, settings):
    line = b"0123456789abcdef\n"
    path = tmp_path / "big.log"
    with open(path, "wb") as f:
        chunk = line * (1 << 16)
        for _ in range(100 * (1 << 20) // len(chunk) + 1):
            f.write(chunk)
    size = path.stat().st_size
    assert size >= 100 << 20
    result = Result(job=job, remote_filename="big.log", size=size)
    with open(path, "rb") as f:
        result.local_file.save("big.log", File(f), save=False)
    result.save()
    preview = previews.of(result)
    expected = (line * (65536 // len(line) + 1))[:65536].decode()
    assert (preview.kind, preview.text, preview.truncated) == ("text", expected, True)
    shown = page(client, job)
    assert "Only the beginning is shown: download the file for the rest." in shown
    assert len(shown) < 200_000


def test_other_files_show_their_type_and_size(client, job, settings):
    add(job, "model.bin", b"\x00\x01\x02")
    settings.DRS = {**settings.DRS, "PREVIEW_IMAGE_MAX_BYTES": 10}
    big_png = add(job, "huge.png", PNG)
    shown = page(client, job)
    assert "application/octet-stream, 3\xa0bytes: no preview" in shown
    assert previews.of(big_png).kind == "other"
    assert client.get(f"/jobs/{job.pk}/results/{big_png.pk}/inline/").status_code == 404


def test_another_users_images_are_not_served(client, job, django_user_model):
    png = add(job, "plot.png", PNG)
    client.force_login(django_user_model.objects.create_user("mallory"))
    assert client.get(f"/jobs/{job.pk}/results/{png.pk}/inline/").status_code == 404


def test_the_script_of_an_svg_opened_on_its_own_does_not_run_in_chromium(client, job, monkeypatch):
    """The headers of the view, served to Debian's chromium; without them the same SVG runs
    its script (so that this test can fail)."""
    import os

    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, unavailable

    svg = add(job, "figure.svg", b"")
    body = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>fetch('/ran')</script><rect width='10' height='10'/></svg>"
    )
    svg.local_file.save("figure.svg", ContentFile(body))
    page(client, job)
    served = client.get(f"/jobs/{job.pk}/results/{svg.pk}/inline/")
    headers = {k: served[k] for k in ("Content-Type", "Content-Security-Policy")}
    headers["X-Content-Type-Options"] = served["X-Content-Type-Options"]
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ran: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()

            def serve(route):
                url = route.request.url
                if url.endswith("/ran"):
                    ran.append(url)
                    route.fulfill(status=204)
                elif url.endswith("/safe.svg"):
                    route.fulfill(status=200, headers=headers, body=served.content)
                else:  # the control: the same file without the view's headers
                    route.fulfill(status=200, content_type="image/svg+xml", body=body)

            tab.route("http://drs.test/**", serve)
            tab.goto("http://drs.test/safe.svg")
            # Waiting inside Playwright (not in a sleep of this thread): the route handlers
            # run only while a Playwright call is under way.
            with tab.expect_request("http://drs.test/ran", timeout=15_000):
                tab.goto("http://drs.test/unsafe.svg")
        finally:
            browser.close()
    assert ran == ["http://drs.test/ran"]  # the control's only: the safe one ran nothing
