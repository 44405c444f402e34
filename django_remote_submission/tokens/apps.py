from django.apps import AppConfig


class TokensConfig(AppConfig):
    name = "django_remote_submission.tokens"
    label = "drs_tokens"
    verbose_name = "API tokens"
    default_auto_field = "django.db.models.BigAutoField"
