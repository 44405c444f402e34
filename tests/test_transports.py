"""The Transport contract (remote/base.py), one set of tests run against both transports: SSH
to the test sshd, and this machine (``remote=False``)."""

from __future__ import annotations

import uuid

import pytest

from django_remote_submission.remote import Credentials, RemoteError, Target, open_transport
from django_remote_submission.remote.base import OutputTooLarge


@pytest.fixture(params=["ssh", "local"])
def transport(request):
    if request.param == "ssh":
        sshd = request.getfixturevalue("sshd")
        target = Target(sshd.host, sshd.port, sshd.host_key)
        t = open_transport(target, Credentials(sshd.key_user, key_text=sshd.key_text))
    else:
        t = open_transport(Target("localhost"), Credentials("me"), remote=False)
    with t:
        yield t


@pytest.fixture
def place(transport) -> str:
    """A fresh directory under the login's home, with a file, a symlink and a FIFO in it."""
    name = f"drs-contract-{uuid.uuid4().hex[:8]}"
    script = 'mkdir "$1" && cd "$1" && printf "a\\0b" > f && ln -s /etc/passwd l && mkfifo p'
    assert transport.run(["sh", "-c", script, "sh", name]).exit_code == 0
    yield name
    transport.run(["rm", "-rf", "--", name])


def test_run_returns_exit_code_and_both_streams_exactly(transport):
    done = transport.run(["sh", "-c", 'printf "out\\n\\0x"; printf err >&2; exit 3'])
    assert (done.exit_code, done.stdout, done.stderr) == (3, b"out\n\0x", b"err")


def test_arguments_reach_the_command_unquoted_and_uninterpreted(transport):
    words = ["$(id)", "a b", "'q'", '"d"', "`x`", "*", "-n", "é", "line\nbreak", ""]
    done = transport.run(["python3", "-c", "import sys; print(sys.argv[1:])", *words])
    assert done.stdout.decode() == f"{words}\n"


def test_stdin_is_sent_then_closed(transport):
    data = bytes(range(256)) * 1000
    assert transport.run(["cat"], stdin=data).stdout == data


def test_start_streams_output_as_it_is_written(transport):
    proc = transport.start(["sh", "-c", "echo one; sleep 0.3; echo two >&2; echo three"])
    got = {"stdout": b"", "stderr": b""}
    try:
        while not proc.done:
            for stream, data in proc.read(5):
                got[stream] += data
    finally:
        proc.close()
    assert got == {"stdout": b"one\nthree\n", "stderr": b"two\n"} and proc.exit_code == 0


def test_output_beyond_the_limit_is_refused(transport):
    with pytest.raises(OutputTooLarge, match="printed more than 1000 bytes"):
        transport.run(["head", "-c", "5000", "/dev/zero"], limit=1000)


def test_a_command_past_its_timeout_is_an_error(transport):
    with pytest.raises(RemoteError, match="did not finish within 0.5 s"):
        transport.run(["sleep", "10"], timeout=0.5)


def test_tick_is_called_while_waiting(transport):
    ticks = []
    transport.run(["sleep", "2.2"], tick=lambda: ticks.append(1))
    assert len(ticks) >= 2


def test_open_streams_a_regular_file_exactly(transport, place):
    with transport.open(f"{place}/f") as f:
        assert f.read() == b"a\0b"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("l", "a symbolic link"), ("p", "not a regular file"), ("missing", "No such file")],
)
def test_open_refuses_what_is_not_a_regular_file(transport, place, name, reason):
    with pytest.raises(OSError, match=reason), transport.open(f"{place}/{name}") as f:
        f.read()


def test_the_optional_hooks_exist_on_every_transport(transport):
    assert transport.pop_new_host_key() == ""  # the key is on record / no SSH at all
    transport.discard()  # nothing to drop on a live connection
