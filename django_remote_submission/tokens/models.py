"""``ApiToken``: a user's personal API token, stored as knox stores its tokens (a digest).

token, key = ApiToken.objects.create(user, expiry=timedelta(days=30), prefix=PREFIX,
                                     name="cron", read_only=True)
key            # "drs_5d1c..." : given to the user once, never stored
token.expired  # False until token.expiry
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

if not apps.is_installed("knox"):
    raise ImproperlyConfigured(
        'django_remote_submission.tokens needs django-rest-knox: add "knox" to INSTALLED_APPS.'
    )

from knox.models import AbstractAuthToken  # noqa: E402
from knox.settings import CONSTANTS  # noqa: E402

# Every key starts with it: the API tells its tokens from rest_framework.authtoken's keys,
# and secret scanners can find keys pasted where they should not be.
PREFIX = "drs_"


class ApiToken(AbstractAuthToken):
    """A personal API token: named, expiring, optionally read-only."""

    # knox keys its tokens by digest; an id names a token in URLs and in the audit trail.
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.CASCADE,
        related_name="drs_api_tokens",
        verbose_name=_("user"),
    )
    name = models.CharField(_("name"), max_length=100, help_text=_("What the token is for."))
    read_only = models.BooleanField(
        _("read-only"),
        default=False,
        help_text=_("Only reads (GET, HEAD, OPTIONS): cannot create, submit or cancel jobs."),
    )
    last_used = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_key}…)"

    @property
    def expired(self) -> bool:
        return self.expiry is not None and self.expiry <= timezone.now()
