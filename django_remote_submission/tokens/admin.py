"""Admin of API tokens: read-only rows; deleting one revokes it (recorded in the audit trail).
Tokens are made by their users (the "My API tokens" page or the API), never here."""

from __future__ import annotations

from django.contrib import admin

from . import services
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "token_key", "read_only", "created", "expiry", "last_used")
    list_filter = ("read_only",)
    list_select_related = ("user",)
    search_fields = ("name", "user__username", "token_key")
    fields = ("name", "user", "token_key", "read_only", "created", "expiry", "last_used")
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: ApiToken) -> None:
        services.revoke(obj, request.user, request=request)

    def delete_queryset(self, request, queryset) -> None:
        for token in queryset.select_related("user"):
            services.revoke(token, request.user, request=request)
