"""Pages: jobs (``jobs``), downloads (``files``), each user's SSH keys (``keys``) and job
templates (``templates``).

# urls.py of a project
path("", include("django_remote_submission.urls"))    # namespace "drs"
LOGIN_URL = "drs:login"                                # or the project's own login page
"""

from .dashboard import dashboard
from .files import job_log, result_download, result_inline
from .jobs import (
    job_cancel,
    job_create,
    job_detail,
    job_list,
    job_results,
    job_row,
    job_submit,
    visible_jobs,
)
from .keys import account_edit, key_create, key_install, key_list, key_remove
from .templates import template_list, template_run

__all__ = [
    "dashboard",
    "account_edit",
    "job_cancel",
    "job_create",
    "job_detail",
    "job_list",
    "job_log",
    "job_results",
    "job_row",
    "job_submit",
    "key_create",
    "key_install",
    "key_list",
    "key_remove",
    "result_download",
    "template_list",
    "template_run",
    "result_inline",
    "visible_jobs",
]
