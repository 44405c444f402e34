"""A worker's warm shutdown: its runs hand their jobs over instead of following them to the end.

    shutdown.draining.set()          # tasks.py, when Celery starts a warm shutdown (SIGTERM)
    shutdown.draining.is_set()       # runner/run.py, in the loop that follows a job

A job runs detached on its host, so a worker that stops need not wait for it: each run stores
the whole lines it has read, releases the job (see ``runner.JobRun.hand_over``) and returns,
and another worker resumes following it from the stored offsets.

The flag is one byte of anonymous shared memory made at import, before Celery forks the
processes of a prefork pool, so those children see the main process set it (a threads pool
shares it anyway).
"""

from __future__ import annotations

import mmap


class SharedFlag:
    """A boolean shared with the processes forked after it was made."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: forked children share it

    def set(self) -> None:
        self._memory[0] = 1

    def clear(self) -> None:
        self._memory[0] = 0

    def is_set(self) -> bool:
        return self._memory[0] == 1


draining = SharedFlag()
