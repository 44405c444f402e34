"""Real batch schedulers for the tests: a single-node Slurm (munge, slurmctld, slurmd) and
a single-node Grid Engine (qmaster, execd), and a login for them that counts its scheduler
commands.

Usage: ``cluster = start_slurm(); ...; cluster.release()`` or the ``slurm`` / ``sge``
fixtures of tests/test_schedulers.py. Needs root (daemons, packages, users). The packages
are installed when missing (``make sysdeps`` does the same). The daemons are machine-wide
(fixed ports, /etc/slurm/slurm.conf): test sessions running at the same time share them
through a lock file (a shared ``flock`` per session); the last session to leave stops them.

The login ``drs_sched`` has ``~/drs-bin`` first on its PATH (``~/.bashrc``, which bash reads
for commands run over SSH): wrappers of every scheduler command append ``<command>`` to
``~/drs-calls.log`` and run the real one, so tests count scheduler calls exactly. A wrapper
of a submit command holds after submitting when ``~/drs-hold`` exists (see ``hold_submit``).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from tests.services import TEST_PASSWORD, ServiceUnavailable, _ensure_user, wait_for

USER = "drs_sched"
SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SGE_PACKAGES = ["gridengine-master", "gridengine-exec", "gridengine-client"]
SLURM_COMMANDS = ["sbatch", "squeue", "scontrol", "sacct", "scancel"]
SGE_COMMANDS = ["qsub", "qstat", "qacct", "qdel"]
SUBMITS = {"sbatch", "qsub"}
SLURM_DIR = "/tmp/drs-test-slurm"
SGE_ROOT = "/var/lib/gridengine"
SGE_ENV = {"SGE_ROOT": SGE_ROOT, "SGE_CELL": "default"}

WRAPPER = r"""#!/bin/sh
# Counts this scheduler command, then runs the real one (tests/schedulers.py).
name=${0##*/}
printf '%s\n' "$name" >> "$HOME/drs-calls.log"
case $name in
  sbatch|qsub)
    if [ -e "$HOME/drs-hold" ]; then
      rm -f "$HOME/drs-hold"
      out=$(/usr/bin/$name "$@"); c=$?
      printf '%s %s\n' "$(ps -o pgid= -p $$ | tr -d ' ')" "$out" > "$HOME/drs-held.tmp"
      mv "$HOME/drs-held.tmp" "$HOME/drs-held"
      sleep 600
      printf '%s\n' "$out"; exit $c
    fi ;;
esac
exec /usr/bin/$name "$@"
"""


def _root() -> None:
    if os.geteuid() != 0:
        raise ServiceUnavailable("batch schedulers need root (daemons, packages, a test login)")


def _install(packages: list[str], recommends: bool) -> None:
    missing = [
        p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode
    ]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q"]
    if not recommends:
        argv.append("--no-install-recommends")
    done = subprocess.run(argv + missing, capture_output=True, text=True, env=env)
    if done.returncode:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        done = subprocess.run(argv + missing, capture_output=True, text=True, env=env)
    if done.returncode:
        raise ServiceUnavailable(f"cannot install {' '.join(missing)}: {done.stderr[-2000:]}")


def _sh(script: str, timeout: float = 120, env: dict | None = None) -> str:
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd="/",
    )
    if done.returncode:
        raise ServiceUnavailable(f"{script.strip()[:200]!r} failed: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Login:
    """The scheduler login: its home, the calls its wrappers counted, the submit hold."""

    name: str
    home: str

    def calls(self) -> list[str]:
        try:
            with open(f"{self.home}/drs-calls.log") as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def count(self, command: str) -> int:
        return self.calls().count(command)

    def reset_calls(self) -> None:
        with open(f"{self.home}/drs-calls.log", "w"):
            pass

    def hold_submit(self) -> None:
        """The next submit command submits, then holds (its process group in ``held()``)."""
        for name in ("drs-held", "drs-held.tmp"):
            if os.path.exists(f"{self.home}/{name}"):
                os.remove(f"{self.home}/{name}")
        with open(f"{self.home}/drs-hold", "w"):
            pass

    def held(self) -> tuple[int, str] | None:
        """(process group of the held submit, its answer) once it has submitted."""
        try:
            with open(f"{self.home}/drs-held") as f:
                pgid, _, answer = f.read().strip().partition(" ")
        except FileNotFoundError:
            return None
        return int(pgid), answer

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command as the login, with the schedulers' environment (not counted)."""
        env = " ".join(f"{k}={v}" for k, v in SGE_ENV.items())
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "sh", "-c", f"export {env}; {command}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )


def make_login(pub_key: str) -> Login:
    """The scheduler login, with ``pub_key`` authorized and the counting wrappers."""
    from tests.services import _edit_authorized_keys

    _ensure_user(USER, TEST_PASSWORD)
    pw = pwd.getpwnam(USER)
    home = pw.pw_dir
    bindir = f"{home}/drs-bin"
    os.makedirs(bindir, exist_ok=True)
    for command in SLURM_COMMANDS + SGE_COMMANDS:
        path = f"{bindir}/{command}"
        with open(path, "w") as f:
            f.write(WRAPPER)
        os.chmod(path, 0o755)
    profile = (
        f'export PATH="$HOME/drs-bin:$PATH" SGE_ROOT={SGE_ROOT} SGE_CELL=default\n'
        "# tests/schedulers.py: scheduler wrappers first\n"
    )
    rc = f"{home}/.bashrc"
    with open(rc, "a+") as f:  # a home made without /etc/skel has none
        f.seek(0)
        current = f.read()
    if not current.startswith(profile):
        with open(rc, "w") as f:
            f.write(profile + current)
    for path in (bindir, *(f"{bindir}/{c}" for c in SLURM_COMMANDS + SGE_COMMANDS), rc):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    _edit_authorized_keys(USER, pub_key, add=True)
    login = Login(USER, home)
    login.reset_calls()
    os.chown(f"{home}/drs-calls.log", pw.pw_uid, pw.pw_gid)
    return login


@dataclass
class Cluster:
    """A running scheduler shared by the test sessions of this machine."""

    kind: str
    lock: object = field(repr=False)
    stop_script: str = field(repr=False)

    def release(self) -> None:
        """Leave; the last session to leave stops the daemons."""
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another session still uses it
        else:
            subprocess.run(["bash", "-c", self.stop_script], capture_output=True, timeout=120)
        self.lock.close()


def _shared(kind: str, start, stop_script: str) -> Cluster:
    """Start (if not running) under an exclusive lock, then hold a shared one."""
    lock = open(f"/tmp/drs-test-{kind}.lock", "a+")  # noqa: SIM115 (held for the session)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        start()
    except BaseException:
        lock.close()
        raise
    fcntl.flock(lock, fcntl.LOCK_SH)
    return Cluster(kind, lock, stop_script)


# --- Slurm -------------------------------------------------------------------------------------

SLURM_CONF = """\
# Written by tests/schedulers.py: a single-node test cluster.
ClusterName=drstest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmdSpoolDir={dir}/spool
StateSaveLocation={dir}/state
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MessageTimeout=20
NodeName={node} NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=held Nodes=ALL MaxTime=INFINITE State=DOWN
"""

START_MUNGE = r"""
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
install -d -m 0755 -o munge -g munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for i in $(seq 100); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && exit 0; sleep 0.1; done
  echo "munged did not start" >&2; exit 1
fi
"""

STOP_SLURM = f"""
scontrol shutdown >/dev/null 2>&1
for f in {SLURM_DIR}/slurmctld.pid {SLURM_DIR}/slurmd.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f"); for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
done
true
"""


def _slurm_up() -> bool:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    states = set(done.stdout.split())
    return done.returncode == 0 and states == {"idle"}


def _running(pid_file: str) -> bool:
    """The daemon of ``pid_file`` runs (asking a stopped slurmctld takes MessageTimeout)."""
    try:
        with open(pid_file) as f:
            os.kill(int(f.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _start_slurm() -> None:
    _install(SLURM_PACKAGES, recommends=False)
    _sh(START_MUNGE)
    daemons = (f"{SLURM_DIR}/slurmctld.pid", f"{SLURM_DIR}/slurmd.pid")
    if all(_running(p) for p in daemons) and _slurm_up():
        return
    subprocess.run(["bash", "-c", STOP_SLURM], capture_output=True, timeout=120)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    shutil.rmtree(SLURM_DIR, ignore_errors=True)
    os.makedirs(f"{SLURM_DIR}/state")
    os.chmod(SLURM_DIR, 0o755)
    os.makedirs("/etc/slurm", exist_ok=True)
    with open("/etc/slurm/slurm.conf", "w") as f:
        f.write(SLURM_CONF.format(dir=SLURM_DIR, node=node))
    for daemon in (["slurmctld", "-i"], ["slurmd"]):  # no pipes: they would hold them open
        quiet = subprocess.DEVNULL
        if subprocess.run(daemon, stdin=quiet, stdout=quiet, stderr=quiet).returncode:
            raise ServiceUnavailable(f"{daemon[0]} did not start (see {SLURM_DIR})")
    try:
        wait_for(_slurm_up, timeout=60, interval=0.1, message="slurm node idle")
    except AssertionError as exc:
        with open(f"{SLURM_DIR}/slurmctld.log", errors="replace") as f:
            raise ServiceUnavailable(f"{exc}: {f.read()[-3000:]}") from None


def start_slurm() -> Cluster:
    """Usage: ``cluster = start_slurm()``: munged, slurmctld and slurmd on this machine
    (partitions ``debug``, the default, and ``held``, which is down: its jobs pend)."""
    _root()
    return _shared("slurm", _start_slurm, STOP_SLURM)


# --- Grid Engine --------------------------------------------------------------------------------

START_SGE = r"""
set -eu
C=$SGE_ROOT/$SGE_CELL/common
H=$(hostname)
# The postinst leaves act_qmaster empty; the hostname must resolve to one name for commlib.
others=$(awk -v h="$H" '$1=="127.0.0.1"{for(i=2;i<=NF;i++) if($i!="localhost" && $i!=h) printf "%s ", $i}' /etc/hosts)
echo "$H localhost $others" > $C/host_aliases
echo "$H" > $C/act_qmaster; chown sgeadmin:sgeadmin $C/act_qmaster
up() { qconf -sh >/dev/null 2>&1; }
if ! up; then
  /etc/init.d/gridengine-master start >/dev/null 2>&1 || true
  for i in $(seq 150); do up && break; sleep 0.2; done
fi
qconf -sh | grep -qx "$H" || qconf -ah "$H" >/dev/null
qconf -ss 2>/dev/null | grep -qx "$H" || qconf -as "$H" >/dev/null
pgrep -x sge_execd >/dev/null || /etc/init.d/gridengine-exec start >/dev/null 2>&1 || true
for i in $(seq 150); do qconf -sel 2>/dev/null | grep -qx "$H" && break; sleep 0.2; done
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
if ! qconf -shgrpl 2>/dev/null | grep -qx '@allhosts'; then
  printf 'group_name @allhosts\nhostlist %s\n' "$H" > $t/allhosts; qconf -Ahgrp $t/allhosts >/dev/null
fi
ed=$t/ed; : > $ed; chmod +x $ed
if ! qconf -sql 2>/dev/null | grep -qx all.q; then
  printf '#!/bin/sh\nsed -i -e "s/^hostlist .*/hostlist @allhosts/" -e "s/^slots .*/slots 4/" -e "s/^pe_list .*/pe_list NONE/" -e "s/^shell_start_mode .*/shell_start_mode unix_behavior/" "$1"\n' > $ed
  EDITOR=$ed qconf -aq all.q >/dev/null
fi
# A busy test machine must not put the queue in alarm (np_load_avg above 1.75 stops scheduling).
qconf -rattr queue load_thresholds NONE all.q >/dev/null
qconf -rattr queue slots 4 all.q >/dev/null
# The scheduler runs every second (default 15 s); accounting is flushed every second.
printf '#!/bin/sh\nsed -i -e "s/^schedule_interval .*/schedule_interval 0:0:1/" -e "s/^flush_submit_sec .*/flush_submit_sec 1/" -e "s/^flush_finish_sec .*/flush_finish_sec 1/" "$1"\n' > $ed
EDITOR=$ed qconf -msconf >/dev/null 2>&1 || true
qconf -sconf global > $t/global
if grep -q 'flush_time=00:00:15' $t/global; then
  sed -i 's/flush_time=00:00:15/flush_time=00:00:01/' $t/global
  (cd $t && qconf -Mconf global >/dev/null)
fi
for i in $(seq 60); do qstat -f | grep -qE 'all\.q@\S+ .* [a-zA-Z]*u$' || break; sleep 0.5; done
"""

STOP_SGE = f"""
export SGE_ROOT={SGE_ROOT} SGE_CELL=default
qconf -ke all >/dev/null 2>&1; qconf -km >/dev/null 2>&1
for i in $(seq 100); do pgrep -x sge_qmaster >/dev/null || pgrep -x sge_execd >/dev/null || exit 0
  sleep 0.2; done
true
"""


def _start_sge() -> None:
    _install(SGE_PACKAGES, recommends=True)
    _sh(START_SGE, timeout=180, env=SGE_ENV)
    deadline = time.monotonic() + 30
    while "all.q@" not in _sh("qstat -f", env=SGE_ENV):
        if time.monotonic() > deadline:
            raise ServiceUnavailable("Grid Engine has no queue all.q")
        time.sleep(0.2)


def start_sge() -> Cluster:
    """Usage: ``cluster = start_sge()``: sge_qmaster and sge_execd on this machine, queue
    ``all.q`` with 4 slots, scheduling every second."""
    _root()
    return _shared("sge", _start_sge, STOP_SGE)
