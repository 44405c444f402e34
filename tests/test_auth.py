"""Each way of logging in works; host keys are checked; keys are deployed and removed cleanly."""

from __future__ import annotations

import os
import subprocess

import pytest

from django_remote_submission.models import Job, Server
from django_remote_submission.tasks import copy_key_to_server, delete_key_from_server

pytestmark = pytest.mark.django_db


def ok(job) -> bool:
    job.refresh_from_db()
    assert job.status == Job.STATUS.success, job.error
    return True


@pytest.fixture
def keypair(tmp_path):
    """A fresh ed25519 key pair protected by a passphrase."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "pass phrase",
            "-C",
            "drs-test",
            "-f",
            str(key),
        ],
        check=True,
    )
    return key


@pytest.fixture
def plain_keypair(tmp_path):
    key = tmp_path / "plain_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drs-plain", "-f", str(key)],
        check=True,
    )
    return key


def authorized_keys(sshd, user) -> list[str]:
    """The lines of the user's authorized_keys, less those of concurrent test sessions' sshd."""
    text = sshd.run_as(user, "cat ~/.ssh/authorized_keys").stdout
    return [line for line in text.splitlines() if "drs-tests-" not in line]


def test_private_key_file_login(make_job, submit, sshd, server):
    job = make_job("print('key file')", key_user=True)
    submit(job, password=None, public_key_filename=sshd.key_file, username=sshd.key_user)
    assert ok(job)


def test_public_key_path_means_the_private_key_beside_it(make_job, submit, sshd):
    job = make_job("print(1)", key_user=True)
    submit(job, password=None, public_key_filename=sshd.key_file + ".pub", username=sshd.key_user)
    assert ok(job)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_a_refused_key_file_is_an_authentication_failure(make_job, submit, sshd, tmp_path, kind):
    key = tmp_path / f"id_{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True)
    job = make_job("print(1)", key_user=True)
    submit(job, password=None, public_key_filename=str(key) + ".pub", username=sshd.key_user)
    job.refresh_from_db()
    assert (job.status, job.error) == (
        Job.STATUS.failure,
        f"Authentication failed for {sshd.key_user}@{sshd.host}:{sshd.port} using key file.",
    )


def test_a_key_file_with_a_passphrase_needs_it(make_job, submit, sshd, keypair):
    job = make_job("print(1)", key_user=True)
    submit(job, password=None, public_key_filename=str(keypair), username=sshd.key_user)
    job.refresh_from_db()
    assert (job.status, job.error) == (
        Job.STATUS.failure,
        f"The private key {keypair} needs a passphrase; none is set.",
    )


def test_stored_private_key_text_with_passphrase(make_job, submit, sshd, server, keypair):
    if not sshd.password_user:
        pytest.skip("needs root for a second account")
    copy_key_to_server(
        sshd.password_user,
        sshd.password,
        sshd.host,
        sshd.port,
        public_key_filename=str(keypair) + ".pub",
    )
    server.private_key = keypair.read_text()
    server.private_key_passphrase = "pass phrase"
    server.save()
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            f"SELECT private_key, private_key_passphrase FROM {Server._meta.db_table} "
            "WHERE id = %s",
            [server.pk],
        )
        raw, raw_phrase = cur.fetchone()
    assert raw_phrase.startswith("drs1:") and "pass phrase" not in raw_phrase
    assert "PRIVATE KEY" not in raw and raw.startswith("drs1:")
    job = make_job("print('stored key')")
    submit(job, password=None)
    assert ok(job)
    delete_key_from_server(
        sshd.password_user,
        sshd.password,
        sshd.host,
        sshd.port,
        public_key_filename=str(keypair) + ".pub",
    )


def test_wrong_passphrase_is_a_clear_failure(make_job, submit, server, keypair):
    server.private_key = keypair.read_text()
    server.private_key_passphrase = "wrong"
    server.save()
    job = make_job("print(1)")
    submit(job, password=None)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith("The stored private key could not be read")


def test_ssh_agent_login(make_job, submit, sshd, server, tmp_path, monkeypatch):
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        from tests.services import wait_for

        wait_for(lambda: os.path.exists(sock), timeout=10, message="ssh-agent socket")
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", "-q", sshd.key_file], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        server.use_agent = True
        server.save()
        job = make_job("print('agent')", key_user=True)
        submit(job, password=None, username=sshd.key_user)
        assert ok(job)
    finally:
        agent.terminate()
        agent.wait(10)


def test_password_login_never_tries_the_workers_own_keys(
    make_job, submit, sshd, monkeypatch, tmp_path
):
    # A worker whose ~/.ssh holds a key the server accepts must still fail on a bad password.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for suffix in ("", ".pub"):
        (home / ".ssh" / f"id_ed25519{suffix}").write_bytes(
            open(sshd.key_file + suffix, "rb").read()
        )
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    monkeypatch.setenv("HOME", str(home))
    job = make_job("print(1)", key_user=True)
    submit(job, password="wrong", username=sshd.key_user)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith("Authentication failed")


def test_copy_and_delete_key_keep_other_keys_and_permissions(
    make_job, submit, sshd, server, plain_keypair, keypair
):
    if not sshd.password_user:
        pytest.skip("needs root for a password account")
    user = sshd.password_user
    other = keypair.with_suffix(".pub").read_text().strip()  # someone else's key, kept as is
    sshd.run_as(user, f"printf '%s' '{other}' >> ~/.ssh/authorized_keys")  # no final newline
    pub = plain_keypair.with_suffix(".pub").read_text().split()
    deploy = dict(public_key_filename=str(plain_keypair) + ".pub")
    copy_key_to_server(user, sshd.password, sshd.host, sshd.port, **deploy)
    copy_key_to_server(user, sshd.password, sshd.host, sshd.port, **deploy)  # idempotent
    lines = authorized_keys(sshd, user)
    assert other in lines
    assert [line for line in lines if pub[1] in line] == [" ".join(pub)]
    mode = sshd.run_as(user, "stat -c %a ~/.ssh ~/.ssh/authorized_keys").stdout.split()
    assert mode == ["700", "600"]

    job = make_job("print('with the deployed key')")
    submit(job, password=None, **deploy)
    assert ok(job)

    delete_key_from_server(user, None, sshd.host, sshd.port, **deploy)
    lines = authorized_keys(sshd, user)
    assert other in lines and not any(pub[1] in line for line in lines)
    assert sshd.run_as(user, "stat -c %a ~/.ssh/authorized_keys").stdout.strip() == "600"
    again = make_job("print(1)")
    submit(again, password=None, public_key_filename=str(plain_keypair))
    again.refresh_from_db()
    assert again.status == Job.STATUS.failure and "Authentication failed" in again.error
    delete_key_from_server(
        user, sshd.password, sshd.host, sshd.port, public_key_filename=str(keypair) + ".pub"
    )


@pytest.mark.parametrize("policy", ["reject", "auto_add", "warn"])
def test_changed_host_key_always_fails_before_login(
    make_job, submit, server, settings, policy, plain_keypair
):
    settings.DRS = {"HOST_KEY_POLICY": policy}
    fake = plain_keypair.with_suffix(".pub").read_text().split()
    server.host_key = f"[127.0.0.1]:{server.port} {fake[0]} {fake[1]}"
    server.save()
    job = make_job("print(1)")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error.startswith(f"Host key mismatch for [127.0.0.1]:{server.port}")
    assert job.logs.count() == 0


def test_unknown_host_key_is_rejected_by_default(make_job, submit, server):
    Server.objects.filter(pk=server.pk).update(host_key="")
    job = make_job("print(1)")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert "is not on record" in job.error and "drs_fetch_host_key" in job.error


def test_auto_add_trusts_on_first_use_and_stores_the_key(make_job, submit, server, settings, sshd):
    settings.DRS = {"HOST_KEY_POLICY": "auto_add"}
    Server.objects.filter(pk=server.pk).update(host_key="")
    job = make_job("print(1)")
    submit(job)
    assert ok(job)
    server.refresh_from_db()
    assert server.host_key.split()[1:] == sshd.host_key.split()[1:]


def test_warn_policy_connects_to_an_unknown_host(make_job, submit, server, settings):
    settings.DRS = {"HOST_KEY_POLICY": "warn"}
    Server.objects.filter(pk=server.pk).update(host_key="")
    job = make_job("print(1)")
    submit(job)
    assert ok(job)
    server.refresh_from_db()
    assert server.host_key == ""


@pytest.mark.parametrize("policy", ["reject", "auto_add", "warn"])
def test_a_host_key_on_record_that_is_not_a_known_hosts_line_fails_under_every_policy(
    make_job, submit, server, settings, policy, sshd
):
    settings.DRS = {"HOST_KEY_POLICY": policy}
    fingerprint = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"  # pasted by mistake
    Server.objects.filter(pk=server.pk).update(host_key=fingerprint)
    job = make_job("print(1)")
    submit(job)
    job.refresh_from_db()
    assert job.status == Job.STATUS.failure
    assert job.error == (
        f"Server test sshd: The host key on record for [127.0.0.1]:{server.port} is not a "
        "known_hosts line; nothing was sent. Replace it with the server's key (manage.py "
        "drs_fetch_host_key 'test sshd' --save)."
    )
    server.refresh_from_db()
    assert server.host_key == fingerprint  # never replaced behind the operator's back
    assert job.logs.count() == 0


def test_the_model_refuses_a_host_key_that_is_not_a_known_hosts_line(server):
    from django.core.exceptions import ValidationError

    server.host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
    with pytest.raises(ValidationError) as refused:
        server.full_clean()
    assert list(refused.value.message_dict) == ["host_key"]
