"""Files a job writes come back into storage: new or modified only, patterns, subdirectories."""

from __future__ import annotations

import hashlib

import pytest

from django_remote_submission.models import Job

pytestmark = pytest.mark.django_db


def results(job) -> dict[str, bytes]:
    out = {}
    for r in job.results.all():
        with r.local_file.open("rb") as f:
            out[r.remote_filename] = f.read()
    return out


def notices(job) -> str:
    return "".join(job.logs.filter(stream="system").values_list("content", flat=True))


def test_new_files_and_subdirectories_come_back_but_not_the_script(make_job, submit):
    job = make_job(
        "import os\nopen('a.txt', 'w').write('A')\nos.makedirs('sub/deeper')\n"
        "open('sub/deeper/b.dat', 'wb').write(b'\\x00\\x01B')\n"
    )
    mapping = submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert results(job) == {"a.txt": b"A", "sub/deeper/b.dat": b"\x00\x01B"}
    assert mapping == {r.remote_filename: r.pk for r in job.results.all()}
    r = job.results.get(remote_filename="sub/deeper/b.dat")
    assert r.local_file.name == f"results/{job.uuid}/sub/deeper/b.dat"
    assert r.size == 3 and r.sha256 == hashlib.sha256(b"\x00\x01B").hexdigest()


def test_file_written_in_the_first_milliseconds_is_a_result(make_job, submit):
    job = make_job("open('instant.txt', 'w').write('now')", interpreter=None)
    submit(job)
    assert results(job) == {"instant.txt": b"now"}


def test_unchanged_files_are_not_results_but_modified_ones_are(make_job, submit, sshd):
    job = make_job("open('data.txt', 'w').write('first')\nopen('keep.txt', 'w').write('k')")
    submit(job)
    second = make_job("open('data.txt', 'w').write('second!')", directory=job.remote_directory)
    submit(second)
    assert results(second) == {"data.txt": b"second!"}


def test_store_results_patterns_apply_in_order_with_exclusions(make_job, submit):
    job = make_job(
        "for n in ['a.txt', 'b.txt', 'skip.txt', 'c.log', 'd.csv']:\n    open(n, 'w').write(n)\n"
    )
    submit(job, store_results=["*.txt", "!skip*", "*.csv"])
    assert sorted(results(job)) == ["a.txt", "b.txt", "d.csv"]


def test_empty_patterns_store_nothing(make_job, submit):
    job = make_job("open('a.txt', 'w').write('a')")
    assert submit(job, store_results=[]) == {}
    assert job.results.count() == 0


def test_symlinks_and_unreadable_files_are_skipped_and_said_so(make_job, submit):
    job = make_job(
        "import os\nopen('good.txt', 'w').write('g')\nos.symlink('/etc/passwd', 'escape')\n"
        "os.symlink('good.txt', 'inside')\nopen('secret', 'w').write('s')\nos.chmod('secret', 0)\n"
        "os.mkfifo('pipe')\n"
    )
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert results(job) == {"good.txt": b"g"}
    text = notices(job)
    assert "Skipped result escape: a symbolic link, not a regular file." in text
    assert "Skipped result inside: a symbolic link, not a regular file." in text
    assert "Skipped result pipe: a named pipe, not a regular file." in text
    assert "Skipped result secret: Permission denied." in text or "Skipped result secret" in text


def test_an_unreadable_subdirectory_is_skipped_and_said_so(make_job, submit):
    job = make_job(
        "import os\nos.makedirs('locked/inner')\nopen('locked/inner/x', 'w').write('x')\n"
        "open('ok.txt', 'w').write('ok')\nos.chmod('locked', 0)\n"
    )
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success
    assert results(job) == {"ok.txt": b"ok"}
    assert notices(job) == "Skipped results under './locked': Permission denied.\n"


def test_big_binary_result_is_streamed_with_its_checksum(make_job, submit):
    job = make_job(
        "import random\nr = random.Random(7)\n"
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(40):\n        f.write(r.randbytes(1 << 20))\n"
    )
    submit(job)
    import random

    r = random.Random(7)
    expected = b"".join(r.randbytes(1 << 20) for _ in range(40))
    res = job.results.get()
    assert res.size == len(expected) == 40 << 20
    assert res.sha256 == hashlib.sha256(expected).hexdigest()
    with res.local_file.open("rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == res.sha256


def test_results_of_a_failed_job_are_kept(make_job, submit):
    job = make_job("open('partial.txt', 'w').write('p')\nraise SystemExit(2)")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure and job.exit_code == 2
    assert results(job) == {"partial.txt": b"p"}


# --- the listing parser alone -------------------------------------------------------------------


def test_parse_records_reads_names_with_spaces_newlines_and_bad_utf8():
    from django_remote_submission.results import Entry, parse_records

    data = (
        b"f 5 1.5 1.5 7 a b.txt\0"
        b"d 4096 1.0 1.0 8 sub\0"
        b"f 3 2.0 2.0 9 sub/new\nline\0"
        b"f 1 2.0 2.0 10 bad\xff\0"
        b"l 11 2.0 2.0 11 link\0"
    )
    entries = list(parse_records(data))
    assert entries == [
        Entry("a b.txt", "f", 5),
        Entry("sub", "d", 4096),
        Entry("sub/new\nline", "f", 3),
        Entry("bad\udcff", "f", 1),
        Entry("link", "l", 11),
    ]
    assert [e.shown for e in entries[2:4]] == ["sub/new\\nline", "bad\\xff"]


@pytest.mark.parametrize(
    "data",
    [
        b"f 5 1.5 1.5 7 cut-at-the-lim",  # no terminating NUL: the listing was cut
        b"f five 1 1 1 x\0",  # not a size
        b"f 5 1 1\0",  # too few fields
        b"ff 5 1 1 1 x\0",  # not a type
        b"f 5 1 1 1 \0",  # no name
    ],
)
def test_parse_records_leaves_out_what_is_not_a_whole_record(data):
    from django_remote_submission.results import parse_records

    assert list(parse_records(data)) == []
