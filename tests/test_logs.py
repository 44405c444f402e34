"""Every byte of a job's output arrives, in order, per stream, under each log policy."""

from __future__ import annotations

import hashlib
import resource
import time

import pytest

from django_remote_submission.models import Job
from django_remote_submission.tasks import LogPolicy

pytestmark = pytest.mark.django_db


def output(job, stream="stdout") -> str:
    return "".join(job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True))


def test_million_lines_stored_exactly_in_few_rows(make_job, submit):
    job = make_job("import sys\nsys.stdout.write(''.join(f'line {i}\\n' for i in range(1000000)))")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    text = output(job)
    expected = "".join(f"line {i}\n" for i in range(1000000))
    assert (
        hashlib.sha256(text.encode()).hexdigest() == hashlib.sha256(expected.encode()).hexdigest()
    )
    assert job.logs.count() < 200  # batched: many lines per row
    assert job.stdout_offset == len(expected.encode())


def test_multibyte_utf8_split_across_reads_is_exact(make_job, submit):
    line = "é中🙂" * 30 + "\n"
    job = make_job(
        "import sys, time\n"
        f"data = ({line!r} * 20000).encode()\n"
        "out = sys.stdout.buffer\n"
        "for i in range(0, 4004, 7):\n"  # odd-sized writes split characters between reads
        "    out.write(data[i:i + 7]); out.flush(); time.sleep(0.001)\n"
        "out.write(data[4004:]); out.flush()\n"
    )
    submit(job)
    job.refresh_from_db()
    assert output(job) == line * 20000
    assert "\ufffd" not in output(job)


def test_invalid_bytes_are_replaced_not_fatal(make_job, submit):
    job = make_job("import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n\\x80')")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert output(job) == "ok \ufffd\ufffd end\n\ufffd"


@pytest.mark.postgres
def test_nul_bytes_become_replacement_characters_on_every_database(make_job, submit):
    # PostgreSQL's text columns refuse NUL; every database stores U+FFFD in its place, and
    # the byte offsets still count the program's own bytes.
    job = make_job("import sys\nsys.stdout.buffer.write(b'a\\x00b\\n\\x00\\x00\\n')")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert output(job) == "a\ufffdb\n\ufffd\ufffd\n"
    assert job.stdout_offset == 7


@pytest.mark.postgres
def test_nul_bytes_under_log_total(make_job, submit):
    job = make_job("import sys\nsys.stdout.buffer.write(b'x\\x00y')")
    submit(job, log_policy=LogPolicy.LOG_TOTAL)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert output(job) == "x\ufffdy"


def test_stdout_and_stderr_are_kept_apart(make_job, submit):
    job = make_job(
        "import sys\nfor i in range(500):\n"
        "    print(i, flush=True); print(-i, file=sys.stderr, flush=True)"
    )
    submit(job)
    job.refresh_from_db()
    assert output(job, "stdout") == "".join(f"{i}\n" for i in range(500))
    assert output(job, "stderr") == "".join(f"{-i}\n" for i in range(500))


def test_output_of_a_child_after_the_interpreter_exits_is_kept(make_job, submit):
    job = make_job(
        "import subprocess\nprint('parent', flush=True)\n"
        "subprocess.Popen(['sh', '-c', 'sleep 0.5; echo late child'])\n"
    )
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert output(job) == "parent\nlate child\n"


def test_live_lines_apart_in_time_are_separate_rows(make_job, submit):
    job = make_job(
        "import time\nfor i in range(5):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.2)\n"
    )
    submit(job, log_policy=LogPolicy.LOG_LIVE)
    rows = list(job.logs.filter(stream="stdout").order_by("id"))
    assert [r.content for r in rows] == [f"tick {i}\n" for i in range(5)]
    times = [r.time for r in rows]
    assert times == sorted(times) and len(set(times)) == 5
    assert [r.offset for r in rows] == [7 * i for i in range(5)]


def test_partial_last_line_is_stored_at_the_end(make_job, submit):
    job = make_job("import sys\nsys.stdout.write('a\\nno newline')")
    submit(job)
    assert output(job) == "a\nno newline"


def test_log_total_stores_one_row_per_stream(make_job, submit):
    job = make_job(
        "import sys, time\nfor i in range(3):\n"
        "    print(i, flush=True); print('e', i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    submit(job, log_policy=LogPolicy.LOG_TOTAL)
    assert list(job.logs.order_by("stream").values_list("stream", "content")) == [
        ("stderr", "e 0\ne 1\ne 2\n"),
        ("stdout", "0\n1\n2\n"),
    ]


def test_log_none_stores_nothing(make_job, submit):
    job = make_job("print('secret output')")
    submit(job, log_policy=LogPolicy.LOG_NONE)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert job.logs.count() == 0


def test_waiting_on_a_silent_job_uses_no_measurable_cpu(make_job, submit):
    job = make_job("import time\ntime.sleep(3)")
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    submit(job)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert time.monotonic() - t0 >= 3
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.3, f"{cpu:.3f} s of CPU while the job slept 3 s"


def test_a_partial_line_waiting_for_its_end_uses_no_measurable_cpu(make_job, submit):
    job = make_job(
        "import sys, time\nsys.stdout.write('progress 50%'); sys.stdout.flush()\n"
        "time.sleep(3)\nprint(' done')"
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    submit(job)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert output(job) == "progress 50% done\n"
    assert cpu < 0.3, f"{cpu:.3f} s of CPU while a partial line waited 3 s"


# --- LogWriter alone (no host): what is stored when -------------------------------------------


@pytest.fixture
def bare_job(django_user_model):
    from django_remote_submission.models import Interpreter, Server

    python3 = Interpreter.objects.create(name="python3", path="/usr/bin/python3")
    server = Server.objects.create(title="here", hostname="localhost")
    server.interpreters.add(python3)
    return Job.objects.create(
        title="unit",
        program="",
        owner=django_user_model.objects.create_user("u"),
        server=server,
        interpreter=python3,
        remote_directory="d",
        remote_filename="j.py",
    )


def rows(job) -> list[tuple[str, str, int]]:
    return list(job.logs.order_by("id").values_list("stream", "content", "offset"))


def test_writer_stores_whole_lines_and_keeps_a_partial_line_until_the_end(bare_job, settings):
    from django_remote_submission.logs import LogWriter

    settings.DRS = {**settings.DRS, "LOG_FLUSH_INTERVAL": 0}
    writer = LogWriter(bare_job, LogPolicy.LOG_LIVE)
    writer.feed("stdout", b"one\ntw")
    writer.flush_if_due()
    assert rows(bare_job) == [("stdout", "one\n", 0)]
    writer.feed("stdout", b"o\nthr")
    writer.feed("stderr", "é".encode()[:1])  # half a character
    writer.flush_if_due()
    assert rows(bare_job)[1:] == [("stdout", "two\n", 4)]
    bare_job.refresh_from_db()
    assert (bare_job.stdout_offset, bare_job.stderr_offset) == (8, 0)
    writer.feed("stderr", "é".encode()[1:])
    writer.close()
    assert rows(bare_job)[2:] == [("stdout", "thr", 8), ("stderr", "é", 0)]
    bare_job.refresh_from_db()
    assert (bare_job.stdout_offset, bare_job.stderr_offset) == (11, 2)


def test_writer_rewind_drops_what_is_not_stored_and_resumes_at_the_stored_offsets(bare_job):
    from django_remote_submission.logs import LogWriter

    writer = LogWriter(bare_job, LogPolicy.LOG_LIVE)
    writer.feed("stdout", b"kept\nlost")
    assert writer.rewind() == (5, 0)
    assert rows(bare_job) == [("stdout", "kept\n", 0)]
    again = LogWriter(bare_job, LogPolicy.LOG_LIVE)  # a resumed run starts from the database
    again.feed("stdout", b"lost\n")
    again.close()
    assert "".join(c for _s, c, _o in rows(bare_job)) == "kept\nlost\n"


def test_writer_stops_at_the_log_limit(bare_job, settings):
    from django_remote_submission.logs import LogWriter

    settings.DRS = {**settings.DRS, "LOG_MAX_BYTES": 10}
    writer = LogWriter(bare_job, LogPolicy.LOG_LIVE)
    writer.feed("stdout", b"12345\n")
    writer.feed("stderr", b"abcdefgh\n")
    assert writer.full and writer.dropped
    writer.close()
    assert "".join(c for _s, c, _o in rows(bare_job)) == "12345\nabcd"
    resumed = LogWriter(Job.objects.get(pk=bare_job.pk), LogPolicy.LOG_LIVE)
    assert resumed.full and not resumed.dropped


def test_writer_under_log_total_stores_one_row_per_stream(bare_job):
    from django_remote_submission.logs import LogWriter

    writer = LogWriter(bare_job, LogPolicy.LOG_TOTAL)
    for _ in range(3):
        writer.feed("stdout", b"line\n")
        writer.flush_if_due()
    assert rows(bare_job) == []
    writer.close()
    assert rows(bare_job) == [("stdout", "line\n" * 3, 0)]


def test_writer_under_log_none_stores_nothing_but_counts(bare_job):
    from django_remote_submission.logs import LogWriter

    writer = LogWriter(bare_job, LogPolicy.LOG_NONE)
    writer.feed("stdout", b"abc\n")
    writer.close()
    assert rows(bare_job) == []
