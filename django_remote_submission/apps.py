from django.apps import AppConfig


class DjangoRemoteSubmissionConfig(AppConfig):
    name = "django_remote_submission"
    verbose_name = "Remote submission"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import archive, checks  # noqa: F401  (system checks; archive files follow rows)
