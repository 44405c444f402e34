"""URLs of the pages (namespace ``drs``); the websockets are in ``routing.py``.

    # the project's urls.py
    path("", include("django_remote_submission.urls")),
    reverse("drs:job-detail", args=[job.pk])
    reverse("drs:drs_api:job-list")           # the REST API, under api/

``login/`` and ``logout/`` are Django's auth views with the app's template; a project with
its own login page sets ``LOGIN_URL`` to it and need not use them.
"""

from django.apps import apps
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

app_name = "drs"

urlpatterns = [
    path("", views.job_list, name="job-list"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("jobs/new/", views.job_create, name="job-create"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/row/", views.job_row, name="job-row"),
    path("jobs/<int:pk>/results/", views.job_results, name="job-results"),
    path("jobs/<int:pk>/log.txt", views.job_log, name="job-log"),
    path("jobs/<int:pk>/submit/", views.job_submit, name="job-submit"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/results/<int:result_pk>/", views.result_download, name="result-download"),
    path("templates/", views.template_list, name="template-list"),
    path("templates/<int:pk>/", views.template_run, name="template-run"),
    path(
        "jobs/<int:pk>/results/<int:result_pk>/inline/",
        views.result_inline,
        name="result-inline",
    ),
    path("keys/", views.key_list, name="key-list"),
    path("keys/<int:server_pk>/account/", views.account_edit, name="account-edit"),
    path("keys/<int:server_pk>/create/", views.key_create, name="key-create"),
    path("keys/<int:server_pk>/install/", views.key_install, name="key-install"),
    path("keys/<int:server_pk>/remove/", views.key_remove, name="key-remove"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="django_remote_submission/login.html",
            redirect_authenticated_user=True,
            next_page="drs:job-list",
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="drs:login"), name="logout"),
    path("api/", include("django_remote_submission.api.urls")),  # REST API, schema, docs
]
if apps.is_installed("django_remote_submission.tokens"):  # "My API tokens"
    from .tokens.urls import urlpatterns as token_urlpatterns

    urlpatterns += token_urlpatterns
