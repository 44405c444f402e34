"""How a job's process is started and watched on a host: ``direct`` (a detached process),
``slurm`` and ``sge`` (batch schedulers), behind one contract (``base.Launcher``).

    launcher_for(server.scheduler, transport, board=f"{server.pk}:{login}")
"""

from __future__ import annotations

from ..remote.base import Transport
from .base import Launcher
from .batch import BatchLauncher
from .direct import DirectLauncher
from .sge import SGELauncher
from .slurm import SlurmLauncher

__all__ = ["LAUNCHERS", "BatchLauncher", "Launcher", "launcher_for", "reserved_check"]

LAUNCHERS: dict[str, type[Launcher]] = {
    "direct": DirectLauncher,
    "slurm": SlurmLauncher,
    "sge": SGELauncher,
}


def launcher_for(scheduler: str, transport: Transport, board: str = "") -> Launcher:
    """The launcher of a server's scheduler (``Server.scheduler``)."""
    try:
        cls = LAUNCHERS[scheduler or "direct"]
    except KeyError:
        raise ValueError(f"Unknown scheduler {scheduler!r}: use {', '.join(LAUNCHERS)}.") from None
    return cls(transport, board)


def reserved_check(scheduler: str):
    """The scheduler's check of extra directives (see ``resources.clean``), or None."""
    cls = LAUNCHERS.get(scheduler) if isinstance(scheduler, str) else None
    return getattr(cls, "reserved", None) if cls is not None and cls.queues else None
