"""How a job's process is started and watched on a host (``direct``: a detached process)."""
