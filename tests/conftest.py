"""Shared fixtures: real sshd and redis-server (tests/services.py), Debian's chromium.

Usage: ``def test_x(sshd, redis_url): sshd.ssh(sshd.key_user, "true")``. A missing service
skips the test, or fails it when CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from tests.services import ServiceUnavailable, SSHServer, start_redis, start_sshd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def unavailable(message: str) -> NoReturn:
    """Usage: ``unavailable("no sshd")``: pytest.fail under CI=true, else pytest.skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: required service missing)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """Usage: ``def test_x(sshd): sshd.ssh(sshd.key_user, "id -un")``; see SSHServer."""
    try:
        server = start_sshd()
    except ServiceUnavailable as exc:
        unavailable(f"sshd unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Usage: ``def test_x(redis_url): redis.Redis.from_url(redis_url).ping()``."""
    try:
        server = start_redis()
    except ServiceUnavailable as exc:
        unavailable(f"redis unavailable: {exc}")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Usage: automatic for pytest-playwright's ``page``: launches Debian's /usr/bin/chromium."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found: install chromium (make sysdeps as root)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}
