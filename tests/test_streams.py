"""A run's output stream ends only after the last byte its job wrote: short jobs, many at a
time against the real sshd, every one's stdout and stderr read whole from the launch stream.

(``tail -F`` once lost the last write of a few percent of such jobs, 32 at a time: after the
job's end it handles one read of inotify events, which events of the run directory could fill.
300 jobs show it nearly every time.)
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_remote_submission.connections import connect
from django_remote_submission.launchers.base import Spec
from django_remote_submission.launchers.direct import DirectLauncher
from django_remote_submission.models import Server
from django_remote_submission.remote import Credentials

JOBS, AT_ONCE = 300, 32


def test_short_jobs_in_parallel_stream_every_byte(sshd):
    if sshd.password is None:
        pytest.skip("needs the password user (root)")
    server = Server(hostname=sshd.host, port=sshd.port, host_key=sshd.host_key)
    creds = Credentials(sshd.password_user, password=sshd.password)

    def run(_) -> tuple[bytes, bytes, bytes, bytes, int | None]:
        token = uuid.uuid4().hex
        directory = f"{sshd.base_dir_pw}/stream-{token}"
        program = f"import sys\nprint('{token}')\nprint('{token[::-1]}', file=sys.stderr)\n"
        with connect(server, creds) as transport:
            launcher = DirectLauncher(transport)
            launched, proc = launcher.launch(
                Spec(
                    directory,
                    "job.py",
                    program.encode(),
                    f"{directory}/run",
                    ["/usr/bin/python3", "-u"],
                )
            )
            read = {"stdout": b"", "stderr": b""}
            while not proc.done:
                for stream, data in proc.read(1.0):
                    read[stream] += data
            code = launcher.exit_code(launched.run_dir, proc)
            proc.close()
        wanted = (f"{token}\n".encode(), f"{token[::-1]}\n".encode())
        return read["stdout"], read["stderr"], *wanted, code

    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs = list(pool.map(run, range(JOBS)))
    incomplete = [r for r in runs if (r[0], r[1], r[4]) != (r[2], r[3], 0)]
    assert incomplete == []


# Bursts of lines printed one write at a time, with pauses, on both streams.
BURSTS = (
    "import sys, time\n"
    "for burst in range(3):\n"
    "    for i in range(4000):\n"
    "        print(f'out {burst} {i:05d}')\n"
    "        if i % 1000 == 0:\n"
    "            print(f'err {burst} {i:05d}', file=sys.stderr)\n"
    "    time.sleep(0.2)\n"
)


@pytest.mark.parametrize("perl", [True, False], ids=["perl pump", "dd without perl"])
def test_a_stream_is_exact_through_the_pump_and_without_perl(sshd, monkeypatch, perl):
    """The pump that paces the stream (perl), and dd where the host has no perl (a host
    without perl cannot be had here: the script is told to look for another name)."""
    from django_remote_submission.launchers import direct

    if sshd.password is None:
        pytest.skip("needs the password user (root)")
    if not perl:
        missing = direct.STREAM.replace("command -v perl ", "command -v drs-no-perl ")
        assert missing != direct.STREAM
        monkeypatch.setattr(direct, "STREAM", missing)
    server = Server(hostname=sshd.host, port=sshd.port, host_key=sshd.host_key)
    directory = f"{sshd.base_dir_pw}/pump-{uuid.uuid4().hex}"
    with connect(server, Credentials(sshd.password_user, password=sshd.password)) as transport:
        launcher = DirectLauncher(transport)
        spec = Spec(directory, "job.py", BURSTS.encode(), f"{directory}/run", ["python3", "-u"])
        launched, proc = launcher.launch(spec)
        read = {"stdout": bytearray(), "stderr": bytearray()}
        while not proc.done:
            for stream, data in proc.read(1.0):
                read[stream] += data
        assert launcher.exit_code(launched.run_dir, proc) == 0
        proc.close()
    burst = range(3)
    assert read["stdout"].decode() == "".join(
        f"out {b} {i:05d}\n" for b in burst for i in range(4000)
    )
    assert read["stderr"].decode() == "".join(
        f"err {b} {i:05d}\n" for b in burst for i in range(0, 4000, 1000)
    )
