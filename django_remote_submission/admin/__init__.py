"""The admin: servers and interpreters (``servers``), jobs, logs, results and the audit trail
(``jobs``), job templates (``templates``). Importing this package registers them with the
default admin site."""

from . import jobs, servers, templates  # noqa: F401  (registers the ModelAdmins)
