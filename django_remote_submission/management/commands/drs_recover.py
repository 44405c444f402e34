"""``manage.py drs_recover``: resume runs whose worker died (no heartbeat for 3 intervals).

manage.py drs_recover            # resume them here, one after the other
manage.py drs_recover --queue    # hand them to the Celery workers
"""

from django.core.management.base import BaseCommand

from ... import runner


class Command(BaseCommand):
    help = "Resume jobs left submitted, queued or running by a worker that stopped."

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="store_true", help="Queue resume_job tasks instead.")

    def handle(self, *args, queue=False, **options):
        pks = runner.stale_jobs()
        if not pks:
            self.stdout.write("No stale jobs.")
        for pk in pks:
            if queue:
                from ...tasks import resume_job

                resume_job.delay(pk)
                self.stdout.write(f"Job {pk}: queued for resumption.")
            else:
                runner.resume(pk)
                job = runner.Job.objects.get(pk=pk)
                self.stdout.write(f"Job {pk}: {job.status} {job.error}".rstrip())
