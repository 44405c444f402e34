"""Pages of job templates: the list of those offered, and a template's generated form.

``/templates/<id>/?job=<job id>`` fills the form with the values of an earlier job made from
the template ("run again with changes"; files are chosen again).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from .. import inputs, policy
from ..forms import TemplateJobForm
from .jobs import _report, _valid


@login_required
def template_list(request: HttpRequest) -> HttpResponse:
    """The job templates offered to the user."""
    templates = policy.usable_templates(request.user).prefetch_related("parameters")
    return render(request, "django_remote_submission/template_list.html", {"templates": templates})


@csrf_exempt  # checked below, once the upload limit is in place (see inputs.UploadLimit)
def template_run(request: HttpRequest, pk: int) -> HttpResponse:
    """A template's form (generated from its parameters): fill it to run a job;
    ``?job=<id>`` fills it with that job's values."""
    inputs.limit_uploads(request)
    return _template_run(request, pk)


@login_required
@csrf_protect
def _template_run(request: HttpRequest, pk: int) -> HttpResponse:
    template = get_object_or_404(policy.usable_templates(request.user), pk=pk)
    if request.method == "POST":
        form = TemplateJobForm(template, request.POST, request.FILES, user=request.user)
        if _valid(form, request):
            try:
                job, queued = form.save(request=request)
            except policy.Refused as exc:
                form.add_error(None, str(exc))
            else:
                _report(request, queued, f"Job “{job.title}” queued.")
                return redirect("drs:job-detail", pk=job.pk)
    else:
        form = TemplateJobForm(template, initial=_previous(request, template), user=request.user)
    return render(
        request,
        "django_remote_submission/template_form.html",
        {"template": template, "form": form},
    )


def _previous(request: HttpRequest, template) -> dict:
    """The values of an earlier job of the template the user may see (``?job=``)."""
    pk = request.GET.get("job", "")
    if not pk.isdigit():
        return {}
    job = policy.visible_jobs(request.user).filter(pk=pk, template=template).first()
    if job is None:
        return {}
    types = {p.name: p.type for p in template.parameters.all()}
    values = {k: v for k, v in job.template_values.items() if types.get(k) not in (None, "file")}
    return {**values, "title": job.title, "server": job.server_id}
