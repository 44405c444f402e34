"""Job templates: a program offered as a form (``JobTemplate``), with typed parameters.

    t = JobTemplate.objects.create(name="Histogram", interpreter=python3, program="...")
    t.parameters.create(name="bins", type="integer", default="10", passed_as="option")
    # a job made from it runs:  python3 -u job.py --bins 10

How values become form fields and reach the program is in ``jobtemplates.py``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from .servers import Interpreter, Server, TimeStampedModel, validate_resources


class JobTemplate(TimeStampedModel):
    """A program staff offer as a form: users fill its parameters and run it."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    interpreter = models.ForeignKey(
        Interpreter, models.PROTECT, related_name="templates", verbose_name=_("interpreter")
    )
    program = models.TextField(_("program"))
    remote_filename = models.CharField(_("remote filename"), max_length=255, default="job")
    servers = models.ManyToManyField(
        Server,
        blank=True,
        related_name="templates",
        verbose_name=_("allowed servers"),
        help_text=_("Servers its jobs may run on; none: every server the user may use."),
    )
    resources = models.JSONField(
        _("default resources"),
        default=dict,
        blank=True,
        validators=[validate_resources],
        help_text=_("What a batch scheduler is asked for by default (see servers)."),
    )
    active = models.BooleanField(_("offered"), default=True)

    class Meta:
        verbose_name = _("job template")
        verbose_name_plural = _("job templates")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        name = self.remote_filename or ""
        if not name or "/" in name or name in (".", ".."):
            raise ValidationError({"remote_filename": _("A plain file name, without '/'.")})


class ParameterType(models.TextChoices):
    text = "text", _("text")
    integer = "integer", _("integer")
    float = "float", _("float")
    choice = "choice", _("choice")
    boolean = "boolean", _("boolean")
    file = "file", _("file")


class PassedAs(models.TextChoices):
    option = "option", _("option: --name value (a boolean: --name when checked)")
    positional = "positional", _("positional argument (in the parameters' order)")
    environment = "environment", _("environment variable")


class TemplateParameter(models.Model):
    """One typed field of a template's form, and how its value reaches the program.

    A file parameter's upload is an input file of the job (at ``target``, else the upload's
    name); its path is what is passed.
    """

    template = models.ForeignKey(
        JobTemplate, models.CASCADE, related_name="parameters", verbose_name=_("template")
    )
    position = models.PositiveIntegerField(_("position"), default=0)
    name = models.SlugField(
        _("name"), max_length=64, help_text=_("Letters, digits, _ and -: its key in the API.")
    )
    label = models.CharField(_("label"), max_length=200, blank=True)
    type = models.CharField(
        _("type"), max_length=16, choices=ParameterType.choices, default=ParameterType.text
    )
    choices = models.JSONField(
        _("choices"),
        default=list,
        blank=True,
        help_text=_('Of a choice: the values offered, e.g. ["fast", "exact"].'),
    )
    default = models.CharField(_("default"), max_length=1000, blank=True)
    help = models.CharField(_("help"), max_length=500, blank=True)
    required = models.BooleanField(_("required"), default=False)
    passed_as = models.CharField(
        _("passed as"), max_length=16, choices=PassedAs.choices, default=PassedAs.option
    )
    target = models.CharField(
        _("target"),
        max_length=255,
        blank=True,
        help_text=_(
            "The option (default --name), the variable (default NAME in capitals) or, for a "
            "file, its path in the job's directory (default: the upload's name)."
        ),
    )

    class Meta:
        verbose_name = _("parameter")
        verbose_name_plural = _("parameters")
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["template", "name"], name="drs_parameter_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from .. import jobtemplates

        errors = jobtemplates.parameter_errors(self)
        if errors:
            raise ValidationError(errors)
