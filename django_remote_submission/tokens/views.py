"""“My API tokens”: a user's personal API tokens (every token, with ``view_apitoken``).

GET  tokens/                the tokens, and a form to make one
POST tokens/                make one: the answer shows its key, once
POST tokens/<id>/revoke/    revoke one (own, or any with ``delete_apitoken``)
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from .. import policy
from . import services
from .models import ApiToken


class TokenForm(forms.ModelForm):
    """Name, read-only, and days until it expires (at most the site's ``API_TOKEN_TTL``)."""

    class Meta:
        model = ApiToken
        fields = ["name", "read_only"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        longest = services.max_days()
        self.fields["days"] = forms.IntegerField(
            label=gettext_lazy("Expires in (days)"),
            min_value=1,
            max_value=longest,
            initial=longest,
        )


def _page(request: HttpRequest, form: TokenForm, new_key: str = "", status: int = 200):
    tokens = policy.visible_tokens(request.user, ApiToken.objects.select_related("user"))
    context = {
        "tokens": tokens.order_by("-created", "-id"),
        "form": form,
        "new_key": new_key,
        "sees_others": tokens.exclude(user=request.user).exists(),
    }
    return render(request, "django_remote_submission/tokens.html", context, status=status)


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    _token, key = services.create(
        request.user,
        name=form.cleaned_data["name"],
        read_only=form.cleaned_data["read_only"],
        days=form.cleaned_data["days"],
        request=request,
    )
    # The key is shown in this answer only (no redirect: it is stored nowhere to show later).
    return _page(request, TokenForm(), new_key=key)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    tokens = policy.visible_tokens(request.user, ApiToken.objects.select_related("user"))
    token = get_object_or_404(tokens, pk=pk)
    try:
        services.revoke(token, request.user, request=request)
    except policy.Refused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("The token “%(name)s” was revoked.") % {"name": token.name})
    return redirect("drs:token-list")
