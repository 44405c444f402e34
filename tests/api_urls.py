"""URLconf of the API tests: the API alone, under ``api/``.

Usage: ``pytestmark = pytest.mark.urls("tests.api_urls")``.
"""

from django.urls import include, path

urlpatterns = [path("api/", include("django_remote_submission.api.urls"))]
