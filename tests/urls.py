"""URLconf for the tests.

Usage: ``ROOT_URLCONF = "tests.urls"``; mounts the admin and the app's pages at ``/``
(namespace ``drs``; the API tests mount theirs in ``tests.api_urls``).
"""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("django_remote_submission.urls")),
]
