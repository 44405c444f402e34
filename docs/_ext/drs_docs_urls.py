"""URLs of the documentation build: the app at ``/`` as the Quickstart mounts it."""

from django.urls import include, path

urlpatterns = [path("", include("django_remote_submission.urls"))]
