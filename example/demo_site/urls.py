"""URLs: the admin, the app's REST API under ``api/`` and its pages at the root."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("django_remote_submission.api.urls")),
    path("", include("django_remote_submission.urls")),
]
