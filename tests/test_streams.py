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
