"""Run scripts on remote hosts over SSH from Django, with live logs and results.

from django_remote_submission.models import Job
from django_remote_submission.tasks import submit_job_to_server

submit_job_to_server.delay(job.pk, password=request.POST["password"])
"""

__version__ = "3.0.0"
