"""Who may do what through the API; the rules themselves are in ``policy``.

    class JobViewSet(ModelViewSet):
        permission_classes = [IsAuthenticated, CanActOnJob]   # ApiViewMixin adds TokenScope

Querysets are narrowed to what the user may see first (``policy.visible_jobs``), so a
foreign object answers 404 like a missing one and ids do not leak; ``CanActOnJob`` then
decides whether the user may change the job they see.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from .. import policy


class TokenScope(BasePermission):
    """A read-only API token only reads (GET, HEAD, OPTIONS), whatever its user may do."""

    message = "This API token is read-only: it may only read (GET, HEAD, OPTIONS)."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or not getattr(request.auth, "read_only", False)


class CanActOnJob(BasePermission):
    """Reading a visible job; changing it (edit, delete, submit, cancel) as ``policy`` says."""

    message = "You may not change this job."

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return policy.may_see(request.user, obj)
        return policy.may_act_on(request.user, obj)
