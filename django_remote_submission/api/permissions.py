"""Who may do what: users reach their own jobs, logs and results; staff reach everything.

    class JobViewSet(ModelViewSet):
        permission_classes = [IsAuthenticated, IsOwnerOrStaff]

Querysets are narrowed to what the user owns first (``visible_to``), so a foreign object
answers 404 like a missing one and ids do not leak; ``IsOwnerOrStaff`` is the second lock.
"""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission


def owner_id(obj) -> int | None:
    """The pk of the user owning ``obj``: a job, or anything with a ``job`` (log, result)."""
    if hasattr(obj, "owner_id"):
        return obj.owner_id
    job = getattr(obj, "job", None)
    return job.owner_id if job is not None else None


def visible_to(queryset: QuerySet, user, owner_field: str = "owner") -> QuerySet:
    """``queryset`` narrowed to the rows ``user`` may see (all for staff, none for anonymous)."""
    if user.is_staff:
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{owner_field: user})


class IsStaffOrReadOnly(BasePermission):
    """Reading for every authenticated user, writing for staff (servers, interpreters)."""

    message = "Only staff may change servers and interpreters."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or bool(request.user and request.user.is_staff)


class IsOwnerOrStaff(BasePermission):
    """The object's owner (a job's, or a log's or result's job's) or staff."""

    def has_object_permission(self, request, view, obj) -> bool:
        return bool(request.user.is_staff or owner_id(obj) == request.user.pk)
