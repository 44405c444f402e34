"""Admin of servers (with a connection test, allowed groups and host keys), interpreters and
users' server accounts.

Changes to who may use a server (``allowed_groups``, ``local``) and to its stored credentials
are recorded in the audit trail.
"""

from __future__ import annotations

import shlex

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from .. import audit, policy
from ..connections import connect, shared_credentials
from ..credentials import UNREADABLE, is_unreadable
from ..forms import ServerAdminForm
from ..models import Event, Interpreter, Server, ServerAccount
from ..remote import (
    AuthError,
    Credentials,
    HostKeyInvalid,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
)
from ..remote.hostkeys import fingerprint, parse_host_key
from .actions import action_form, login_page


@admin.register(Interpreter)
class InterpreterAdmin(admin.ModelAdmin):
    list_display = ("name", "path", "arguments", "offered_by")
    search_fields = ("name", "path")

    @admin.display(description=_("servers"))
    def offered_by(self, obj: Interpreter) -> str:
        return ", ".join(s.title for s in obj.servers.all()) or "–"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("servers")


def _test_credentials(server: Server, user, username: str, password: str | None) -> Credentials:
    """A typed password logs in as ``username``; none tests the shared login (by policy)."""
    if password:
        return Credentials(username or policy.own_login(user, server), password=password)
    if not policy.may_use_shared_credentials(user):
        raise policy.Refused(
            "without a password the test uses the server's shared login, which needs the "
            "permission “use_shared_credentials”"
        )
    return shared_credentials(server, username or server.username or user.get_username())


def connection_report(
    server: Server, user, username: str, password: str | None
) -> list[tuple[bool, str]]:
    """Log in to ``server`` as a job would; [(ok, line)] about login, host key, interpreters."""
    lines: list[tuple[bool, str]] = []
    known = server.host_key
    try:
        creds = _test_credentials(server, user, username, password)
        transport = connect(server, creds, remote=not server.local)
    except policy.Refused as exc:
        return [(False, f"Login: {exc}.")]
    except (HostKeyUnknown, HostKeyMismatch, HostKeyInvalid) as exc:
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
        "scheduler",
        "username",
        "local",
        "groups",
        "host_key_known",
        "key_stored",
    )
    list_filter = ("scheduler", "local", "allowed_groups")
    search_fields = ("title", "hostname")
    filter_horizontal = ("interpreters", "allowed_groups")
    actions = ["test_connection"]
    fieldsets = (
        (None, {"fields": ("title", "hostname", "port", "local", "interpreters", "queue")}),
        (
            _("Scheduler"),
            {
                "fields": ("scheduler", "resources"),
                "description": _(
                    "On a cluster the host is a login node: jobs are submitted to its Slurm "
                    "or Grid Engine, with these resources unless a job asks for others."
                ),
            },
        ),
        (
            _("Limits"),
            {
                "fields": ("max_running", "max_running_per_user", "max_load_per_core"),
                "description": _(
                    "A job over a limit waits (status “waiting”, with the reason) and starts "
                    "as soon as a slot frees: by priority, in turn across users, first come "
                    "first served."
                ),
            },
        ),
        (
            _("Who may use it"),
            {
                "fields": ("allowed_groups",),
                "description": _(
                    "Users log in as themselves, with their password or the key they made "
                    "on “My SSH keys”. The shared login below is for users with the "
                    "permission “use_shared_credentials”. A server that runs jobs on the "
                    "worker's own machine is for users with “run_locally” only: such a job "
                    "can read every secret of the worker."
                ),
            },
        ),
        (
            _("Shared login"),
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

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("allowed_groups")

    @admin.display(description=_("groups"))
    def groups(self, obj: Server) -> str:
        return ", ".join(g.name for g in obj.allowed_groups.all()) or _("everyone")

    @admin.display(boolean=True, description=_("host key"))
    def host_key_known(self, obj: Server) -> bool:
        return bool(obj.host_key)

    @admin.display(description=_("stored key"))
    def key_stored(self, obj: Server) -> str:
        if is_unreadable(obj.private_key) or is_unreadable(obj.private_key_passphrase):
            return UNREADABLE
        return _("yes") if obj.private_key else "–"

    def save_related(self, request, form, formsets, change) -> None:
        before = (
            set(form.instance.allowed_groups.values_list("name", flat=True)) if change else set()
        )
        super().save_related(request, form, formsets, change)
        server = form.instance
        after = set(server.allowed_groups.values_list("name", flat=True))
        if after != before or "local" in form.changed_data:
            groups = ", ".join(sorted(after)) or "everyone"
            reason = f"allowed groups: {groups}; runs on the worker's machine: {server.local}"
            audit.record(Event.Action.access, server=server, actor=request.user, reason=reason)
        secrets = {"username", "private_key", "private_key_passphrase", "use_agent"}
        changed = sorted(secrets & set(form.changed_data))
        if form.cleaned_data.get("clear_secrets"):
            changed.append("cleared")
        if changed:
            audit.record(
                Event.Action.credentials,
                server=server,
                actor=request.user,
                reason=", ".join(changed),
            )

    @admin.action(
        description=_("Test connection (login, host key, interpreters)"), permissions=["change"]
    )
    def test_connection(self, request, queryset):
        apply = "apply" in request.POST
        form = action_form(request, apply)
        if apply and form.is_valid():
            username = form.cleaned_data.get("username") or ""
            reports = []
            for server in queryset.prefetch_related("interpreters"):
                lines = connection_report(
                    server, request.user, username, form.cleaned_data["password"]
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
        return login_page(
            request, self, form, list(queryset), _("Test connection"), _("Test connection")
        )


@admin.register(ServerAccount)
class ServerAccountAdmin(admin.ModelAdmin):
    """Users' own logins and keys: readable, deletable (which revokes the key here), and the
    login name editable; keys are made by their owners."""

    list_display = ("user", "server", "login", "has_key", "installed")
    list_filter = ("server",)
    search_fields = ("user__username", "username", "server__title")
    list_select_related = ("user", "server")
    readonly_fields = ("public_key", "installed")
    raw_id_fields = ("user",)

    @admin.display(boolean=True, description=_("key"))
    def has_key(self, obj: ServerAccount) -> bool:
        return bool(obj.public_key)
