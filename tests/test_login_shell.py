"""A login shell that talks on start-up (``echo`` in ``~/.bashrc``, as many clusters' do)
changes nothing: launch, output, results, streaming again and stopping all stay exact."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from django_remote_submission import runner
from django_remote_submission.launchers.direct import DirectLauncher
from django_remote_submission.models import Job, Server
from django_remote_submission.remote import Credentials, RemoteError, Target
from django_remote_submission.remote.ssh import SSHTransport
from django_remote_submission.tasks import copy_job_to_server
from tests.conftest import unavailable
from tests.services import _edit_authorized_keys, _ensure_user, start_sshd

pytestmark = pytest.mark.django_db

USER = "drs_chatty"
BASHRC = "echo hello from bashrc\necho and to stderr from bashrc >&2\nprintf 'no newline'\n"


# The user's ~/.bashrc runs the file that this session's sshd names (SetEnv): test sessions
# running at once on one machine share the account, not what its shell prints.
SOURCE_SESSION_RC = 'if [ -n "$DRS_TEST_RC" ] && [ -r "$DRS_TEST_RC" ]; then . "$DRS_TEST_RC"; fi\n'


@pytest.fixture(scope="module")
def chatty():
    """An sshd that lets in a user whose ~/.bashrc prints on both streams: ``(sshd, home,
    rc)``; write ``rc`` to change what it prints."""
    if os.geteuid() != 0:
        unavailable("creating the chatty login user needs root")
    _ensure_user(USER, secrets.token_urlsafe(18))
    home = pwd.getpwnam(USER).pw_dir
    with open(os.path.join(home, ".bashrc"), "w") as f:
        f.write(SOURCE_SESSION_RC)
    folder = Path(tempfile.mkdtemp(prefix="drs-chatty-"))  # in /tmp: the user can read it
    folder.chmod(0o755)
    rc = folder / "bashrc"
    rc.write_text(BASHRC)
    rc.chmod(0o644)
    server = start_sshd(extra=(f"AllowUsers {USER}", f"SetEnv DRS_TEST_RC={rc}"))
    with open(server.key_file + ".pub") as f:
        pub = f.read().strip()
    _edit_authorized_keys(USER, pub, add=True)
    yield server, home, rc
    _edit_authorized_keys(USER, pub, add=False)
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def job(chatty, python3, owner):
    sshd, _home, _rc = chatty
    server = Server.objects.create(
        title="chatty",
        hostname=sshd.host,
        port=sshd.port,
        host_key=sshd.host_key,
        username=USER,
        private_key=sshd.key_text,
    )
    server.interpreters.set([python3])

    def make(program: str) -> Job:
        return Job.objects.create(
            title="chatty",
            program=program,
            owner=owner,
            server=server,
            interpreter=python3,
            remote_directory=f"chatty-{uuid.uuid4().hex[:8]}",
            remote_filename="job.py",
        )

    return make


def text(job: Job, stream: str) -> str:
    rows = job.logs.filter(stream=stream).order_by("id").values_list("content", flat=True)
    return "".join(rows)


def test_the_bashrc_talks_on_both_streams(chatty):
    sshd, _home, _rc = chatty
    said = sshd.ssh(USER, "echo command")
    assert said.stdout == "hello from bashrc\nno newlinecommand\n"
    assert said.stderr == "and to stderr from bashrc\n"


def test_output_and_results_are_exactly_the_program_s(job):
    j = job(
        "import sys\nprint('out line')\nprint('err line', file=sys.stderr)\n"
        "open('r.bin', 'wb').write(b'\\x00result\\n')\n"
    )
    runner.submit(j.pk)
    j.refresh_from_db()
    assert j.status == Job.STATUS.success, j.error
    assert text(j, "stdout") == "out line\n"
    assert text(j, "stderr") == "err line\n"
    assert text(j, "system") == ""
    (result,) = j.results.all()
    with result.local_file.open("rb") as f:
        assert f.read() == b"\x00result\n"


def test_streaming_again_from_offsets_is_exact(job, chatty):
    sshd, _home, _rc = chatty
    j = job("print('one')\nprint('two')\n")
    runner.submit(j.pk)
    j.refresh_from_db()
    target = Target(sshd.host, sshd.port, sshd.host_key)
    with SSHTransport.connect(target, Credentials(USER, key_text=sshd.key_text)) as t:
        done = DirectLauncher(t).stream(j.run_dir, 4, 0).wait(timeout=30)
    assert (done.exit_code, done.stdout, done.stderr) == (0, b"two\n", b"")


def test_copy_job_to_server_reports_the_directory(job, chatty):
    _sshd, home, _rc = chatty
    j = job("print(1)")
    copy_job_to_server(j.pk)
    j.refresh_from_db()
    assert j.status == Job.STATUS.success, j.error
    assert text(j, "stdout") == (
        f"job.py successfully copied to 127.0.0.1:{home}/{j.remote_directory}\n"
    )


def test_timeout_stops_the_job(job):
    j = job("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    runner.submit(j.pk, timeout=2)
    j.refresh_from_db()
    assert j.status == Job.STATUS.failure
    assert j.error == "Timed out after 2 s; its processes were stopped."
    assert text(j, "stdout") == "started\n"


def test_a_login_shell_that_exits_is_reported(job, chatty):
    _sshd, _home, rc = chatty
    rc.write_text("echo closing; exit 7\n")
    try:
        j = job("print(1)")
        runner.submit(j.pk)
        j.refresh_from_db()
        assert j.status == Job.STATUS.failure
        assert j.error == (
            "The login shell on 127.0.0.1 exited (status 7) before running the command: closing"
        )
    finally:
        rc.write_text(BASHRC)


def test_a_login_shell_that_never_stops_talking_is_refused(chatty):
    sshd, _home, rc = chatty
    rc.write_text("head -c 200000 /dev/zero | tr '\\0' x\n")
    try:
        target = Target(sshd.host, sshd.port, sshd.host_key)
        with SSHTransport.connect(target, Credentials(USER, key_text=sshd.key_text)) as t:
            with pytest.raises(RemoteError, match="printed more than 65536 bytes before"):
                t.run(["true"], timeout=30)
    finally:
        rc.write_text(BASHRC)
