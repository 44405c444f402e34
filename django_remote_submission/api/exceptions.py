"""Errors of the API beyond DRF's own.

    raise Conflict("The job is running; cancel it before editing it.")   # -> 409
    raise NotQueued("Could not queue the job: ...")                      # -> 503
    raise BadGateway("Authentication failed for ada@hpc ...")            # -> 502

DRF renders it like its own errors: ``{"detail": "..."}``.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException


class Conflict(APIException):
    """The request is valid but the object's state forbids it (409), e.g. editing a running job."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The object's current state does not allow this.")
    default_code = "conflict"


class NotQueued(APIException):
    """The task queue (Celery's broker) did not take the work (503); nothing was started."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("The task queue cannot be reached.")
    default_code = "not_queued"


class BadGateway(APIException):
    """The host refused or failed what the request asked of it (502), e.g. a wrong password."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = _("The host did not do what was asked.")
    default_code = "host_error"
