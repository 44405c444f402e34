"""The audit trail: every state change, submission, cancel, credential or access change, and
the life of each API token (made, first used, revoked).

    Event.objects.create(action=Event.Action.submit, job=job, actor=request.user,
                         login="ada", client="192.0.2.7")
    job.events.all()          # the job's timeline, oldest first

Rows are written by ``audit.record`` (and by the runner for state changes) and never edited;
the admin and the API show them read-only.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .jobs import Job
from .servers import Server


class Event(models.Model):
    """One entry of the audit trail."""

    class Action(models.TextChoices):
        state = "state", _("state change")
        create = "create", _("job created")
        edit = "edit", _("job edited")
        submit = "submit", _("submitted")
        resubmit = "resubmit", _("resubmitted")
        cancel = "cancel", _("cancel requested")
        delete = "delete", _("job deleted")
        refused = "refused", _("refused")
        key_created = "key_created", _("key created")
        key_installed = "key_installed", _("key installed")
        key_removed = "key_removed", _("key removed")
        account = "account", _("login changed")
        access = "access", _("access changed")
        credentials = "credentials", _("stored credentials changed")
        token_created = "token_created", _("API token created")
        token_revoked = "token_revoked", _("API token revoked")
        token_used = "token_used", _("API token first used")

    time = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    job = models.ForeignKey(
        Job,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
        verbose_name=_("job"),
    )
    job_title = models.CharField(_("job title"), max_length=250, blank=True)
    server = models.ForeignKey(
        Server,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
        verbose_name=_("server"),
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="drs_events",
        verbose_name=_("actor"),
        help_text=_("Who did it; blank: a worker."),
    )
    from_state = models.CharField(_("from"), max_length=16, blank=True)
    to_state = models.CharField(_("to"), max_length=16, blank=True)
    login = models.CharField(_("login used"), max_length=150, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    client = models.GenericIPAddressField(_("client address"), null=True, blank=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["time", "id"]
        indexes = [models.Index(fields=["job", "time"])]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.get_action_display()}"
