"""The app's models: where jobs run (``servers``), what runs and what came back (``jobs``),
and the audit trail (``audit``)."""

from .audit import Event
from .jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    Job,
    JobQuerySet,
    Log,
    Result,
    Status,
    job_result_path,
)
from .servers import (
    Interpreter,
    Scheduler,
    Server,
    ServerAccount,
    TimeStampedModel,
    validate_host_key,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "TRANSITIONS",
    "Event",
    "Interpreter",
    "Job",
    "JobQuerySet",
    "Log",
    "Result",
    "Scheduler",
    "Server",
    "ServerAccount",
    "Status",
    "TimeStampedModel",
    "job_result_path",
    "validate_host_key",
]
