"""URLconf for the tests.

Usage: ``ROOT_URLCONF = "tests.urls"``; mounts the admin and the app's pages at ``/``
(namespace ``drs``; the API tests mount theirs in ``tests.api_urls``) and the metrics at
``/metrics``.
"""

from django.contrib import admin
from django.urls import include, path

from django_remote_submission.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view),
    path("", include("django_remote_submission.urls")),
]
