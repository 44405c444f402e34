"""Django settings of the documentation build: the apps of the Quickstart, no database.

The build imports the app (autodoc), asks it for its OpenAPI schema and renders example
payloads; it never opens a connection.
"""

SECRET_KEY = "documentation-build-not-secret"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "knox",
    "django_remote_submission",
    "django_remote_submission.tokens",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth"]},
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "drs_docs_urls"
STATIC_URL = "/static/"
ALLOWED_HOSTS = ["testserver"]
# The API tests hold the schema to its warnings; the docs build only renders it.
SPECTACULAR_SETTINGS = {"DISABLE_ERRORS_AND_WARNINGS": True}
