"""URLconf of the bench: the app's pages (its websocket consumer links to them), if any."""

from django.urls import include, path

try:
    urlpatterns = [path("", include("django_remote_submission.urls"))]
except ImportError:
    urlpatterns = []
