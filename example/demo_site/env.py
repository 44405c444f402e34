"""Settings from ``example/.env`` (or ``$DRS_DEMO_ENV``); the environment wins over the file.

from demo_site.env import env
env("PORT", "8000")
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent.parent


def env_file() -> Path:
    return Path(os.environ.get("DRS_DEMO_ENV") or EXAMPLE_DIR / ".env")


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments and blank lines are skipped, quotes removed."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


@functools.cache
def _file_values() -> dict[str, str]:
    return read_env(env_file())


def env(key: str, default: str = "") -> str:
    """The environment's value, else the file's, else ``default`` (empty counts as unset)."""
    return os.environ.get(key) or _file_values().get(key) or default
