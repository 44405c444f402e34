"""From a job template's typed parameters to a form, and from its values to a job.

    fields = {p.name: jobtemplates.form_field(p) for p in template.parameters.all()}
    arguments, environment, files = jobtemplates.build(template, cleaned_values)
    jobtemplates.describe(template)     # the parameters as JSON (the API's description)

Values reach the program as the parameter says (``TemplateParameter.passed_as``): an option
(``--bins 10``; a checked boolean is ``--verbose`` alone), a positional argument, or an
environment variable; every one is an argv word or a variable, never shell text. A file
parameter's upload becomes an input file of the job, and its path is the value passed.
"""

from __future__ import annotations

from django import forms

from . import inputs
from .models.templates import ParameterType, PassedAs

TEXT_MAX = 10_000  # characters of a text value


def _choices(p) -> list[str]:
    return [c for c in (p.choices or []) if isinstance(c, str)]


# Fields of the run form beside the parameters (a parameter may not take their names).
RESERVED = frozenset({"title", "server", "password", "username"})


def parameter_errors(p) -> dict[str, str]:
    """What is wrong with a parameter's definition, by field (empty: nothing)."""
    errors = {}
    if p.name in RESERVED:
        errors["name"] = f"{p.name!r} is taken by the form itself ({', '.join(sorted(RESERVED))})."
    if p.type == ParameterType.choice:
        if not p.choices or not isinstance(p.choices, list) or _choices(p) != p.choices:
            errors["choices"] = "A choice needs a list of values (strings)."
    if p.default and p.type != ParameterType.file:
        try:
            form_field(p).clean(p.default)
        except forms.ValidationError as exc:
            errors["default"] = f"Not a valid {p.type}: {' '.join(exc.messages)}"
    target = _target(p)
    if p.passed_as == PassedAs.environment:
        refusal = inputs.name_refusal(variable(p))
        if refusal:
            errors["target" if target else "name"] = refusal
    elif p.passed_as == PassedAs.option and target and not target.startswith("-"):
        errors["target"] = "An option starts with '-' (e.g. --bins)."
    if p.type == ParameterType.file and target:
        try:
            inputs.clean_path(target)
        except ValueError as exc:
            errors["target"] = str(exc)
    return errors


def _target(p) -> str:
    """The option or variable named by ``target`` (a file's target is its path instead)."""
    return "" if p.type == ParameterType.file else p.target


def variable(p) -> str:
    return _target(p) or p.name.upper().replace("-", "_")


def option(p) -> str:
    return _target(p) or f"--{p.name}"


def form_field(p) -> forms.Field:
    """The form field of a parameter (validated server-side by its type)."""
    common = {
        "label": p.label or p.name,
        "help_text": p.help,
        "required": p.required and p.type != ParameterType.boolean,
    }
    if p.type != ParameterType.file and p.default:
        common["initial"] = p.default
    if p.type == ParameterType.integer:
        return forms.IntegerField(**common)
    if p.type == ParameterType.float:
        return forms.FloatField(**common)
    if p.type == ParameterType.choice:
        options = [(c, c) for c in _choices(p)]
        blank = [] if p.required else [("", "–")]
        return forms.ChoiceField(choices=blank + options, **common)
    if p.type == ParameterType.boolean:
        if p.default:
            common["initial"] = p.default.lower() in ("1", "true", "yes", "on")
        return forms.BooleanField(**common)
    if p.type == ParameterType.file:
        return forms.FileField(**common)
    return forms.CharField(max_length=TEXT_MAX, strip=False, **common)


def _text(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def build(template, values: dict) -> tuple[list[str], dict[str, str], list[tuple[str, object]]]:
    """(arguments, environment, [(input path, file)]) of a job made from ``template`` with
    ``values`` (a form's cleaned data: typed values, uploaded files)."""
    arguments: list[str] = []
    environment: dict[str, str] = {}
    files: list[tuple[str, object]] = []
    for p in template.parameters.all():
        value = values.get(p.name)
        if p.type == ParameterType.file:
            if not value:
                continue
            path = inputs.clean_path(p.target or value.name)
            files.append((path, value))
            value = path
        if p.type == ParameterType.boolean:
            if p.passed_as == PassedAs.option:
                arguments += [option(p)] if value else []
                continue
            value = "1" if value else "0"
        if value is None or value == "":
            continue
        text = _text(value)
        if p.passed_as == PassedAs.option:
            arguments += [option(p), text]
        elif p.passed_as == PassedAs.positional:
            arguments.append(text)
        else:
            environment[variable(p)] = text
    return arguments, environment, files


def stored_values(values: dict) -> dict:
    """What a job remembers of the values (JSON; a file by its name)."""
    out = {}
    for name, value in values.items():
        out[name] = getattr(value, "name", value) if hasattr(value, "read") else value
    return out


def describe(template) -> list[dict]:
    """The parameters as JSON: what a client needs to build the form."""
    return [
        {
            "name": p.name,
            "label": p.label or p.name,
            "type": p.type,
            "choices": _choices(p) if p.type == ParameterType.choice else None,
            "default": p.default or None,
            "help": p.help,
            "required": p.required,
            "passed_as": p.passed_as,
            "target": (
                option(p)
                if p.passed_as == PassedAs.option
                else variable(p)
                if p.passed_as == PassedAs.environment
                else None
            ),
        }
        for p in template.parameters.all()
    ]
