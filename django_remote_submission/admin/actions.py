"""Admin actions that need a login ask for it on an intermediate page, as 2.1.0 did.

form = action_form(request, apply="apply" in request.POST)
if not form.is_valid(): return login_page(request, modeladmin, form, objects, title, button)
"""

from __future__ import annotations

from django import forms
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from ..forms import SubmitForm


class ActionLoginForm(SubmitForm):
    """The login form of an action, carrying the selection through the intermediate page."""

    _selected_action = forms.CharField(widget=forms.MultipleHiddenInput, required=False)
    action = forms.CharField(widget=forms.HiddenInput, required=False)
    select_across = forms.BooleanField(widget=forms.HiddenInput, required=False)


def action_form(request, apply: bool) -> ActionLoginForm:
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


def login_page(request, modeladmin, form, objects, title: str, button: str):
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "objects": objects,
        "button": button,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/django_remote_submission/action_login.html", context)
