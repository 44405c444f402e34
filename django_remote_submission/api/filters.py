"""Query-string filters of the lists (django-filter FilterSets).

    GET /api/jobs/?status=running&status=submitted&server=3
    GET /api/jobs/?created_after=2024-05-01T00:00:00Z&created_before=2024-06-01T00:00:00Z
    GET /api/logs/?job=7&stream=stdout&after=120
    GET /api/results/?job=7

Filters only narrow what the user may already see: ``job=`` of a foreign job is refused the
same way as a missing one.
"""

from __future__ import annotations

from datetime import timezone as dt_timezone

from django import forms
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeRangeField

from .. import policy
from ..models import Event, Input, Interpreter, Job, Log, Result, Server, Status

# Ids are 64-bit; larger numbers are refused as input errors, never passed to the database.
MAX_ID = 2**63 - 1


class IdFilter(filters.NumberFilter):
    """An integer id (``NumberFilter`` would accept decimals)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class SafeIsoDateTimeRangeField(IsoDateTimeRangeField):
    """ISO 8601 bounds that the database can compare (no year 9999 at UTC+14), in UTC
    (PostgreSQL refuses offsets beyond 15:59, which ISO 8601 allows)."""

    def clean(self, value):
        bounds = super().clean(value)
        if not bounds:
            return bounds
        try:
            start, stop = (
                bound.astimezone(dt_timezone.utc) if bound is not None else None
                for bound in (bounds.start, bounds.stop)
            )
        except (OverflowError, ValueError):
            raise forms.ValidationError("Date out of range.", code="invalid") from None
        return slice(start, stop)


class SafeIsoDateTimeFromToRangeFilter(filters.IsoDateTimeFromToRangeFilter):
    field_class = SafeIsoDateTimeRangeField


def visible_jobs(request):
    return policy.visible_jobs(request.user) if request else Job.objects.none()


class ServerFilter(filters.FilterSet):
    hostname = filters.CharFilter(help_text="Exact host name.")
    interpreter = filters.ModelChoiceFilter(
        field_name="interpreters",
        queryset=Interpreter.objects.all(),
        help_text="Servers offering this interpreter (id).",
    )

    class Meta:
        model = Server
        fields = ["hostname", "interpreter"]


class InterpreterFilter(filters.FilterSet):
    name = filters.CharFilter(help_text="Exact name.")
    server = filters.ModelChoiceFilter(
        field_name="servers",
        queryset=Server.objects.all(),
        help_text="Interpreters offered by this server (id).",
    )

    class Meta:
        model = Interpreter
        fields = ["name", "server"]


class JobFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(
        choices=Status.choices, help_text="One or more states (repeat the parameter)."
    )
    server = filters.ModelChoiceFilter(queryset=Server.objects.all(), help_text="Server id.")
    owner = IdFilter(field_name="owner", help_text="Owner's user id (useful to staff).")
    created = SafeIsoDateTimeFromToRangeFilter(
        help_text="Created in this range: `created_after` and/or `created_before` (ISO 8601)."
    )
    uuid = filters.UUIDFilter(help_text="The job's UUID.")

    class Meta:
        model = Job
        fields = ["status", "server", "owner", "created", "uuid"]


class LogFilter(filters.FilterSet):
    job = filters.ModelChoiceFilter(queryset=visible_jobs, help_text="Job id.")
    stream = filters.ChoiceFilter(choices=Log.Stream.choices, help_text="Output stream.")
    after = IdFilter(
        field_name="id",
        lookup_expr="gt",
        help_text="Only rows with a larger id: the `after` of the previous answer.",
    )

    class Meta:
        model = Log
        fields = ["job", "stream", "after"]


class ResultFilter(filters.FilterSet):
    job = filters.ModelChoiceFilter(queryset=visible_jobs, help_text="Job id.")

    class Meta:
        model = Result
        fields = ["job"]


class InputFilter(filters.FilterSet):
    job = filters.ModelChoiceFilter(queryset=visible_jobs, help_text="Job id.")

    class Meta:
        model = Input
        fields = ["job"]


class EventFilter(filters.FilterSet):
    job = filters.ModelChoiceFilter(queryset=visible_jobs, help_text="Job id.")
    action = filters.MultipleChoiceFilter(
        choices=Event.Action.choices, help_text="One or more actions (repeat the parameter)."
    )

    class Meta:
        model = Event
        fields = ["job", "action"]
