"""“My SSH keys”: a user's login name and key pair on each server they may use.

    GET  keys/                      the servers, each with the login name and the key's state
    POST keys/<server>/account/     set the login name ({"username": ...})
    POST keys/<server>/create/      make a new key pair (the private part is never shown)
    POST keys/<server>/install/     add the public key on the host ({"password": ...}, once)
    POST keys/<server>/remove/      take it off the host and forget it

Once a key is installed, jobs on that server need no password. Every change is recorded in
the audit trail.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from .. import audit, keys, policy
from ..forms import AccountForm, InstallKeyForm
from ..models import Event, ServerAccount
from ..remote import RemoteError


def _servers(request: HttpRequest):
    return policy.usable_servers(request.user).filter(local=False).order_by("title")


def _account(request: HttpRequest, server_pk: int) -> ServerAccount:
    server = get_object_or_404(_servers(request), pk=server_pk)
    account, _created = ServerAccount.objects.get_or_create(user=request.user, server=server)
    return account


@login_required
def key_list(request: HttpRequest) -> HttpResponse:
    accounts = {a.server_id: a for a in ServerAccount.objects.filter(user=request.user)}
    rows = [
        {
            "server": server,
            "account": accounts.get(server.pk),
            "login": policy.own_login(request.user, server),
            "form": AccountForm(instance=accounts.get(server.pk), prefix=f"s{server.pk}"),
        }
        for server in _servers(request)
    ]
    context = {"rows": rows, "install_form": InstallKeyForm()}
    return render(request, "django_remote_submission/keys.html", context)


def _done(request: HttpRequest, account: ServerAccount, action: str, text: str) -> HttpResponse:
    audit.record(
        action, server=account.server, actor=request.user, login=account.login, request=request
    )
    messages.success(request, text)
    return redirect("drs:key-list")


@login_required
@require_POST
def account_edit(request: HttpRequest, server_pk: int) -> HttpResponse:
    account = _account(request, server_pk)
    form = AccountForm(request.POST, instance=account, prefix=f"s{server_pk}")
    if not form.is_valid():
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
        return redirect("drs:key-list")
    form.save()
    text = _("Your login on %(server)s is now %(login)s.")
    return _done(
        request,
        account,
        Event.Action.account,
        text % {"server": account.server.title, "login": account.login},
    )


@login_required
@require_POST
def key_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    account = _account(request, server_pk)
    keys.generate(account)
    text = _("A new key for %(server)s was made: install it with your password.")
    return _done(request, account, Event.Action.key_created, text % {"server": account.server})


@login_required
@require_POST
def key_install(request: HttpRequest, server_pk: int) -> HttpResponse:
    account = _account(request, server_pk)
    form = InstallKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Enter your password on the server to install the key."))
        return redirect("drs:key-list")
    try:
        keys.install(account, form.cleaned_data["password"])
    except RemoteError as exc:
        messages.error(request, str(exc))
        return redirect("drs:key-list")
    text = _("Your key is installed on %(server)s: jobs there need no password now.")
    return _done(
        request, account, Event.Action.key_installed, text % {"server": account.server.title}
    )


@login_required
@require_POST
def key_remove(request: HttpRequest, server_pk: int) -> HttpResponse:
    account = _account(request, server_pk)
    try:
        keys.uninstall(account, request.POST.get("password") or None)
    except RemoteError as exc:
        messages.error(request, _("%(error)s Enter your password to remove it.") % {"error": exc})
        return redirect("drs:key-list")
    text = _("Your key for %(server)s was removed from the server and forgotten.")
    return _done(
        request, account, Event.Action.key_removed, text % {"server": account.server.title}
    )


__all__ = ["account_edit", "key_create", "key_install", "key_list", "key_remove"]
