"""The app's models: where jobs run (``servers``), what runs and what came back (``jobs``),
and the audit trail (``audit``)."""

from .audit import Event
from .jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    FRESH_RUN,
    STALE_BEATS,
    TRANSITIONS,
    Input,
    Job,
    JobQuerySet,
    Log,
    Result,
    Status,
    job_input_path,
    job_result_path,
    stale_before,
)
from .servers import (
    Interpreter,
    Scheduler,
    Server,
    ServerAccount,
    TimeStampedModel,
    validate_host_key,
)
from .templates import JobTemplate, ParameterType, PassedAs, TemplateParameter

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "FRESH_RUN",
    "STALE_BEATS",
    "TRANSITIONS",
    "Event",
    "Input",
    "Interpreter",
    "Job",
    "JobQuerySet",
    "JobTemplate",
    "ParameterType",
    "PassedAs",
    "TemplateParameter",
    "Log",
    "Result",
    "Scheduler",
    "Server",
    "ServerAccount",
    "Status",
    "TimeStampedModel",
    "job_input_path",
    "job_result_path",
    "stale_before",
    "validate_host_key",
]
