"""Arguments, environment variables and input files reach the job exactly (real sshd)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from django_remote_submission.models import Job

pytestmark = pytest.mark.django_db

# Prints what the program got: its arguments and the named variables.
ECHO = (
    "import json, os, sys\n"
    "names = json.loads(os.environ.get('NAMES', '[]'))\n"
    "print(json.dumps([sys.argv[1:], {k: os.environ[k] for k in names}]))\n"
)

HOSTILE = [
    "two words",
    'it\'s "quoted"',
    "$(touch pwned)",
    "`id`; rm -rf ~ &",
    "line one\nline two",
    "--leading-dash",
    "-n",
    "",
    "émoji ✓ 日本",
    "a=b",
    "*",
    "\\back\\slash",
]


def stdout(job) -> str:
    return "".join(job.logs.filter(stream="stdout").values_list("content", flat=True))


def printed(job) -> list:
    return json.loads(stdout(job))


def test_arguments_and_environment_reach_the_program_exactly(make_job, submit, sshd):
    names = ["SPACE", "QUOTES", "SUBST", "BACKTICK", "NL", "DASH", "N", "EMPTY", "UTF_8", "EQ"]
    env = dict(zip(names, HOSTILE[: len(names)], strict=True))
    env["NAMES"] = json.dumps([*names, "NAMES"])
    job = make_job(ECHO, arguments=HOSTILE, environment=env)
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert printed(job) == [HOSTILE, env]
    assert env["UTF_8"] == "émoji ✓ 日本" and env["SUBST"] == "$(touch pwned)"
    listing = sshd.ssh(sshd.password_user or sshd.key_user, f"ls -A {job.remote_directory}")
    assert listing.stdout == "job.py\n"  # no "pwned": nothing was run by a shell


def test_submit_keywords_replace_the_jobs_own_and_are_kept(make_job, submit):
    job = make_job(ECHO, arguments=["old"], environment={"X": "old"})
    env = {"X": "new value", "NAMES": '["X"]'}
    submit(job, arguments=["--flag", "$HOME"], environment=env)
    job.refresh_from_db()
    assert printed(job) == [["--flag", "$HOME"], {"X": "new value"}]
    assert job.arguments == ["--flag", "$HOME"] and job.environment == env


def test_the_original_positional_call_still_works(make_job, sshd):
    from django_remote_submission.tasks import submit_job_to_server

    job = make_job(ECHO)
    password = sshd.password
    key = None if password else sshd.key_file
    submit_job_to_server(job.pk, password, key, None, 30, 1, None, True)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert printed(job) == [[], {}]


def test_bash_gets_arguments_as_positional_parameters(make_job, submit, bash):
    job = make_job(
        'for a in "$@"; do printf "<%s>\\n" "$a"; done; printf "[%s]\\n" "$MODE"',
        interpreter=bash,
        remote_filename="job.sh",
        arguments=["a b", "$(id)", "-x"],
        environment={"MODE": "'; echo pwned; '"},
    )
    submit(job)
    job.refresh_from_db()
    assert stdout(job) == "<a b>\n<$(id)>\n<-x>\n['; echo pwned; ']\n"


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"1A": "x"}, "'1A' is not a valid variable name"),
        ({"A-B": "x"}, "'A-B' is not a valid variable name"),
        ({"A B": "x"}, "'A B' is not a valid variable name"),
        ({"": "x"}, "'' is not a valid variable name"),
        ({"DRS_RUN_ID": "x"}, "'DRS_RUN_ID' is reserved"),
        ({"A": "nul\0"}, "The value of A contains a NUL character"),
    ],
)
def test_invalid_environment_fails_the_submission_with_the_reason(
    make_job, submit, environment, message
):
    job = make_job(ECHO)
    submit(job, environment=environment)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith(f"Invalid submission: {message}")
    assert job.environment == {}


def test_invalid_environment_is_refused_by_the_model(make_job):
    from django.core.exceptions import ValidationError

    job = make_job(ECHO, environment={"OK": "1", "not ok": "2"})
    with pytest.raises(ValidationError) as info:
        job.full_clean()
    assert info.value.message_dict == {
        "environment": [
            "'not ok' is not a valid variable name (letters, digits and _, not starting with a "
            "digit)."
        ]
    }


def test_arguments_over_the_limit_are_refused(make_job, submit, settings):
    settings.DRS = {"ARGUMENTS_MAX_BYTES": 10}
    job = make_job(ECHO)
    submit(job, arguments=["12345", "6789"])
    job.refresh_from_db()
    assert job.error == (
        "Invalid submission: The arguments take 11 bytes, over the limit of 10 "
        "(DRS['ARGUMENTS_MAX_BYTES'])."
    )


# --- input files --------------------------------------------------------------------------


def add(job, path: str, data: bytes):
    from django.core.files.base import ContentFile

    from django_remote_submission import services

    return services.add_input(job, job.owner, path, ContentFile(data, name="upload"))


def results(job) -> dict[str, bytes]:
    out = {}
    for r in job.results.all():
        with r.local_file.open("rb") as f:
            out[r.remote_filename] = f.read()
    return out


BINARY = bytes(range(256)) * 64 + b"\r\n\0\xff" + "é".encode()

READ_INPUTS = (
    "import hashlib, sys\n"
    "for name in sys.argv[1:]:\n"
    "    data = open(name, 'rb').read()\n"
    "    print(name, len(data), hashlib.sha256(data).hexdigest())\n"
)


def test_inputs_arrive_byte_exact_also_in_subdirectories(make_job, submit):
    import hashlib

    job = make_job(READ_INPUTS, arguments=["data.bin", "sub/deeper/x.csv"])
    row = add(job, "data.bin", BINARY)
    add(job, "./sub//deeper/x.csv", b"a,b\n1,2\n")
    assert row.size == len(BINARY) and row.sha256 == hashlib.sha256(BINARY).hexdigest()
    assert sorted(job.inputs.values_list("path", flat=True)) == ["data.bin", "sub/deeper/x.csv"]
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    csv = b"a,b\n1,2\n"
    assert stdout(job) == (
        f"data.bin {len(BINARY)} {hashlib.sha256(BINARY).hexdigest()}\n"
        f"sub/deeper/x.csv {len(csv)} {hashlib.sha256(csv).hexdigest()}\n"
    )
    assert results(job) == {}  # unchanged inputs are not results


def test_an_input_the_job_modifies_comes_back_as_a_result(make_job, submit):
    job = make_job(
        "open('notes.txt', 'a').write('+job')\nopen('new.txt', 'w').write('n')\n"
        "open('same.txt').read()\n"
    )
    add(job, "notes.txt", b"given")
    add(job, "same.txt", b"untouched")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert results(job) == {"notes.txt": b"given+job", "new.txt": b"n"}


def test_inputs_are_staged_again_on_resubmit(make_job, submit):
    job = make_job("import os\nprint(open('in.txt').read())\nos.remove('in.txt')")
    add(job, "in.txt", b"again")
    sent = {"server": job.server.title, "kind": "input"}
    before = REGISTRY.get_sample_value("drs_transferred_bytes_total", sent) or 0
    submit(job)
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    assert stdout(job) == "again\n"
    # Each run sent the input (the metric ``drs_transferred_bytes_total{kind="input"}``).
    assert REGISTRY.get_sample_value("drs_transferred_bytes_total", sent) == before + 2 * 5


@pytest.mark.parametrize(
    "path, message",
    [
        ("../x", "'../x': '..' would leave the job's directory."),
        ("a/../../x", "'a/../../x': '..' would leave the job's directory."),
        ("/etc/passwd", "'/etc/passwd': an input's name must be relative to the job's directory."),
        ("~/x", "'~/x': an input's name must be relative to the job's directory."),
        ("a\nb", "'a\\nb': the name contains control characters."),
        ("./", "'./' names no file."),
        ("job.py", "'job.py' is the job's program file; give the input another name."),
    ],
)
def test_names_that_leave_the_directory_are_refused(make_job, path, message):
    from django_remote_submission.inputs import InputRefused

    job = make_job("print(1)")
    with pytest.raises(InputRefused) as info:
        add(job, path, b"x")
    assert (info.value.field, str(info.value)) == ("path", message)
    assert not job.inputs.exists()


def test_an_input_over_the_limit_is_refused(make_job, settings):
    from django_remote_submission.inputs import InputRefused

    settings.DRS = {"INPUT_MAX_BYTES": 1024, "INPUTS_MAX_BYTES": 1536}
    job = make_job("print(1)")
    with pytest.raises(InputRefused) as info:
        add(job, "big.bin", b"x" * 1025)
    assert (info.value.field, str(info.value)) == (
        "file",
        "The file is 1025 bytes, over the limit of 1024 bytes per input (DRS['INPUT_MAX_BYTES']).",
    )
    add(job, "a.bin", b"x" * 1000)
    with pytest.raises(InputRefused) as info:
        add(job, "b.bin", b"x" * 1000)
    assert str(info.value) == (
        "The job's inputs would take 2.0 KiB, over the limit of 1.5 KiB (DRS['INPUTS_MAX_BYTES'])."
    )
    assert list(job.inputs.values_list("path", flat=True)) == ["a.bin"]


def test_resubmit_keeps_arguments_environment_and_inputs(
    make_job, owner, sshd, celery_app, eager, django_capture_on_commit_callbacks
):
    from django_remote_submission import services

    if sshd.password is None:
        pytest.skip("logs in with the password user's password")
    env = {"X": "a b", "NAMES": '["X"]'}
    job = make_job(ECHO + "print(open('in.txt').read())\n", arguments=["-v", "$x"], environment=env)
    add(job, "in.txt", b"given")
    for again in (services.submit, services.resubmit):
        with django_capture_on_commit_callbacks(execute=True):
            again(job, owner, password=sshd.password)
        job.refresh_from_db()
        assert job.status == Job.STATUS.success, job.error
        assert stdout(job) == json.dumps([["-v", "$x"], {"X": "a b"}]) + "\ngiven\n"


def test_environment_values_are_not_in_the_task_repr():
    from celery import Task

    from django_remote_submission.tasks import submit_job_to_server

    sent = {}

    class Capture(Exception):
        pass

    def fake_send(self, args, kwargs, **options):
        sent.update(kwargs=kwargs, options=options)
        raise Capture

    original = Task.apply_async
    Task.apply_async = fake_send
    try:
        with pytest.raises(Capture):
            submit_job_to_server.delay(1, environment={"API_KEY": "s3cret"}, arguments=["-v"])
    finally:
        Task.apply_async = original
    assert sent["kwargs"]["environment"] == {"API_KEY": "s3cret"}  # the worker gets it
    shown = sent["options"]["kwargsrepr"]
    assert "s3cret" not in shown
    assert "'environment': {'API_KEY': '********'}" in shown and "'arguments': ['-v']" in shown


def test_copy_job_to_server_writes_the_inputs_too(make_job, sshd):
    from django_remote_submission.tasks import copy_job_to_server

    job = make_job("print(1)")
    add(job, "sub/in.bin", BINARY)
    kwargs = (
        {"password": sshd.password} if sshd.password else {"public_key_filename": sshd.key_file}
    )
    copy_job_to_server(job.pk, **kwargs)
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    user = sshd.password_user or sshd.key_user
    listed = sshd.ssh(
        user, f"cd {job.remote_directory} && find . -type f | sort && sha256sum sub/in.bin"
    )
    import hashlib

    assert listed.stdout == (
        f"./job.py\n./sub/in.bin\n{hashlib.sha256(BINARY).hexdigest()}  sub/in.bin\n"
    )


def test_an_input_whose_stored_file_is_gone_fails_the_job_with_the_reason(make_job, submit):
    job = make_job("print(1)")
    row = add(job, "gone.csv", b"1")
    row.file.storage.delete(row.file.name)
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error == (
        "The stored file of the input 'gone.csv' cannot be read: No such file or directory."
    )


def test_an_input_where_the_host_has_a_directory_fails_the_job_with_the_reason(
    make_job, submit, sshd
):
    job = make_job("print(1)")
    add(job, "data", b"1")
    user = sshd.password_user or sshd.key_user
    sshd.ssh(user, f"mkdir -p {job.remote_directory}/data/inside")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith(
        f"Cannot write the input 'data' in the remote directory {job.remote_directory!r}: "
    )
