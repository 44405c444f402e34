"""Admin of jobs (submit, resubmit and cancel through ``services``, the live page, the
history), their logs and results, and the audit trail (read-only).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import audit, inputs, policy, services
from ..forms import InputAdminForm, JobAdminForm
from ..models import FINAL_STATES, Event, Input, Job, Log, Result, Status
from .actions import action_form, login_page

LOG_INLINE_ROWS = 200
# What a job's run decides: shown on its admin page, never edited there.
STATE_FIELDS = (
    "live_page",
    "status",
    "exit_code",
    "error",
    "started_at",
    "finished_at",
    "scheduler_id",
    "scheduler_state",
    "wait_reason",
    "submitted_at",
    "admitted_at",
    "uuid",
    "created",
    "modified",
)


class LatestRowsFormSet(BaseInlineFormSet):
    """Only the last LOG_INLINE_ROWS rows: a job may have millions."""

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            rows = super().get_queryset()
            ids = list(rows.order_by("-pk").values_list("pk", flat=True)[:LOG_INLINE_ROWS])
            self._latest = rows.filter(pk__gte=ids[-1]).order_by("pk") if ids else rows.none()
        return self._latest


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ResultInline(ReadOnlyInline):
    model = Result
    fields = ("remote_filename", "size", "sha256", "download")
    readonly_fields = fields

    @admin.display(description=_("download"))
    def download(self, obj: Result) -> str:
        url = reverse("drs:result-download", args=[obj.job_id, obj.pk])
        return format_html('<a href="{}">{}</a>', url, _("download"))


class InputInline(admin.TabularInline):
    """Input files: added and removed here, copied into the job's directory before it runs."""

    model = Input
    form = InputAdminForm
    extra = 1
    fields = ("path", "file", "size", "sha256")
    readonly_fields = ("size", "sha256")


class EventInline(ReadOnlyInline):
    model = Event
    fields = ("time", "action", "from_state", "to_state", "actor", "login", "reason", "client")
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = _("history")


class LogInline(ReadOnlyInline):
    model = Log
    formset = LatestRowsFormSet
    fields = ("time", "stream", "text")
    readonly_fields = fields
    verbose_name_plural = format_lazy(
        _("logs (the latest {} rows; the job's page has all)"), LOG_INLINE_ROWS
    )

    @admin.display(description=_("content"))
    def text(self, obj: Log) -> str:
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.content)


def _short_time(value) -> str:
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else "–"


def _status_badge(job: Job) -> str:
    colours = {
        "initial": "#98a2b3",
        "waiting": "#b54708",
        "submitted": "#7a5af8",
        "queued": "#0e9384",
        "running": "#1570ef",
        "success": "#12b76a",
        "failure": "#d92d20",
        "cancelled": "#f79009",
    }
    badge = format_html(
        '<span style="color:#fff;background:{};border-radius:9px;padding:1px 8px">{}</span>',
        colours.get(job.status, "#98a2b3"),
        job.get_status_display(),
    )
    if job.status == Status.waiting:
        return format_html("{}<br><small>{}</small>", badge, job.wait_reason)
    if not job.scheduler_id:
        return badge
    # A batch job: the scheduler's id and what it last said, under the badge.
    return format_html(
        '{}<br><small title="{}">{} {}</small>',
        badge,
        _("scheduler job id and state"),
        job.scheduler_id,
        job.scheduler_state,
    )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    form = JobAdminForm
    # Short cells, so that every column shows beside the filters on a 1280 px screen.
    list_display = (
        "title",
        "status_badge",
        "owner",
        "server_title",
        "interpreter_name",
        "created_at",
        "started",
        "finished",
        "exit_code",
        "live_page",
    )
    list_filter = ("status", "server", "owner")
    list_select_related = ("owner", "server", "interpreter")
    search_fields = ("title", "program", "remote_directory", "owner__username", "server__title")
    date_hierarchy = "created"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "title",
                    "owner",
                    "server",
                    "interpreter",
                    "program",
                    "remote_directory",
                    "remote_filename",
                    "arguments",
                    "environment",
                    "priority",
                )
            },
        ),
        (
            _("State"),
            {"fields": STATE_FIELDS},
        ),
    )
    readonly_fields = STATE_FIELDS
    inlines = [InputInline, ResultInline, EventInline, LogInline]
    actions = ["submit_jobs", "resubmit_jobs", "cancel_jobs"]

    def view_on_site(self, obj: Job) -> str:
        return reverse("drs:job-detail", args=[obj.pk])

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Job) -> str:
        return _status_badge(obj)

    @admin.display(description=_("server"), ordering="server__title")
    def server_title(self, obj: Job) -> str:
        return obj.server.title

    @admin.display(description=_("interpreter"), ordering="interpreter__name")
    def interpreter_name(self, obj: Job) -> str:
        return obj.interpreter.name

    @admin.display(description=_("created"), ordering="created")
    def created_at(self, obj: Job) -> str:
        return _short_time(obj.created)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: Job) -> str:
        return _short_time(obj.started_at)

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, obj: Job) -> str:
        return _short_time(obj.finished_at)

    @admin.display(description=_("live page"))
    def live_page(self, obj: Job) -> str:
        if not obj.pk:
            return "–"
        return format_html('<a href="{}">{}</a>', self.view_on_site(obj), _("live log"))

    def save_model(self, request, obj: Job, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change:
            what = ", ".join(sorted(form.changed_data))
            audit.record(Event.Action.edit, job=obj, actor=request.user, reason=what)
        else:
            audit.record(Event.Action.create, job=obj, actor=request.user)

    def save_formset(self, request, form, formset, change: bool) -> None:
        if formset.model is not Input:
            return super().save_formset(request, form, formset, change)
        for row in formset.save(commit=False):
            if row.file and not row.file._committed:
                row.size, row.sha256 = inputs.measure(row.file)
            row.save()
        for row in formset.deleted_objects:
            row.file.delete(save=False)
            row.delete()

    def _submit(self, request, queryset, allowed, title: str):
        apply = "apply" in request.POST
        form = action_form(request, apply)
        if not (apply and form.is_valid()):
            return login_page(request, self, form, list(queryset), title, title)
        queued, skipped, errors = 0, [], set()
        for job in queryset.select_related("server"):
            if job.status not in allowed:
                skipped.append(f"{job.title} ({job.get_status_display()})")
                continue
            again = services.resubmit if job.is_final else services.submit
            try:
                error = again(job, request.user, request=request, **form.login()).error
            except (policy.Refused, services.JobBusy) as exc:
                error = f"{job.title}: {exc}"
            if error:
                errors.add(error)
            else:
                queued += 1
        for error in sorted(errors):
            self.message_user(request, error, messages.ERROR)
        self._report(
            request,
            ngettext("Queued %(count)d job.", "Queued %(count)d jobs.", queued) % {"count": queued},
            queued,
            _("Skipped: %(jobs)s."),
            skipped,
        )
        return None

    def _report(self, request, done_text: str, done: int, skipped_text: str, skipped: list):
        """One success message for what an action did, one warning for what it left alone."""
        if done:
            self.message_user(request, done_text, messages.SUCCESS)
        if skipped:
            self.message_user(
                request, skipped_text % {"jobs": ", ".join(skipped)}, messages.WARNING
            )

    @admin.action(description=_("Submit to server"), permissions=["change"])
    def submit_jobs(self, request, queryset):
        return self._submit(request, queryset, {Status.initial}, _("Submit to server"))

    @admin.action(description=_("Resubmit finished jobs"), permissions=["change"])
    def resubmit_jobs(self, request, queryset):
        return self._submit(request, queryset, FINAL_STATES, _("Resubmit"))

    @admin.action(description=_("Cancel"), permissions=["change"])
    def cancel_jobs(self, request, queryset):
        cancelled, skipped = 0, []
        errors = set()
        for job in queryset:
            if not job.can_cancel:
                skipped.append(f"{job.title} ({job.get_status_display()})")
                continue
            try:
                error = services.cancel(job, request.user, request=request).error
            except (policy.Refused, services.JobBusy) as exc:
                error = f"{job.title}: {exc}"
            if error:
                errors.add(error)
            else:
                cancelled += 1
        self._report(
            request,
            ngettext("Cancelling %(count)d job.", "Cancelling %(count)d jobs.", cancelled)
            % {"count": cancelled},
            cancelled,
            _("Not running: %(jobs)s."),
            skipped,
        )
        for error in sorted(errors):
            self.message_user(request, error, messages.ERROR)


# --- logs and results ------------------------------------------------------------------------


@admin.register(Log)
class LogAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "stream", "time", "short_content")
    list_filter = ("stream",)
    list_select_related = ("job",)
    search_fields = ("content", "job__title")
    raw_id_fields = ("job",)
    show_full_result_count = False

    @admin.display(description=_("content"))
    def short_content(self, obj: Log) -> str:
        text = obj.content.rstrip("\n")
        return text if len(text) <= 100 else text[:100] + "…"

    def has_add_permission(self, request) -> bool:
        return False  # logs come from jobs


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    list_display = ("remote_filename", "job", "size", "sha256", "created", "download")
    list_select_related = ("job",)
    search_fields = ("remote_filename", "job__title", "sha256")
    raw_id_fields = ("job",)
    readonly_fields = ("size", "sha256", "download")

    @admin.display(description=_("download"))
    def download(self, obj: Result) -> str:
        if not obj.pk:
            return "–"
        url = reverse("drs:result-download", args=[obj.job_id, obj.pk])
        return format_html('<a href="{}">{}</a>', url, _("download"))

    def has_add_permission(self, request) -> bool:
        return False  # results come from jobs


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """The audit trail: read-only, kept when its job is deleted."""

    list_display = ("time", "action", "job_link", "server", "actor", "login", "transition")
    list_filter = ("action", "server")
    list_select_related = ("job", "server", "actor")
    search_fields = ("job_title", "actor__username", "login", "reason", "client")
    date_hierarchy = "time"
    show_full_result_count = False

    @admin.display(description=_("job"))
    def job_link(self, obj: Event) -> str:
        if obj.job_id is None:
            return obj.job_title or "–"
        url = reverse("admin:django_remote_submission_job_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job_title or obj.job_id)

    @admin.display(description=_("state"))
    def transition(self, obj: Event) -> str:
        return f"{obj.from_state} → {obj.to_state}" if obj.to_state else ""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
