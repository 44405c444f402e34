"""Run a job as a detached process on the host, with its output in files of a run directory.

    launcher = DirectLauncher(transport)
    launched, proc = launcher.launch(Spec("/tmp/job", "job.py", b'print("hi")',
                                          ".drs/runs/<uuid>", ["/usr/bin/python3", "-u"]))
    ...                                   # read proc (the job's output) until proc.done
    launcher.ending(Run(launched.run_dir, launched.pid), proc)  # Ending(exit_code=0)
    proc = launcher.stream(launched.run_dir, stdout_offset=3, stderr_offset=0)  # from offsets

The job runs in its own session (``setsid``), so it outlives the SSH connection that started
it; its stdout and stderr go through ``cat`` into ``out`` and ``err`` (so output written by
children after the interpreter exits is kept), its pid into ``pid``, its exit code into ``exit``.
The wrapper holds an exclusive ``flock`` on ``lock`` for its whole life: a watcher blocks on
that lock instead of polling, and ``tail -F`` streams both files from any byte offset, so a
watcher that reconnects continues exactly where the database stops.

All scripts are fixed POSIX sh text; every value reaches them as a positional argument, never
spliced into the script, so no field of a job can inject a command.

The job may change anything in its run directory, so what the scripts read there is
untrusted: files are read with a byte cap (``head -c``) and only when they are regular files,
numbers are checked, and the wrapper's pid comes from the launch itself, not from the
``pid`` file, so that a job cannot point a cancel at other processes.
"""

from __future__ import annotations

import time

from ..remote.base import Process, RemoteError
from .base import Ending, Launched, Launcher, Run, RunDirChanged, Spec, Stopped

# One record per directory entry, NUL-terminated: type, size, mtime, ctime, inode, path.
# A file is new or modified exactly when its record is not in the snapshot taken before launch.
FIND_RECORDS = r"find . -mindepth 1 -printf '%y %s %T@ %C@ %i %P\0'"

# Stage in (always) and launch (mode "launch"). Args: mode dir file run wrapper stream follow
# argv... stdin: the program. Prints pid, absolute run dir and absolute directory (each
# NUL-terminated: paths may hold newlines), then becomes the stream script (on the same
# channel: no second command to start), following the output or only waiting for the end.
LAUNCH = (
    r"""
set -u
mode=$1 d=$2 f=$3 run=$4 wrapper=$5 stream=$6 follow=$7; shift 7
case $run in /*) ;; *) run=$PWD/$run ;; esac
[ "$mode" = launch ] && [ -e "$run" ] && exit 14
mkdir -p -- "$d" || exit 10
cd -- "$d" || exit 10
cat > "$f" || exit 11
[ "$mode" = launch ] || { printf '%s\n' "$PWD"; exit 0; }
i=$1
# "env -- NAME=value... interpreter ...": the interpreter is the first word after them.
if [ "$1" = env ]; then for a in "$@"; do case $a in env|--|*=*) ;; *) i=$a; break ;; esac; done; fi
case $i in
  */*) [ -f "$i" ] && [ -x "$i" ] ;;
  *) command -v -- "$i" >/dev/null 2>&1 ;;
esac || exit 12
command -v flock >/dev/null 2>&1 && command -v setsid >/dev/null 2>&1 || exit 15
tmp=$run.tmp.$$
mkdir -p -- "$tmp" || exit 13
: > "$tmp/out"; : > "$tmp/err"
exec 9> "$tmp/lock"
flock -x 9 || exit 13
"""
    + FIND_RECORDS
    + r""" > "$tmp/before" 2>/dev/null
if ! mv -T -- "$tmp" "$run" 2>/dev/null; then rm -rf -- "$tmp"; exit 14; fi
setsid sh -c "$wrapper" sh "$run" "$@" < /dev/null > /dev/null 2>&1 &
printf '%s\0%s\0%s\0' "$!" "$run" "$PWD"
exec 9>&- sh -c "$stream" sh "$run" 0 0 "$follow"
"""
)

# Runs as the session leader of the job. Args: run argv... ``exit`` is written as the program
# ends; it is read only once the lock is free, i.e. once both streams are complete. The
# program runs in a subshell so that the shell's report of a signal ("Terminated") goes to
# /dev/null, never into the job's stderr. DRS_RUN_ID marks every process of the run, also
# those that leave its session.
WRAPPER = r"""
run=$1; shift
echo $$ > "$run/pid"
trap : TERM INT HUP
DRS_RUN_ID=${run##*/}; export DRS_RUN_ID
{ { trap : TERM INT HUP; (exec "$@" < /dev/null 2>&4 4>&- 9>&-); echo $? > "$run/exit"; } \
    4>&1 1>&3 2>/dev/null 3>&- 9>&- |
  (trap '' TERM INT HUP; exec cat > "$run/err" 9>&-); } 3>&1 9>&- |
  (trap '' TERM INT HUP; exec cat > "$run/out" 9>&-)
"""

# Follows one of the run's files (args: file, offset): passes on what tail reads (stdin),
# gathering for 5 ms after each write (up to 64 KiB) before the next, writing at once after a
# quiet spell. Once tail stops (the job is over, or tail gave up), it waits for the job's end
# (the lock) and sends what tail did not from the file itself (tail --pid may stop before the
# last writes). No single quote in it (sh -c '...').
PUMP = (
    'my ($sent, $left, $buf, $end) = (0, 0, "", 0);'
    'my $rin = ""; vec($rin, 0, 1) = 1;'
    "sub put {"
    "  for (my $o = 0; $o < length $buf;) {"
    "    my $w = syswrite(STDOUT, $buf, length($buf) - $o, $o);"
    "    defined $w or exit 1;"
    "    $o += $w;"
    "  }"
    '  $sent += length $buf; $buf = "";'
    "}"
    "until ($end) {"
    "  if ($left > 0) {"
    "    my ($found, $t) = select(my $r = $rin, undef, undef, $left);"
    "    if ($found > 0) {"
    "      $left = $t;"
    "      sysread(STDIN, $buf, 65536, length $buf) or $end = 1;"
    "      next if !$end && $left > 0 && length($buf) < 65536;"
    "    } else { $left = 0 }"
    "  } else {"
    "    sysread(STDIN, $buf, 65536, length $buf) or $end = 1;"
    "  }"
    "  next unless length $buf;"
    "  put(); $left = 0.005;"
    "}"
    "my ($file, $from) = @ARGV;"
    'if (open(my $lock, "+<", "lock")) { flock($lock, 1) }'
    'if (-f $file && !-l $file && open(my $f, "<", $file)) {'
    "  sysseek($f, $from + $sent, 0) or exit 0;"
    "  while (sysread($f, $buf, 65536)) { put() }"
    "}"
)

# Wait until the wrapper releases its lock; with "follow", stream out/err from byte offsets
# meanwhile. The pump (perl: perl-base is on every Debian and Ubuntu host) sends what tail
# reads at most once per 5 ms: a program printing line by line makes tail read a few hundred
# bytes at a time, and each piece would travel as an SSH packet of its own (80,000 packets for
# a million lines, most of the worker's CPU); paced, a flood goes out in pieces of up to 64 KiB,
# while a line after a quiet spell goes at once; and it sends what tail did not. Without perl,
# dd passes each piece on as it comes, and what tail did not send is sent from the file once
# the job is over (dd counts what it sent). The lock is opened read-write so that a job that
# puts a FIFO in its place cannot block the open. Args: run stdout_offset stderr_offset
# follow|wait. Exit status: the job's, or 255 when it is not a plain number from 0 to 255
# (``EXIT_CODE`` then says why).
STREAM = (
    r"""
cd -- "$1" 2>/dev/null || exit 120
export LC_ALL=C
(flock -s 9) 9<> lock 2>/dev/null & w=$!
paced=
if [ "$4" = follow ]; then
  if command -v perl >/dev/null 2>&1; then
    paced=1
    pump() { perl -e '"""
    + PUMP
    + r"""' "$1" "$2" 2>/dev/null; }
  else
    pump() { dd bs=65536 2> "sent.$$.$1"; }
  fi
  { tail -c "+$(($2 + 1))" -F --pid="$w" out 2>/dev/null | pump out "$2"; } &
  { tail -c "+$(($3 + 1))" -F --pid="$w" err 2>/dev/null | pump err "$3"; } >&2 &
fi
wait "$w"
touch out err 2>/dev/null
if [ "$4" = follow ]; then
  wait
  # dd: tail may stop before the last writes it was told of: send the rest from the file.
  rest() {
    n=$(sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' "sent.$$.$1" 2>/dev/null | tail -n 1)
    rm -f "sent.$$.$1"
    [ -n "$n" ] && [ -f "$1" ] && [ ! -L "$1" ] && tail -c "+$(($2 + n + 1))" "$1" 2>/dev/null
  }
  if [ -z "$paced" ]; then
    rest out "$2"
    rest err "$3" >&2
  fi
fi
[ -f exit ] && [ ! -L exit ] && c=$(head -c 4 exit 2>/dev/null) || c=
case $c in ''|*[!0-9]*) exit 255 ;; esac
[ "$c" -le 255 ] && exit "$c"
exit 255
"""
)

# The exit status in the run directory: a number, "missing" or "malformed". Args: run.
EXIT_CODE = r"""
f=$1/exit
[ -e "$f" ] || [ -L "$f" ] || { echo missing; exit 0; }
[ -f "$f" ] && [ ! -L "$f" ] || { echo malformed; exit 0; }
c=$(head -c 8 -- "$f")
case $c in ''|*[!0-9]*) echo malformed ;; *) echo "$c" ;; esac
"""

# Stop every process of the run: its session, and processes that carry its DRS_RUN_ID (also
# those that left the session). STOP its process group at once, then TERM every process
# (and CONT), then KILL after the grace period; return once none is
# left (zombies do not count). Args: run grace_tenths [pid of the wrapper, when known].
# The pid file belongs to the job and may have been changed: it is used only when it names
# the wrapper itself. Prints "<stopped> <left> <verified>"; exit 3 when some survived.
KILL = r"""
run=$1 grace=$2 p=${3:-} tag=${1##*/}
verified=1
if [ -z "$p" ]; then
  [ -f "$run/pid" ] && [ ! -L "$run/pid" ] && p=$(head -c 16 "$run/pid" 2>/dev/null)
  case $p in ''|*[!0-9]*) p= ;; esac
  [ -n "$p" ] && ! grep -qasF -- "$run" "/proc/$p/cmdline" && p=
  [ -n "$p" ] || verified=0
fi
# Session p is ours unless process p is alive and runs something else (a reused pid).
[ -n "$p" ] && [ -e "/proc/$p" ] && ! grep -qasF -- "$run" "/proc/$p/cmdline" && p=
members() {
  if [ -n "$p" ]; then
    for s in /proc/[0-9]*/stat; do
      read -r l 2>/dev/null < "$s" || continue
      set -- ${l##*) }
      s=${s%/stat}
      [ "$4" = "$p" ] && [ "$1" != Z ] && printf '%s\n' "${s#/proc/}"
    done
  fi
  grep -lszx -- "DRS_RUN_ID=$tag" /proc/[0-9]*/environ | sed 's|^/proc/||; s|/environ$||'
}
alive() { members | sort -u | grep -vx "$$"; }
# Freeze the session's process group first: one signal, so nothing the job does after the
# deadline gets through while its processes are looked up; TERM arrives once it continues.
[ -n "$p" ] && kill -STOP -- "-$p" 2>/dev/null
first=$(alive | wc -l)
kill -TERM $(alive) 2>/dev/null
[ -n "$p" ] && kill -CONT -- "-$p" 2>/dev/null
i=0
while left=$(alive) && [ -n "$left" ]; do
  [ "$i" -ge "$grace" ] && kill -KILL $left 2>/dev/null
  if [ "$i" -ge $((grace + 100)) ]; then
    echo "$first $(printf '%s\n' "$left" | wc -l) $verified"; exit 3
  fi
  sleep 0.1; i=$((i + 1))
done
echo "$first 0 $verified"
"""

# New or modified entries of the directory since the snapshot taken before launch (records
# of FIND_RECORDS, in C collation order), at most max bytes of them; what find cannot read (a
# directory without permission) is named on stderr. Args: dir run max.
LISTING = (
    r"""
export LC_ALL=C
cd -- "$1" || exit 10
run=$2 max=$3
t=$(mktemp -d) || exit 11
trap 'rm -rf -- "$t"' EXIT
if [ -f "$run/before" ] && [ ! -L "$run/before" ]; then
  head -c "$max" -- "$run/before" | sort -z > "$t/b"
else
  : > "$t/b"
fi
"""
    + FIND_RECORDS
    + r""" 2> "$t/e" | sort -z > "$t/a"
comm -z -13 -- "$t/b" "$t/a" | head -c "$((max + 1))"
sed 's/^find: //' "$t/e" | head -c 65536 >&2
exit 0
"""
)

LAUNCH_ERRORS = {
    10: "Cannot create or enter the remote directory {dir!r}",
    11: "Cannot write {file!r} in the remote directory {dir!r}",
    12: "Interpreter {interpreter!r} not found on the host (or not executable)",
    13: "Cannot create the run directory {run!r} on the host",
    15: "The host lacks flock or setsid (util-linux), needed to run jobs detached",
}
ALREADY_LAUNCHED = 14
LISTING_LIMIT = 32 << 20  # bytes of new-or-modified records read at most
HEADER_LIMIT = 64 * 1024  # bytes of the launch header read at most


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


class DirectLauncher(Launcher):
    """The program starts at once, as a detached process on the host."""

    def _failure(self, code: int | None, stderr: bytes, directory, filename, run_dir, argv):
        unknown = "Could not start the job (exit status {code})"
        template = unknown if code is None else LAUNCH_ERRORS.get(code, unknown)
        message = template.format(
            dir=directory,
            file=filename,
            run=run_dir,
            interpreter=argv[0] if argv else "",
            code=code,
        )
        detail = " ".join(stderr[:2000].decode(errors="replace").replace("sh: ", "").split())
        return RemoteError(f"{message}: {detail}" if detail else f"{message}.")

    def stage(self, directory: str, filename: str, program: bytes) -> str:
        """Write the program into the directory (created if missing); return its absolute path."""
        res = self.transport.run(
            sh(LAUNCH, "stage", directory, filename, "-", "", "", ""), stdin=program, timeout=120
        )
        if res.exit_code != 0:
            raise self._failure(res.exit_code, res.stderr, directory, filename, "-", [])
        return res.text.strip()

    def launch(
        self, spec: Spec, follow: bool = True, timeout: float = 120
    ) -> tuple[Launched, Process | None]:
        """Write the program, start ``spec.command()`` detached in ``directory``, and
        return the launch with the process that streams its output from offset 0 (with
        ``follow``) or only waits for its end.

        The run directory is published atomically before the program starts: a second
        launch of the same run finds it and returns ``attached=True`` (and no process)
        instead of starting the program twice.
        """
        directory, filename, run_dir, argv = spec.directory, spec.filename, spec.run_dir, spec.argv
        mode = "follow" if follow else "wait"
        command = spec.command()
        proc = self.transport.start(
            sh(LAUNCH, "launch", directory, filename, run_dir, WRAPPER, STREAM, mode, *command),
            stdin=spec.program,
        )
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while out.count(b"\0") < 3 and not proc.done:
                if time.monotonic() > deadline:
                    raise RemoteError(f"Starting the job took longer than {timeout:g} s.")
                if len(out) + len(err) > HEADER_LIMIT:
                    raise RemoteError("The host's answer to the launch is not the expected one.")
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
        if not pid.isdigit():
            proc.close()
            raise RemoteError(f"The launch reported no process id (got {pid[:40]!r}).")
        # What followed the header is the job's own output, as is all stderr after launch.
        early = [("stdout", rest), ("stderr", bytes(err))]
        launched = Launched(int(pid), _text(run), _text(cwd))
        return launched, _Replay(proc, [(s, d) for s, d in early if d])

    def stream(
        self, run_dir: str, stdout_offset: int, stderr_offset: int, follow: bool = True
    ) -> Process:
        """Follow the job's output from the given byte offsets until the job is over (or,
        without ``follow``, only wait for that)."""
        mode = "follow" if follow else "wait"
        return self.transport.start(sh(STREAM, run_dir, stdout_offset, stderr_offset, mode))

    def ending(self, run: Run, proc: Process) -> Ending | None:
        """A direct run is over when its stream ends: its exit code is the program's."""
        return Ending(self.exit_code(run.run_dir, proc))

    def exit_code(self, run_dir: str, proc: Process) -> int | None:
        """The job's exit code once ``proc`` (from ``stream``) is done; None if it left none.

        RunDirChanged when the run directory is gone or its exit file is not a number.
        """
        if proc.exit_code == 120:
            raise RunDirChanged(f"The run directory {run_dir} disappeared from the host.")
        if proc.exit_code not in (255, -1, None):
            return proc.exit_code
        res = self.transport.run(sh(EXIT_CODE, run_dir), timeout=60, limit=4096)
        word = res.text.strip()
        if word == "missing":
            return None
        if word.isdigit() and int(word) <= 255:
            return int(word)
        raise RunDirChanged(
            f"The run directory's exit file is not a number ({run_dir}/exit): the job "
            "changed its run directory"
        )

    def kill(self, run: Run, grace: float) -> Stopped:
        """Stop the job's processes; return once the host confirms none is left, or says
        which survived (``Stopped.left``)."""
        run_dir = run.run_dir
        argv = sh(KILL, run_dir, max(0, int(grace * 10)), run.pid or "")
        res = self.transport.run(argv, timeout=grace + 60, limit=65536)
        words = res.text.split()
        if res.exit_code not in (0, 3) or len(words) != 3 or not all(w.isdigit() for w in words):
            raise RemoteError(
                f"Could not stop the job's processes ({run_dir}): {res.error_text[:500]}"
            )
        return Stopped(int(words[0]), int(words[1]), words[2] == "1")

    def listing(self, directory: str, run_dir: str, tick=None) -> tuple[bytes, bool, list[str]]:
        """(records of the entries new or modified since launch, truncated?, unreadable parts).

        The records are FIND_RECORDS's; see ``results.parse_records``.
        """
        res = self.transport.run(
            sh(LISTING, directory, run_dir, LISTING_LIMIT),
            timeout=600,
            limit=LISTING_LIMIT + 2 * 65536,
            tick=tick,
        )
        if res.exit_code != 0:
            raise RemoteError(f"Cannot list the remote directory {directory!r}: {res.error_text}")
        truncated = len(res.stdout) > LISTING_LIMIT
        return res.stdout[:LISTING_LIMIT], truncated, res.error_text.splitlines()


def _text(path: bytes) -> str:
    try:
        return path.decode()
    except UnicodeDecodeError:
        raise RemoteError(f"The path {path!r} on the host is not valid UTF-8.") from None
