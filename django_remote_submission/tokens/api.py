"""The API of tokens: ``tokens/`` (registered by the app's API router when this app is installed).

    POST   tokens/        {"name": "cron", "read_only": true, "days": 30}
                          -> 201 {..., "token": "drs_5d1c..."}   (the key, shown this once)
    GET    tokens/        the user's tokens (every token with drs_tokens.view_apitoken)
    DELETE tokens/{id}/   revoke it (any token with drs_tokens.delete_apitoken)

Making a token needs the user's password (HTTP basic) or a session: a token never makes
another, so revoking a leaked token is the end of it.
"""

from __future__ import annotations

from django.utils.translation import ngettext
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response

from .. import policy
from ..api.filters import IdFilter
from ..api.views import ApiViewMixin, api_method, authentication_classes
from . import services
from .models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.SerializerMethodField(help_text="Username of the token's owner.")
    prefix = serializers.CharField(
        source="token_key", read_only=True, help_text="The key's first characters."
    )
    expired = serializers.BooleanField(read_only=True)
    days = serializers.IntegerField(
        write_only=True,
        required=False,
        min_value=1,
        help_text="Days until it expires (default and longest: the site's API_TOKEN_TTL).",
    )

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "read_only",
            "days",
            "user",
            "prefix",
            "created",
            "expiry",
            "expired",
            "last_used",
        ]
        read_only_fields = ["created", "expiry", "last_used"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_user(self, token: ApiToken) -> str:
        return token.user.get_username()

    def validate_days(self, days: int) -> int:
        longest = services.max_days()
        if days > longest:
            raise serializers.ValidationError(
                ngettext("At most %d day on this site.", "At most %d days on this site.", longest)
                % longest
            )
        return days


class NewApiTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        read_only=True, help_text="The key: send it as `Authorization: Bearer <key>`. Shown once."
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


class MadeWithPassword(BasePermission):
    """Tokens are made by a user who logged in with a password: HTTP basic or a session."""

    message = "Make tokens with your password (HTTP basic) or a session, not with a token."

    def has_permission(self, request, view) -> bool:
        return view.action != "create" or isinstance(
            request.successful_authenticator, BasicAuthentication | SessionAuthentication
        )


class ApiTokenFilter(filters.FilterSet):
    user = IdFilter(field_name="user", help_text="Owner's user id (useful to staff).")

    class Meta:
        model = ApiToken
        fields = ["user"]


class ApiTokenViewSet(
    ApiViewMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Personal API tokens: the user's own (every token with ``drs_tokens.view_apitoken``)."""

    serializer_class = ApiTokenSerializer
    permission_classes = [IsAuthenticated, MadeWithPassword]
    filterset_class = ApiTokenFilter
    ordering_fields = ["id", "name", "created", "expiry", "last_used"]
    ordering = ["-created", "-id"]

    def get_authenticators(self) -> list:
        return [cls() for cls in authentication_classes(BasicAuthentication)]

    def get_queryset(self):
        return policy.visible_tokens(self.request.user, ApiToken.objects.select_related("user"))

    @api_method(
        summary="Make a token",
        description="A new token of the user; the answer holds its key (`token`), shown only "
        "this once. Needs the password (HTTP basic) or a session, not a token.",
        responses={201: OpenApiResponse(NewApiTokenSerializer, "The token and its key.")},
    )
    def create(self, request, *args, **kwargs) -> Response:
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, key = services.create(request.user, request=request, **body.validated_data)
        token.token = key
        data = NewApiTokenSerializer(token, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    @api_method(summary="Revoke the token", description="Requests with it answer 401.")
    def destroy(self, request, *args, **kwargs) -> Response:
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: ApiToken) -> None:
        try:
            services.revoke(instance, self.request.user, request=self.request)
        except policy.Refused as exc:
            raise PermissionDenied(str(exc)) from None
