"""Run a job as a detached process on the host, with its output in files of a run directory.

    launcher = DirectLauncher(transport)
    run, proc = launcher.launch("/tmp/job", "job.py", b'print("hi")', ".drs/runs/<uuid>",
                                ["/usr/bin/python3", "-u"])
    ...                                   # read proc (the job's output) until proc.done
    launcher.exit_code(run.run_dir, proc) # 0
    proc = launcher.stream(run.run_dir, stdout_offset=3, stderr_offset=0)  # again, from offsets

The job runs in its own session (``setsid``), so it outlives the SSH connection that started
it; its stdout and stderr go through ``cat`` into ``out`` and ``err`` (so output written by
children after the interpreter exits is kept), its pid into ``pid``, its exit code into ``exit``.
The wrapper holds an exclusive ``flock`` on ``lock`` for its whole life: a watcher blocks on
that lock instead of polling, and ``tail -F`` streams both files from any byte offset, so a
watcher that reconnects continues exactly where the database stops.

All scripts are fixed POSIX sh text; every value reaches them as a positional argument, never
spliced into the script, so no field of a job can inject a command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..remote.base import Process, RemoteError, Transport

# Stage in (always) and launch (mode "launch"). Args: mode dir file run wrapper stream argv...
# stdin: the program. Prints pid, absolute run dir and absolute directory (each NUL-terminated:
# paths may hold newlines), then becomes the
# stream script (on the same channel: no second command to start).
LAUNCH = r"""
set -u
mode=$1 d=$2 f=$3 run=$4 wrapper=$5 stream=$6; shift 6
case $run in /*) ;; *) run=$PWD/$run ;; esac
[ "$mode" = launch ] && [ -e "$run" ] && exit 14
mkdir -p -- "$d" || exit 10
cd -- "$d" || exit 10
cat > "$f" || exit 11
[ "$mode" = launch ] || { printf '%s\n' "$PWD"; exit 0; }
case $1 in
  */*) [ -f "$1" ] && [ -x "$1" ] ;;
  *) command -v -- "$1" >/dev/null 2>&1 ;;
esac || exit 12
command -v flock >/dev/null 2>&1 && command -v setsid >/dev/null 2>&1 || exit 15
tmp=$run.tmp.$$
mkdir -p -- "$tmp" || exit 13
: > "$tmp/out"; : > "$tmp/err"
exec 9> "$tmp/lock"
flock -x 9 || exit 13
find . -mindepth 1 -printf '%P\0%y\0%s\0%T@\0%C@\0%i\0' > "$tmp/before" 2>/dev/null
if ! mv -T -- "$tmp" "$run" 2>/dev/null; then rm -rf -- "$tmp"; exit 14; fi
setsid sh -c "$wrapper" sh "$run" "$@" < /dev/null > /dev/null 2>&1 &
printf '%s\0%s\0%s\0' "$!" "$run" "$PWD"
exec 9>&- sh -c "$stream" sh "$run" 0 0
"""

# Runs as the session leader of the job. Args: run argv... ``exit`` is written as the program
# ends; it is read only once the lock is free, i.e. once both streams are complete.
WRAPPER = r"""
run=$1; shift
echo $$ > "$run/pid"
trap : TERM INT HUP
{ { trap : TERM INT HUP; "$@" < /dev/null 2>&4 4>&- 9>&-; echo $? > "$run/exit"; } \
    4>&1 1>&3 2>/dev/null 3>&- 9>&- |
  (trap '' TERM INT HUP; exec cat > "$run/err" 9>&-); } 3>&1 9>&- |
  (trap '' TERM INT HUP; exec cat > "$run/out" 9>&-)
"""

# Stream out/err from byte offsets until the wrapper releases its lock.
# Args: run stdout_offset stderr_offset. Exit status: the job's, or 255 when unknown.
STREAM = r"""
cd -- "$1" 2>/dev/null || exit 120
(flock -s 9) 9< lock & w=$!
tail -c "+$(($2 + 1))" -F --pid="$w" out 2>/dev/null &
tail -c "+$(($3 + 1))" -F --pid="$w" err >&2 2>/dev/null &
wait "$w"
touch out err
[ -f exit ] && read -r c < exit && exit "$c"
exit 255
"""

# Stop every process of the job's session: TERM, then KILL after the grace period, and
# return only once none is left (zombies do not count). Args: run grace_tenths.
KILL = r"""
cd -- "$1" 2>/dev/null || exit 0
p=$(cat pid 2>/dev/null) || exit 0
[ -n "$p" ] || exit 0
members() {
  for s in /proc/[0-9]*/stat; do
    read -r l < "$s" 2>/dev/null || continue
    set -- ${l##*) }
    s=${s%/stat}
    [ "$4" = "$p" ] && [ "$1" != Z ] && printf '%s ' "${s#/proc/}"
  done
}
kill -TERM $(members) 2>/dev/null
i=0
while [ -n "$(members)" ]; do
  [ "$i" -ge "$2" ] && kill -KILL $(members) 2>/dev/null
  [ "$i" -ge $(($2 + 100)) ] && exit 3
  sleep 0.1; i=$((i + 1))
done
exit 0
"""

# The snapshot taken before launch, an empty field, then the directory as it is now; what
# find cannot read (a directory without permission) is named on stderr.
LISTING = r"""
cd -- "$1" || exit 10
cat -- "$2/before" 2>/dev/null
printf '\0'
{ find . -mindepth 1 -printf '%P\0%y\0%s\0%T@\0%C@\0%i\0' 2>&1 >&3 3>&- |
  sed 's/^find: //' >&2; } 3>&1
exit 0
"""

EXIT_CODE = r"""cat -- "$1/exit" 2>/dev/null || exit 1"""

LAUNCH_ERRORS = {
    10: "Cannot create or enter the remote directory {dir!r}",
    11: "Cannot write {file!r} in the remote directory {dir!r}",
    12: "Interpreter {interpreter!r} not found on the host (or not executable)",
    13: "Cannot create the run directory {run!r} on the host",
    15: "The host lacks flock or setsid (util-linux), needed to run jobs detached",
}
ALREADY_LAUNCHED = 14


def sh(script: str, *args: object) -> list[str]:
    """argv running ``script`` with ``sh``; ``args`` become "$1", "$2", ..."""
    return ["sh", "-c", script, "sh", *map(str, args)]


class _Replay(Process):
    """A process whose first chunks were read already: hands them out again, then reads on."""

    def __init__(self, proc: Process, chunks: list[tuple[str, bytes]]) -> None:
        self.proc, self.chunks = proc, chunks

    @property
    def done(self) -> bool:
        return not self.chunks and self.proc.done

    @property
    def exit_code(self) -> int | None:  # type: ignore[override]
        return self.proc.exit_code

    def read(self, timeout: float | None) -> list[tuple[str, bytes]]:
        if self.chunks:
            chunks, self.chunks = self.chunks, []
            return chunks
        return self.proc.read(timeout)

    def close(self) -> None:
        self.proc.close()


@dataclass
class Launched:
    pid: int | None
    run_dir: str
    directory: str
    attached: bool = False


class DirectLauncher:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _failure(self, code: int | None, stderr: bytes, directory, filename, run_dir, argv):
        template = LAUNCH_ERRORS.get(code, "Could not start the job (exit status {code})")
        message = template.format(
            dir=directory,
            file=filename,
            run=run_dir,
            interpreter=argv[0] if argv else "",
            code=code,
        )
        detail = " ".join(stderr.decode(errors="replace").replace("sh: ", "").split())
        return RemoteError(f"{message}: {detail}" if detail else f"{message}.")

    def stage(self, directory: str, filename: str, program: bytes) -> str:
        """Write the program into the directory (created if missing); return its absolute path."""
        res = self.transport.run(
            sh(LAUNCH, "stage", directory, filename, "-", "", ""), stdin=program, timeout=120
        )
        if res.exit_code != 0:
            raise self._failure(res.exit_code, res.stderr, directory, filename, "-", [])
        return res.text.strip()

    def launch(
        self,
        directory: str,
        filename: str,
        program: bytes,
        run_dir: str,
        argv: list[str],
        timeout: float = 120,
    ) -> tuple[Launched, Process | None]:
        """Write the program, start ``argv + [filename]`` detached in ``directory``, and
        return the launch with the process streaming its output (from offset 0).

        The run directory is published atomically before the program starts: a second
        launch of the same run finds it and returns ``attached=True`` (and no process)
        instead of starting the program twice.
        """
        target = f"./{filename}" if filename.startswith("-") else filename
        proc = self.transport.start(
            sh(LAUNCH, "launch", directory, filename, run_dir, WRAPPER, STREAM, *argv, target),
            stdin=program,
        )
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while out.count(b"\0") < 3 and not proc.done:
                if time.monotonic() > deadline:
                    raise RemoteError(f"Starting the job took longer than {timeout:g} s.")
                for stream, data in proc.read(max(0.0, deadline - time.monotonic())):
                    (out if stream == "stdout" else err).extend(data)
        except BaseException:
            proc.close()
            raise
        if out.count(b"\0") < 3:
            proc.close()
            if proc.exit_code == ALREADY_LAUNCHED:
                return Launched(None, run_dir, directory, attached=True), None
            raise self._failure(proc.exit_code, bytes(err), directory, filename, run_dir, argv)
        pid, run, cwd, rest = bytes(out).split(b"\0", 3)
        # What followed the header is the job's own output, as is all stderr after launch.
        early = [("stdout", rest), ("stderr", bytes(err))]
        launched = Launched(int(pid), run.decode(), cwd.decode())
        return launched, _Replay(proc, [(s, d) for s, d in early if d])

    def stream(self, run_dir: str, stdout_offset: int, stderr_offset: int) -> Process:
        """Follow the job's output from the given byte offsets until the job is over."""
        return self.transport.start(sh(STREAM, run_dir, stdout_offset, stderr_offset))

    def exit_code(self, run_dir: str, proc: Process) -> int | None:
        """The job's exit code once ``proc`` (from ``stream``) is done; None if it left none."""
        if proc.exit_code == 120:
            raise RemoteError(f"The run directory {run_dir!r} disappeared from the host.")
        if proc.exit_code not in (255, -1, None):
            return proc.exit_code
        res = self.transport.run(sh(EXIT_CODE, run_dir), timeout=60)
        return int(res.text) if res.exit_code == 0 and res.text.strip().isdigit() else None

    def kill(self, run_dir: str, grace: float) -> None:
        """Stop the job's whole session; return once the host confirms nothing is left."""
        res = self.transport.run(sh(KILL, run_dir, max(0, int(grace * 10))), timeout=grace + 60)
        if res.exit_code != 0:
            raise RemoteError(f"Processes of the job survived SIGKILL ({run_dir}).")

    def listing(self, directory: str, run_dir: str) -> tuple[bytes, bytes, list[str]]:
        """(snapshot before launch, listing now, unreadable parts) of the directory.

        The listings are NUL-terminated fields; see ``results.parse_listing``.
        """
        res = self.transport.run(sh(LISTING, directory, run_dir), timeout=300)
        if res.exit_code != 0:
            raise RemoteError(f"Cannot list the remote directory {directory!r}: {res.error_text}")
        out, problems = res.stdout, res.error_text.splitlines()
        if out.startswith(b"\0"):
            return b"", out[1:], problems
        before, _, after = out.partition(b"\0\0")
        return before + b"\0", after, problems
