"""Admin of job templates: the program, the allowed servers and the typed parameters."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..forms import ProgramField
from ..models import JobTemplate, TemplateParameter


class TemplateParameterInline(admin.TabularInline):
    model = TemplateParameter
    extra = 1
    fields = (
        "position",
        "name",
        "label",
        "type",
        "choices",
        "default",
        "required",
        "passed_as",
        "target",
        "help",
    )


@admin.register(JobTemplate)
class JobTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "interpreter", "active", "form_page")
    list_filter = ("active", "interpreter")
    search_fields = ("name", "description", "program")
    filter_horizontal = ("servers",)
    inlines = [TemplateParameterInline]
    fields = (
        "name",
        "description",
        "active",
        "interpreter",
        "servers",
        "remote_filename",
        "program",
        "resources",
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "program":
            kwargs["form_class"] = ProgramField
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description=_("form"))
    def form_page(self, obj: JobTemplate) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("drs:template-run", args=[obj.pk]), _("open")
        )
