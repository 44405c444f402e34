"""What a job asks of a batch scheduler: partition, walltime, CPUs, memory, GPUs, account and
extra directives; checked here, wherever they come from.

    resources.clean({"walltime": "0:05:00", "memory": "2G", "cpus": 4})
    # {"walltime": 300, "memory": 2048, "cpus": 4}
    resources.clean({"partition": "debug\\n#SBATCH --uid=0"})
    # ResourceError: {"partition": "Only letters, digits and . _ - + @ : , are allowed."}
    resources.effective(server.resources, interpreter.resources, job_asked, timeout=90)

A server and an interpreter may hold defaults (``Server.resources``, ``Interpreter.resources``);
what a submission asks overrides them field by field. A submission's ``timeout`` becomes the
walltime when none is given. Values reach the scheduler as words of its command line, never
through a shell or a script; still, a value that could end a directive line (a newline, a
blank in a name) is refused here with a message that names the field, so that a mistake is
reported when it is made rather than by the scheduler later.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

FIELDS = ("partition", "walltime", "cpus", "memory", "gpus", "account", "extra")
LABELS = {
    "partition": "partition / queue",
    "walltime": "walltime",
    "cpus": "CPUs",
    "memory": "memory",
    "gpus": "GPUs",
    "account": "account",
    "extra": "extra directives",
}
NAME = re.compile(r"[A-Za-z0-9_.+@:,-]{1,128}")
WALLTIME = re.compile(r"(?:(\d{1,4})-)?(\d{1,5}):(\d{2}):(\d{2})")
MEMORY = re.compile(r"(\d{1,12})\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
MAX_WALLTIME = 10 * 366 * 24 * 3600
MAX_COUNT = 1_000_000
MAX_EXTRA = 50
MAX_DIRECTIVE = 1024


class ResourceError(ValueError):
    """Invalid resources; ``errors`` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{LABELS.get(k, k)}: {v}" for k, v in errors.items()))


def _name(value) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError("Only letters, digits and . _ - + @ : , are allowed (no blanks).")
    return value


def _count(value, least: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("A whole number.")
    if not least <= value <= MAX_COUNT:
        raise ValueError(f"A whole number from {least} to {MAX_COUNT}.")
    return value


def parse_walltime(value) -> int:
    """Seconds, from seconds (a number) or ``[D-]H:MM:SS``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value):
        value = math.ceil(value)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := WALLTIME.fullmatch(value.strip())):
        days, hours, minutes, secs = (int(g or 0) for g in match.groups())
        if minutes > 59 or secs > 59:
            raise ValueError("Minutes and seconds go up to 59.")
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError('Seconds, or "H:MM:SS" / "D-H:MM:SS" (e.g. "0:30:00").')
    if not 0 < seconds <= MAX_WALLTIME:
        raise ValueError("More than zero and at most ten years.")
    return seconds


def format_walltime(seconds: int) -> str:
    """``H:MM:SS`` (hours may pass 24), as in "walltime exceeded (limit 0:05:00)"."""
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def parse_memory(value) -> int:
    """MiB, from MiB (a number) or a size such as ``512M``, ``4G``, ``1T``."""
    if isinstance(value, int) and not isinstance(value, bool):
        mib = value
    elif isinstance(value, str) and (match := MEMORY.fullmatch(value.strip())):
        mib = math.ceil(int(match.group(1)) * MEMORY_UNITS[match.group(2).upper()])
    else:
        raise ValueError('MiB, or a size such as "512M", "4G", "1T".')
    if not 0 < mib <= MAX_COUNT * 1024:
        raise ValueError("More than zero.")
    return mib


def format_memory(mib: int) -> str:
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def parse_directive(line) -> list[str]:
    """The words of one directive, as written after ``#SBATCH`` or ``#$``."""
    if not isinstance(line, str):
        raise ValueError("Each directive is a line of text.")
    if len(line) > MAX_DIRECTIVE:
        raise ValueError(f"A directive is at most {MAX_DIRECTIVE} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in line):
        raise ValueError(
            f"{line!r}: one directive per line, without newlines or control characters."
        )
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError(f"{line!r}: {exc}.") from None
    if not words or not words[0].startswith("-"):
        raise ValueError(f"{line!r}: a directive starts with an option (-x or --name).")
    return words


def _extra(value) -> list[str]:
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    if not isinstance(value, list) or len(value) > MAX_EXTRA:
        raise ValueError(f"A list of at most {MAX_EXTRA} directives.")
    for line in value:
        parse_directive(line)
    return [line.strip() for line in value]


PARSERS = {
    "partition": _name,
    "account": _name,
    "walltime": parse_walltime,
    "memory": parse_memory,
    "cpus": lambda v: _count(v, 1),
    "gpus": lambda v: _count(v, 0),
    "extra": _extra,
}


def clean(value, reserved=None) -> dict:
    """The resources in their stored form (walltime in s, memory in MiB); ``ResourceError``
    names every field that is wrong. Blank values (None, "", []) are left out.

    ``reserved(words)``: the scheduler's own check of an extra directive (it returns why the
    app must set that option itself, or "").
    """
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ResourceError({"resources": "An object of partition, walltime, cpus, ..."})
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in PARSERS:
            errors[key] = f"Unknown resource: use {', '.join(FIELDS)}."
            continue
        if raw in (None, "", []):
            continue
        try:
            out[key] = PARSERS[key](raw)
        except ValueError as exc:
            errors[key] = str(exc)
    if "extra" in out and reserved is not None:
        for line in out["extra"]:
            why = reserved(parse_directive(line))
            if why:
                errors["extra"] = f"{line!r}: {why}"
                break
    if errors:
        raise ResourceError(errors)
    return out


def effective(*layers: dict | None, timeout: float | None = None) -> dict:
    """Later layers override earlier ones field by field; ``extra`` directives add up. The
    ``timeout`` of a submission is the walltime when no layer sets one."""
    out: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key == "extra":
                out["extra"] = [*out.get("extra", []), *value]
            else:
                out[key] = value
    if "walltime" not in out and timeout:
        out["walltime"] = math.ceil(timeout)
    return out


def describe(res: dict) -> list[tuple[str, str]]:
    """``[(label, value), ...]`` for pages."""
    shown = {
        "walltime": format_walltime,
        "memory": format_memory,
        "extra": lambda v: " · ".join(v),
    }
    return [(LABELS[k], shown.get(k, str)(res[k])) for k in FIELDS if k in res]
