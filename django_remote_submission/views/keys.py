"""“My SSH keys”: a user's login name and key pair on each server they may use.

    GET  keys/                      the servers, each with the login name and the key's state
    POST keys/<server>/account/     set the login name ({"username": ...})
    POST keys/<server>/create/      make a new key pair (the private part is never shown)
    POST keys/<server>/install/     add the public key on the host ({"password": ...}, once)
    POST keys/<server>/remove/      take it off the host and forget it

Once a key is installed, jobs on that server need no password. The work is done by
``services`` (which records every change in the audit trail).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from .. import policy, services
from ..forms import AccountForm, InstallKeyForm
from ..models import Server, ServerAccount
from ..remote import RemoteError


def _servers(request: HttpRequest):
    return policy.usable_servers(request.user).filter(local=False).order_by("title")


def _server(request: HttpRequest, server_pk: int) -> Server:
    return get_object_or_404(_servers(request), pk=server_pk)


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


def _do(request: HttpRequest, done: str, work, *args) -> HttpResponse:
    """``work(request.user, *args)`` (a ``services`` function); its success or failure becomes
    the page's message."""
    try:
        work(request.user, *args, request=request)
    except (RemoteError, ValidationError, policy.Refused) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text)
    else:
        messages.success(request, done)
    return redirect("drs:key-list")


@login_required
@require_POST
def account_edit(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = _server(request, server_pk)
    username = request.POST.get(f"s{server_pk}-username", "").strip()
    done = _("Your login on %(server)s is now %(login)s.") % {
        "server": server.title,
        "login": username or request.user.get_username(),
    }
    return _do(request, done, services.set_login, server, username)


@login_required
@require_POST
def key_create(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = _server(request, server_pk)
    done = _("A new key for %(server)s was made: install it with your password.")
    return _do(request, done % {"server": server.title}, services.make_key, server)


@login_required
@require_POST
def key_install(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = _server(request, server_pk)
    form = InstallKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Enter your password on the server to install the key."))
        return redirect("drs:key-list")
    done = _("Your key is installed on %(server)s: jobs there need no password now.")
    password = form.cleaned_data["password"]
    return _do(request, done % {"server": server.title}, services.install_key, server, password)


@login_required
@require_POST
def key_remove(request: HttpRequest, server_pk: int) -> HttpResponse:
    server = _server(request, server_pk)
    done = _("Your key for %(server)s was removed from the server and forgotten.")
    password = request.POST.get("password") or None
    return _do(request, done % {"server": server.title}, services.remove_key, server, password)
