"""The admin: servers (with a connection test), interpreters, jobs (submit, resubmit, cancel,
live page), logs and results.

Actions that need a login (submit, resubmit, test connection) first ask for it on an
intermediate page, as the original app did; a blank password means the server's stored key
or the worker's own keys.
"""

from __future__ import annotations

import shlex

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.forms.models import BaseInlineFormSet
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import runner
from .forms import JobAdminForm, ServerAdminForm, SubmitForm, can_cancel, queue_cancel
from .models import FINAL_STATES, Interpreter, Job, Log, Result, Server, Status
from .remote import AuthError, Credentials, HostKeyMismatch, HostKeyUnknown, RemoteError

LOG_INLINE_ROWS = 200
# What a job's run decides: shown on its admin page, never edited there.
STATE_FIELDS = (
    "live_page",
    "status",
    "exit_code",
    "error",
    "started_at",
    "finished_at",
    "uuid",
    "created",
    "modified",
)


class ActionLoginForm(SubmitForm):
    """The login form of an action, carrying the selection through the intermediate page."""

    _selected_action = forms.CharField(widget=forms.MultipleHiddenInput, required=False)
    action = forms.CharField(widget=forms.HiddenInput, required=False)
    select_across = forms.BooleanField(widget=forms.HiddenInput, required=False)


def _action_form(request, apply: bool) -> ActionLoginForm:
    if apply:
        return ActionLoginForm(request.POST, user=request.user)
    return ActionLoginForm(
        user=request.user,
        initial={
            helpers.ACTION_CHECKBOX_NAME: request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action": request.POST.get("action"),
            "select_across": request.POST.get("select_across") == "1",
        },
    )


def _login_page(request, modeladmin, form, objects, title: str, button: str):
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "objects": objects,
        "button": button,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/django_remote_submission/action_login.html", context)


# --- interpreters and servers --------------------------------------------------------------


@admin.register(Interpreter)
class InterpreterAdmin(admin.ModelAdmin):
    list_display = ("name", "path", "arguments", "offered_by")
    search_fields = ("name", "path")

    @admin.display(description=_("servers"))
    def offered_by(self, obj: Interpreter) -> str:
        return ", ".join(s.title for s in obj.servers.all()) or "–"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("servers")


def connection_report(
    server: Server, username: str, password: str | None
) -> list[tuple[bool, str]]:
    """Log in to ``server`` as a job would; [(ok, line)] about login, host key, interpreters."""
    from .remote.ssh import fingerprint, parse_host_key

    lines: list[tuple[bool, str]] = []
    creds = Credentials(
        username,
        password=password or None,
        key_text=server.private_key or None,
        passphrase=server.private_key_passphrase or None,
        use_agent=server.use_agent,
    )
    known = server.host_key
    try:
        transport = runner.connect(server, creds, remote=not server.local)
    except (HostKeyUnknown, HostKeyMismatch) as exc:
        return [(False, f"Host key: {exc}")]
    except AuthError as exc:
        return [(False, f"Login: {exc}")]
    except RemoteError as exc:
        return [(False, f"Connection: {exc}")]
    with transport:
        if server.local:
            lines.append(
                (
                    True,
                    "Runs jobs on the worker's own machine, without SSH (checked on "
                    "this web server's machine).",
                )
            )
        else:
            lines.append((True, f"Login: {creds.username} logged in with {creds.describe()}."))
            key = parse_host_key(server.host_key) if server.host_key else None
            shown = fingerprint(key) if key else "?"
            if known:
                lines.append((True, f"Host key: matches the key on record ({shown})."))
            elif server.host_key:
                lines.append((True, f"Host key: trusted on first use and stored ({shown})."))
            else:
                lines.append(
                    (
                        False,
                        "Host key: not on record (the policy let the connection "
                        "through without storing it).",
                    )
                )
        for interpreter in server.interpreters.all():
            words = shlex.split(interpreter.path) or [""]
            try:
                found = transport.run(["sh", "-c", 'command -v "$1"', "sh", words[0]], timeout=15)
            except RemoteError as exc:
                lines.append((False, f"Interpreter {interpreter.name}: {exc}"))
                continue
            if found.exit_code == 0 and found.text.strip():
                lines.append((True, f"Interpreter {interpreter.name}: {found.text.strip()}"))
            else:
                lines.append((False, f"Interpreter {interpreter.name}: {words[0]} not found"))
        if not server.interpreters.exists():
            lines.append((False, "No interpreters: add some so that jobs can run here."))
    return lines


@admin.register(Server)
class ServerAdmin(admin.ModelAdmin):
    form = ServerAdminForm
    list_display = (
        "title",
        "hostname",
        "port",
        "username",
        "local",
        "host_key_known",
        "key_stored",
    )
    list_filter = ("local",)
    search_fields = ("title", "hostname")
    filter_horizontal = ("interpreters",)
    actions = ["test_connection"]
    fieldsets = (
        (None, {"fields": ("title", "hostname", "port", "local", "interpreters")}),
        (
            _("Login"),
            {
                "fields": (
                    "username",
                    "private_key",
                    "private_key_passphrase",
                    "clear_secrets",
                    "use_agent",
                )
            },
        ),
        (_("Host key"), {"fields": ("host_key",)}),
    )

    @admin.display(boolean=True, description=_("host key"))
    def host_key_known(self, obj: Server) -> bool:
        return bool(obj.host_key)

    @admin.display(boolean=True, description=_("stored key"))
    def key_stored(self, obj: Server) -> bool:
        return bool(obj.private_key)

    @admin.action(description=_("Test connection (login, host key, interpreters)"))
    def test_connection(self, request, queryset):
        apply = "apply" in request.POST
        form = _action_form(request, apply)
        if apply and form.is_valid():
            username = form.cleaned_data["username"]
            reports = []
            for server in queryset.prefetch_related("interpreters"):
                lines = connection_report(
                    server,
                    username or server.username or request.user.get_username(),
                    form.cleaned_data["password"],
                )
                ok = all(good for good, _line in lines)
                self.message_user(
                    request,
                    f"{server.title}: " + " · ".join(t for _g, t in lines),
                    messages.SUCCESS if ok else messages.ERROR,
                )
                reports.append((server, ok, lines))
            context = {
                **self.admin_site.each_context(request),
                "reports": reports,
                "title": _("Connection test"),
                "opts": self.model._meta,
            }
            return TemplateResponse(
                request, "admin/django_remote_submission/test_connection.html", context
            )
        return _login_page(
            request, self, form, list(queryset), _("Test connection"), _("Test connection")
        )


# --- jobs -------------------------------------------------------------------------------


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
        "submitted": "#7a5af8",
        "running": "#1570ef",
        "success": "#12b76a",
        "failure": "#d92d20",
        "cancelled": "#f79009",
    }
    return format_html(
        '<span style="color:#fff;background:{};border-radius:9px;padding:1px 8px">{}</span>',
        colours.get(job.status, "#98a2b3"),
        job.get_status_display(),
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
                )
            },
        ),
        (
            _("State"),
            {"fields": STATE_FIELDS},
        ),
    )
    readonly_fields = STATE_FIELDS
    inlines = [ResultInline, LogInline]
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

    def _submit(self, request, queryset, allowed, title: str):
        apply = "apply" in request.POST
        form = _action_form(request, apply)
        if not (apply and form.is_valid()):
            return _login_page(request, self, form, list(queryset), title, title)
        queued, skipped, errors = 0, [], set()
        for job in queryset.select_related("server"):
            if job.status in allowed:
                error = form.submit(job).error
                if error:
                    errors.add(error)
                else:
                    queued += 1
            else:
                skipped.append(f"{job.title} ({job.get_status_display()})")
        for error in errors:
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

    @admin.action(description=_("Submit to server"))
    def submit_jobs(self, request, queryset):
        return self._submit(request, queryset, {Status.initial}, _("Submit to server"))

    @admin.action(description=_("Resubmit finished jobs"))
    def resubmit_jobs(self, request, queryset):
        return self._submit(request, queryset, FINAL_STATES, _("Resubmit"))

    @admin.action(description=_("Cancel"))
    def cancel_jobs(self, request, queryset):
        cancelled, skipped = 0, []
        errors = set()
        for job in queryset:
            if can_cancel(job):
                error = queue_cancel(job).error
                if error:
                    errors.add(error)
                else:
                    cancelled += 1
            else:
                skipped.append(f"{job.title} ({job.get_status_display()})")
        self._report(
            request,
            ngettext("Cancelling %(count)d job.", "Cancelling %(count)d jobs.", cancelled)
            % {"count": cancelled},
            cancelled,
            _("Not running: %(jobs)s."),
            skipped,
        )
        for error in errors:
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
