from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class DjangoRemoteSubmissionConfig(AppConfig):
    name = "django_remote_submission"
    verbose_name = "Remote submission"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for their receivers: system checks, archive files that follow their rows,
        # metrics, and the hand-out of free slots when a job ends.
        from celery.signals import worker_process_shutdown, worker_shutdown

        from . import archive, checks, metrics, remote, scheduling  # noqa: F401
        from .signals import react
        from .upgrade import upgrade_before_migrate

        # A database of 2.1.0 is brought to 0001's schema before migrations run.
        pre_migrate.connect(upgrade_before_migrate, sender=self, dispatch_uid="drs-upgrade-2.1.0")
        # A job that held a slot on its server ended: start the next waiting job.
        react(scheduling.job_state_changed)
        react(metrics.job_state_changed)
        remote.watch(metrics.PoolWatcher())
        worker_process_shutdown.connect(metrics.process_ended, dispatch_uid="drs-metrics")
        worker_shutdown.connect(metrics.process_ended, dispatch_uid="drs-metrics")
