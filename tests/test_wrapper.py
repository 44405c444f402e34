"""2.1.0's ``wrapper`` helpers still import and work, and warn that they are deprecated."""

from __future__ import annotations

import os
import stat
import subprocess
import time
import warnings
from datetime import timedelta

import pytest

from django_remote_submission.remote import HostKeyUnknown
from django_remote_submission.wrapper.local import LocalWrapper
from django_remote_submission.wrapper.remote import RemoteWrapper

pytestmark = pytest.mark.django_db


def wrapper(cls, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(*args)


def authorized_keys(sshd, user) -> list[str]:
    """The user's authorized_keys, less the lines of concurrent test sessions' sshd."""
    text = sshd.run_as(user, "cat ~/.ssh/authorized_keys").stdout
    return [line for line in text.splitlines() if "drs-tests-" not in line]


@pytest.fixture
def rsa_key(tmp_path):
    """An RSA key pair without passphrase (2.1.0's default kind of key)."""
    key = tmp_path / "id_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "drs-wrap", "-f", key],
        check=True,
    )
    return key


@pytest.fixture
def password_user(sshd):
    if not sshd.password_user:
        pytest.skip("needs root for the password account")
    return sshd.password_user


def test_each_wrapper_warns_and_names_its_replacement():
    with pytest.warns(DeprecationWarning) as remote:
        RemoteWrapper(hostname="hpc.example.org", username="ada", port=22)
    with pytest.warns(DeprecationWarning) as local:
        LocalWrapper(hostname="localhost", username="ada")
    assert [str(w.message) for w in (*remote, *local)] == [
        "RemoteWrapper is deprecated: use django_remote_submission.remote.open_transport, and "
        "the tasks copy_key_to_server and delete_key_from_server for keys.",
        "LocalWrapper is deprecated: use "
        "django_remote_submission.remote.open_transport(..., remote=False).",
    ]
    assert {w.filename for w in (*remote, *local)} == {__file__}  # the caller's line


def test_remote_wrapper_files_and_commands_over_ssh(sshd, server, password_user):
    w = wrapper(RemoteWrapper, sshd.host, password_user, sshd.port)
    directory = f"{sshd.base_dir_pw}/wrapped/sub dir"
    with w.connect(password=sshd.password):
        w.chdir(directory)
        with w.open("in.txt", "wt") as f:
            f.write("héllo\n")
        with w.open("in.txt", "a") as f:
            f.write("more\n")
        assert w.open("in.txt").read() == "héllo\nmore\n"
        assert w.open("in.txt", "rb").read() == "héllo\nmore\n".encode()
        (attr,) = w.listdir_attr()
        assert (attr.filename, attr.st_size, stat.S_ISREG(attr.st_mode)) == ("in.txt", 12, True)
        assert abs(attr.st_mtime - time.time()) < 60
        out, err = [], []
        ok = w.exec_command(
            ["sh", "-c", "cat in.txt; echo oops >&2; exit 3"],
            directory,
            stdout_handler=lambda now, text: out.append(text),
            stderr_handler=lambda now, text: err.append(text),
        )
        assert (ok, "".join(out), "".join(err)) == (False, "héllo\nmore\n", "oops\n")
        assert w.exec_command(["test", "-f", "in.txt"], directory) is True
        started = time.monotonic()
        assert w.exec_command(["sleep", "30"], directory, timeout=timedelta(seconds=0.5)) is False
        assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="must be connected"):
        w.listdir_attr()
    assert sshd.run_as(password_user, f"cat '{directory}/in.txt'").stdout == "héllo\nmore\n"


def test_deploy_log_in_with_the_key_delete_then_refused(sshd, server, password_user, rsa_key):
    before = authorized_keys(sshd, password_user)
    public = str(rsa_key) + ".pub"
    w = wrapper(RemoteWrapper, sshd.host, password_user, sshd.port)
    with w.connect(sshd.password, public):
        w.deploy_key_if_it_does_not_exist()
        w.deploy_key_if_it_does_not_exist()  # present already: not added twice
    assert authorized_keys(sshd, password_user) == before + [
        (rsa_key.parent / "id_rsa.pub").read_text().strip()
    ]
    with w.connect(public_key_filename=public):
        assert w.exec_command(["true"], ".") is True
    with w.connect(sshd.password, public):
        w.delete_key()
    assert authorized_keys(sshd, password_user) == before
    with pytest.raises(ValueError, match="^incorrect public key$"):
        w.connect(public_key_filename=public)


def test_a_refused_password_is_a_value_error(sshd, server, password_user):
    w = wrapper(RemoteWrapper, sshd.host, password_user, sshd.port)
    with pytest.raises(ValueError, match="^incorrect password$"):
        w.connect(password="not the password")


def test_no_password_and_no_key_is_a_value_error(sshd, server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh at all
    w = wrapper(RemoteWrapper, sshd.host, sshd.key_user, sshd.port)
    with pytest.raises(ValueError, match="either a password or your public key"):
        w.connect()


def test_a_host_key_not_on_record_is_refused_by_default(sshd, password_user):
    w = wrapper(RemoteWrapper, sshd.host, password_user, sshd.port)  # no Server: no key
    with pytest.raises(HostKeyUnknown):
        w.connect(password=sshd.password)


def test_local_wrapper_works_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = wrapper(LocalWrapper, "localhost", "anyone")
    with w.connect():
        w.chdir("jobs")
        with w.open("job.sh", "w") as f:
            f.write("echo from $(pwd)\n")
        out = []
        ok = w.exec_command(["sh", "job.sh"], "jobs", stdout_handler=lambda now, t: out.append(t))
        assert [a.filename for a in w.listdir_attr()] == ["job.sh"]
    assert (ok, "".join(out)) == (True, f"from {tmp_path}/jobs\n")
    assert (tmp_path / "jobs" / "job.sh").read_text() == "echo from $(pwd)\n"
    assert w.workdir == os.path.join(str(tmp_path), "jobs")
