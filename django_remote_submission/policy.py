"""Who may do what, in one place: pages, admin actions, the API and websockets ask here.

    policy.usable_servers(user)                  # the servers a user may run jobs on
    login = policy.decide(user, server, password=True)   # Login("ada", "password")
    policy.visible_jobs(user)                    # the jobs a user may see
    policy.may_act_on(user, job)                 # submit, cancel, edit or delete it

The rules, one sentence each:

- Superusers may do everything; ``is_staff`` alone grants nothing here (it opens the admin,
  whose pages need the model permissions).
- A server with ``allowed_groups`` is for members of those groups; one without is for every
  user. A server that runs jobs on the worker's own machine (``Server.local``, or
  ``remote=False``) is only for users with the permission ``run_locally``, since such a job
  can read every secret of the worker: ``SECRET_KEY``, the database, the stored keys.
- Every user runs as themselves: the login name of their ``ServerAccount`` on that server,
  else their username; with their own credential: a password they type, or the key made for
  their account.
- The server's shared login (``Server.username``) with its stored key, the ssh-agent or the
  worker's own keys: only with the permission ``use_shared_credentials``.
- Another login name, or a key file of the worker: only with ``choose_login``.
- Users see and act on their own jobs; ``view_job`` shows every job, ``change_job`` allows
  submitting, cancelling and editing every job.
- A job template is offered to every user while it is active, on the servers it allows (all
  of them when it names none) among those the user may use.
- Users make, see and revoke their own API tokens (a token never makes one: that needs the
  password or a session); ``drs_tokens.view_apitoken`` shows every token,
  ``drs_tokens.delete_apitoken`` allows revoking every token.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from .credentials import is_unreadable
from .models import Job, JobTemplate, Server, ServerAccount

APP = "django_remote_submission"
TOKENS_APP = "drs_tokens"  # the label of django_remote_submission.tokens

# How a run logs in (``options["login_with"]``): a typed password, the key of the user's
# ServerAccount, the server's shared credentials, a key file of the worker, or no login at
# all (the worker's own machine).
PASSWORD, ACCOUNT, SHARED, KEY_FILE, LOCAL = "password", "account", "shared", "key_file", "local"
LOGIN_WITH = (PASSWORD, ACCOUNT, SHARED, KEY_FILE, LOCAL)


class Refused(Exception):
    """The policy forbids what was asked; the message says why, for the user."""


@dataclass(frozen=True)
class Login:
    """Who a run logs in as on its server, and with what."""

    username: str
    login_with: str
    key_filename: str | None = None


def _may(user, codename: str, app: str = APP) -> bool:
    return bool(user.is_active and user.has_perm(f"{app}.{codename}"))


def may_run_locally(user) -> bool:
    return _may(user, "run_locally")


def may_choose_login(user) -> bool:
    return _may(user, "choose_login")


def may_use_shared_credentials(user) -> bool:
    return _may(user, "use_shared_credentials")


def usable_servers(user, queryset: QuerySet | None = None) -> QuerySet:
    """The servers ``user`` may run jobs on."""
    servers = Server.objects.all() if queryset is None else queryset
    if not (user.is_authenticated and user.is_active):
        return servers.none()
    if user.is_superuser:
        return servers
    if not may_run_locally(user):
        servers = servers.filter(local=False)
    groups = Q(allowed_groups__isnull=True) | Q(allowed_groups__in=user.groups.all())
    return servers.filter(groups).distinct()


def may_see_metrics(user) -> bool:
    """Staff may read the Prometheus metrics (a scraper uses ``DRS["METRICS_TOKEN"]``)."""
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def may_set_priority(user) -> bool:
    """Staff may move a job ahead of (or behind) others waiting for a slot."""
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def may_use_server(user, server: Server) -> bool:
    return usable_servers(user, Server.objects.filter(pk=server.pk)).exists()


def usable_templates(user) -> QuerySet:
    """The job templates offered to ``user``."""
    if not (user.is_authenticated and user.is_active):
        return JobTemplate.objects.none()
    return JobTemplate.objects.filter(active=True)


def template_servers(user, template: JobTemplate) -> QuerySet:
    """The servers ``user`` may run ``template`` on."""
    servers = usable_servers(user)
    if template.servers.exists():
        servers = servers.filter(pk__in=template.servers.values("pk"))
    return servers


def may_use_template(user, template: JobTemplate, server: Server) -> bool:
    return (
        usable_templates(user).filter(pk=template.pk).exists()
        and template_servers(user, template).filter(pk=server.pk).exists()
    )


def visible_servers(user, queryset: QuerySet | None = None) -> QuerySet:
    """Servers ``user`` may see: those they may use, or all with ``view_server``."""
    servers = Server.objects.all() if queryset is None else queryset
    if user.is_authenticated and _may(user, "view_server"):
        return servers
    return usable_servers(user, servers)


def own_login(user, server: Server) -> str:
    """The user's login name on ``server``: their account's, else their username."""
    account = account_of(user, server)
    return account.login if account else user.get_username()


def account_of(user, server: Server) -> ServerAccount | None:
    if not user.is_authenticated:
        return None
    return ServerAccount.objects.filter(user=user, server=server).first()


def decide(
    user,
    server: Server,
    *,
    password: bool,
    username: str | None = None,
    key_filename: str | None = None,
    remote: bool = True,
) -> Login:
    """How ``user`` logs in to ``server`` for a run; ``Refused`` when they may not."""
    if not may_use_server(user, server):
        if server.local and not may_run_locally(user):
            raise Refused(
                f"Running jobs on the worker's own machine ({server.title}) needs the "
                "permission “run_locally”."
            )
        raise Refused(f"You may not run jobs on {server.title}.")
    if server.local or not remote:
        if not may_run_locally(user):
            raise Refused(
                "Running jobs on the worker's own machine needs the permission “run_locally”."
            )
        return Login(user.get_username(), LOCAL)
    own = own_login(user, server)
    if (username and username != own) or key_filename:
        if not may_choose_login(user):
            raise Refused(
                "Only users with the permission “choose_login” may choose the login "
                "name or a key file."
            )
    if password:
        return Login(username or own, PASSWORD)
    if key_filename:
        return Login(username or own, KEY_FILE, key_filename)
    account = account_of(user, server)
    if account is not None and account.private_key and not is_unreadable(account.private_key):
        if not username or username == account.login:
            return Login(account.login, ACCOUNT)
    if may_use_shared_credentials(user):
        return Login(username or server.username or own, SHARED)
    raise Refused(
        f"Enter the password of {username or own} on {server.title}, or make a key for "
        "this server on the “My SSH keys” page."
    )


def visible_jobs(user, queryset: QuerySet | None = None, owner_field: str = "owner") -> QuerySet:
    """``queryset`` (jobs, or rows with ``owner_field`` leading to a job's owner) narrowed to
    what ``user`` may see."""
    rows = Job.objects.all() if queryset is None else queryset
    if not (user.is_authenticated and user.is_active):
        return rows.none()
    if _may(user, "view_job"):
        return rows
    return rows.filter(**{owner_field: user})


def may_see(user, job: Job) -> bool:
    return user.is_authenticated and (job.owner_id == user.pk or _may(user, "view_job"))


def may_act_on(user, job: Job) -> bool:
    """Submit, resubmit, cancel, edit or delete ``job``."""
    return (user.is_authenticated and user.is_active and job.owner_id == user.pk) or _may(
        user, "change_job"
    )


def sees_every_job(user) -> bool:
    """Status changes of every job are for this user (the staff websocket group)."""
    return user.is_authenticated and _may(user, "view_job")


def visible_tokens(user, queryset: QuerySet) -> QuerySet:
    """API tokens (``queryset``) narrowed to those ``user`` may see: their own, or all (with
    the permission to view or to revoke every token)."""
    if not (user.is_authenticated and user.is_active):
        return queryset.none()
    if _may(user, "view_apitoken", TOKENS_APP) or _may(user, "delete_apitoken", TOKENS_APP):
        return queryset
    return queryset.filter(user=user)


def may_revoke_token(user, token) -> bool:
    return (user.is_authenticated and user.is_active and token.user_id == user.pk) or _may(
        user, "delete_apitoken", TOKENS_APP
    )
