"""The admin: servers and interpreters (``servers``), jobs, logs, results and the audit trail
(``jobs``). Importing this package registers them with the default admin site."""

from . import jobs, servers  # noqa: F401  (registers the ModelAdmins)
