"""Smoke tests of the real service fixtures.

Usage: ``.venv/bin/python -m pytest tests/test_services.py -v``.
"""

from __future__ import annotations

import os

import paramiko
import pytest
import redis

from tests.services import SSHServer, wait_for


def test_key_user_via_openssh_client(sshd: SSHServer) -> None:
    result = sshd.ssh(sshd.key_user, "id -un; test -d " + sshd.base_dir_key + " && echo ok")
    assert result.returncode == 0, result.stderr + sshd.log()
    assert result.stdout.split() == [sshd.key_user, "ok"]
    assert os.path.exists(sshd.key_file + ".pub")
    assert sshd.key_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    if os.geteuid() == 0:
        assert sshd.key_user == "drs_key"
    wait_for(lambda: "Accepted publickey" in sshd.log(), timeout=10, message="sshd log")


def test_password_user_via_paramiko(sshd: SSHServer) -> None:
    if sshd.password_user is None:
        pytest.skip("password login needs root (sshd reads /etc/shadow)")
    client = paramiko.SSHClient()
    client.load_host_keys(sshd.host_key_file)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.password_user,
            password=sshd.password,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _, stdout, _ = client.exec_command("id -un; pwd")
        assert stdout.read().decode().split() == [sshd.password_user, sshd.password_user_home]
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    # the same account is reachable with the OpenSSH client and locally
    listing = sshd.ssh(sshd.password_user, "test -d " + str(sshd.base_dir_pw) + " && id -un")
    assert listing.returncode == 0 and listing.stdout == sshd.password_user + "\n", listing.stderr
    assert sshd.run_as(sshd.password_user, "id -un").stdout.strip() == sshd.password_user


def test_unknown_host_key_is_rejected(sshd: SSHServer) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.key_user,
            key_filename=sshd.key_file,
            look_for_keys=False,
            allow_agent=False,
        )
    client.close()


def test_redis_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        client.set("drs", "ok")
        assert client.get("drs") == b"ok"
    finally:
        client.close()
