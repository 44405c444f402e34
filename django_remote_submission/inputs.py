"""What a job gets besides its program: arguments, environment variables and input files.

    inputs.clean_arguments(["--n", "3", "a b"])        # the list, or ValueError saying why
    inputs.clean_environment({"MODE": "fast"})         # the dict, or ValueError
    inputs.clean_path("data/x.csv")                    # "data/x.csv"; "../x" -> ValueError
    inputs.stage(transport, "drs-jobs/x", run_dir, job.inputs.all(), tick=beat)

Arguments follow the program on its command line and variables are set for it, each one
argv word (see ``launchers.base.Spec.command``): nothing a user types is ever read by a
shell. Input files are copied from the project's storage into the job's remote directory
before launch, in bounded chunks, and before the launcher's snapshot of the directory, so
that an input comes back as a result only when the job changed it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable

from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from .conf import drs_settings
from .limits import NAME_PART_MAX, human_size
from .remote.base import RemoteError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables the run itself sets (DRS_RUN_ID marks the run's processes for a cancel).
RESERVED_PREFIX = "DRS_"
PATH_MAX = 1024  # bytes of an input's path
CHUNK = 1 << 20  # bytes read from the storage at a time while staging


class InputRefused(ValueError):
    """An input file that cannot be added; ``field`` is what is wrong: "path" or "file"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}.")
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL character, which a command line cannot hold.")
    return value


def clean_arguments(value) -> list[str]:
    """The job's arguments, checked: a list of strings without NUL, within
    ``DRS["ARGUMENTS_MAX_BYTES"]`` together. ValueError says what is wrong."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError("Arguments must be a list of strings.")
    words = [_text(v, f"Argument {i + 1}") for i, v in enumerate(value)]
    limit = int(drs_settings.ARGUMENTS_MAX_BYTES)
    size = sum(len(w.encode("utf-8", "surrogatepass")) + 1 for w in words)
    if size > limit:
        raise ValueError(
            f"The arguments take {size} bytes, over the limit of {limit} "
            "(DRS['ARGUMENTS_MAX_BYTES'])."
        )
    return words


def given(arguments=None, environment=None) -> dict:
    """The job fields a submission sets (``submit_job_to_server(..., arguments=...,
    environment=...)``), checked; ValueError says what is wrong."""
    fields: dict[str, object] = {}
    if arguments is not None:
        fields["arguments"] = clean_arguments(arguments)
    if environment is not None:
        fields["environment"] = clean_environment(environment)
    return fields


def apply(job, fields: dict) -> None:
    """Store the fields a submission set on its job (the run has its lease: no one else
    writes the job meanwhile)."""
    if not fields:
        return
    type(job).objects.filter(pk=job.pk).update(**fields)
    for name, value in fields.items():
        setattr(job, name, value)


def name_refusal(name) -> str | None:
    """Why ``name`` cannot be an environment variable of a job, or None."""
    if not isinstance(name, str) or not NAME.match(name):
        return (
            f"{name!r} is not a valid variable name (letters, digits and _, not starting "
            "with a digit)."
        )
    if name.upper().startswith(RESERVED_PREFIX):
        return f"{name!r} is reserved: names starting with {RESERVED_PREFIX} are set by the app."
    return None


def clean_environment(value) -> dict[str, str]:
    """The job's environment variables, checked: valid, unreserved names, text values
    without NUL, within ``DRS["ENVIRONMENT_MAX_BYTES"]`` together."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("The environment must be a mapping of names to values.")
    for name in value:
        refusal = name_refusal(name)
        if refusal:
            raise ValueError(refusal)
    env = {name: _text(v, f"The value of {name}") for name, v in value.items()}
    limit = int(drs_settings.ENVIRONMENT_MAX_BYTES)
    size = sum(len(f"{k}={v}".encode("utf-8", "surrogatepass")) + 1 for k, v in env.items())
    if size > limit:
        raise ValueError(
            f"The environment takes {size} bytes, over the limit of {limit} "
            "(DRS['ENVIRONMENT_MAX_BYTES'])."
        )
    return env


def clean_path(name) -> str:
    """An input's path relative to the job's directory (``data/x.csv``). Absolute paths,
    ``..`` and anything else that could leave the directory are refused (ValueError)."""
    if not isinstance(name, str) or not name:
        raise ValueError("An input needs a file name.")
    if name.startswith("/") or name.startswith("~"):
        raise ValueError(f"{name!r}: an input's name must be relative to the job's directory.")
    if "\\" in name:
        raise ValueError(f"{name!r}: use '/' between directories, not '\\'.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"{name!r}: the name contains control characters.")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{name!r} names no file.")
    if ".." in parts:
        raise ValueError(f"{name!r}: '..' would leave the job's directory.")
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_PART_MAX for p in parts):
        raise ValueError(f"{name!r}: a part of the name is longer than {NAME_PART_MAX} bytes.")
    path = "/".join(parts)
    if len(path.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise ValueError(f"The name is longer than {PATH_MAX} bytes.")
    return path


def size_refusal(size: int, others: int, count: int) -> str | None:
    """Why one more input of ``size`` bytes cannot be added to a job whose ``count`` inputs
    take ``others`` bytes, or None."""
    one, total = int(drs_settings.INPUT_MAX_BYTES), int(drs_settings.INPUTS_MAX_BYTES)
    most = int(drs_settings.INPUTS_MAX_FILES)
    if size > one:
        size_, one_ = _sizes(size, one)
        return f"The file is {size_}, over the limit of {one_} per input (DRS['INPUT_MAX_BYTES'])."
    if others + size > total:
        sum_, total_ = _sizes(others + size, total)
        return (
            f"The job's inputs would take {sum_}, over the limit of {total_} "
            "(DRS['INPUTS_MAX_BYTES'])."
        )
    if count + 1 > most:
        return f"A job has at most {most} input files (DRS['INPUTS_MAX_FILES'])."
    return None


def measure(file) -> tuple[int, str]:
    """(size, SHA-256) of a Django ``File``, read in chunks; it is left at its start."""
    digest, size = hashlib.sha256(), 0
    file.seek(0)
    for chunk in file.chunks(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return size, digest.hexdigest()


def files_refusal(files: list[tuple[str, int]], program: str) -> str | None:
    """Why new inputs ``[(path, size), ...]`` of a job whose program file is ``program``
    cannot be added together, or None (the checks ``services.add_input`` makes, in advance)."""
    seen: list[str] = []
    total = 0
    for path, size in files:
        try:
            path = clean_path(path)
        except ValueError as exc:
            return str(exc)
        if path == program:
            return f"{path!r} is the job's program file; give the input another name."
        if path in seen:
            return f"{path!r} is given twice."
        refusal = size_refusal(size, total, len(seen))
        if refusal:
            return refusal
        seen.append(path)
        total += size
    return None


def _sizes(size: int, limit: int) -> tuple[str, str]:
    """Both sizes for humans; in bytes when rounding would make them look equal."""
    shown = human_size(size), human_size(limit)
    return shown if shown[0] != shown[1] else (f"{size} bytes", f"{limit} bytes")


# --- uploads -------------------------------------------------------------------------------


class UploadLimit(FileUploadHandler):
    """The first upload handler of the requests that bring input files: a file is dropped
    as soon as it passes ``DRS["INPUT_MAX_BYTES"]`` (the rest of it is read and thrown
    away, never stored), and ``refused_uploads(request)`` says so.

        request.upload_handlers.insert(0, UploadLimit(request))   # before the body is read
    """

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        limit = int(drs_settings.INPUT_MAX_BYTES)
        if start + len(raw_data) > limit:
            name = self.file_name or "the file"
            refused = self.request.__dict__.setdefault("drs_refused_uploads", {})
            refused[self.field_name] = (
                f"{name!r} is over the limit of {human_size(limit)} per input "
                "(DRS['INPUT_MAX_BYTES'])."
            )
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int):
        return None  # the next handler makes the file


def limit_uploads(request) -> None:
    """Put ``UploadLimit`` first on a Django request whose body is not read yet."""
    request.upload_handlers.insert(0, UploadLimit(request))


def refused_uploads(request) -> dict[str, str]:
    """{field: why its file was dropped} of a request read with ``UploadLimit``."""
    return getattr(request, "drs_refused_uploads", {})


# --- staging -------------------------------------------------------------------------------

# Whether the run directory exists (a launch that started already: nothing to stage), else
# create the directories of the inputs. Args: run dir subdir... Prints "run" or "ok".
PREPARE = r"""
run=$1 d=$2; shift 2
if [ -e "$run" ] || [ -L "$run" ]; then echo run; exit 0; fi
mkdir -p -- "$d" || exit 10
cd -- "$d" || exit 10
for s in "$@"; do mkdir -p -- "$s" || { printf '%s\n' "$s" >&2; exit 11; }; done
echo ok
"""

# Write stdin into one input file (through a temporary name: a half-written input is never
# left under its own name) and print its size. Args: dir path.
WRITE = r"""
cd -- "$1" || exit 10
p=$2 t=$2.drs-part.$$
rm -f -- "$t"
cat > "$t" || { rm -f -- "$t"; exit 12; }
mv -fT -- "$t" "$p" || { rm -f -- "$t"; exit 12; }
wc -c < "$p"
"""

ERRORS = {
    10: "Cannot create or enter the remote directory {dir!r}",
    11: "Cannot create the directory of an input in {dir!r}",
    12: "Cannot write the input {path!r} in the remote directory {dir!r}",
}


class StagingError(RemoteError):
    """An input could not be copied to the host; the message says which and why."""


class _Ticking:
    """A file whose reads, made in the thread that made it, call ``tick`` (the runner's
    heartbeat while a large input is sent)."""

    def __init__(self, file, tick: Callable[[], object] | None) -> None:
        self.file, self.tick = file, tick
        self.thread = threading.get_ident()

    def read(self, n: int = CHUNK) -> bytes:
        if self.tick is not None and threading.get_ident() == self.thread:
            self.tick()
        return self.file.read(min(n, CHUNK) if n and n > 0 else CHUNK)


def _sh(script: str, *args: object) -> list[str]:
    return ["sh", "-c", script, "sh", *map(str, args)]


def stage(transport, directory: str, run_dir: str, inputs: Iterable, tick=None) -> int:
    """Copy the inputs (``Input`` rows) into ``directory`` on the host, unless the run
    directory exists already (the run started: the inputs are there). Returns how many
    were copied. ``RemoteError`` (from the transport) or ``StagingError``."""
    rows = list(inputs)
    if not rows:
        return 0
    subdirs = sorted({r.path.rsplit("/", 1)[0] for r in rows if "/" in r.path})
    res = transport.run(_sh(PREPARE, run_dir, directory, *subdirs), timeout=120)
    if res.exit_code != 0:
        message = ERRORS.get(res.exit_code, "Cannot prepare the inputs in {dir!r}")
        raise RemoteError(f"{message.format(dir=directory)}: {res.error_text[:500]}")
    if res.text.strip() == "run":
        return 0
    for row in rows:
        _write(transport, directory, row, tick)
    return len(rows)


def _write(transport, directory: str, row, tick) -> None:
    try:
        f = row.file.open("rb")
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or "no file"  # not the storage's own path
        message = f"The stored file of the input {row.path!r} cannot be read: {why}."
        raise StagingError(message) from None
    with f:
        # The whole file is sent as the command starts; the timeout is for what follows.
        res = transport.run(
            _sh(WRITE, directory, row.path), stdin=_Ticking(f, tick), timeout=600, tick=tick
        )
    if res.exit_code != 0:
        message = ERRORS.get(res.exit_code, "Cannot write the input {path!r} in {dir!r}")
        raise RemoteError(f"{message.format(dir=directory, path=row.path)}: {res.error_text[:500]}")
    written = res.text.strip()
    if written != str(row.size):
        raise StagingError(
            f"The input {row.path!r} arrived with {written or 'no'} bytes on the host, "
            f"not {row.size}."
        )
