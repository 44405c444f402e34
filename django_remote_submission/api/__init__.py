"""The REST API: servers, interpreters, jobs, logs and results over HTTP, with an OpenAPI schema.

    # project urls.py (the app's own urls.py already does this under its prefix)
    path("api/", include("django_remote_submission.api.urls"))

    # a client, with a personal API token ("My API tokens", or POST /api/tokens/ with the
    # password over HTTP basic): Authorization: Bearer drs_...
    POST /api/jobs/               {"title", "program", "server", "interpreter",
                                   "remote_directory", "remote_filename"}
    POST /api/jobs/{id}/submit/   {"password": "...", "timeout": 60}          -> 202
    GET  /api/logs/?job={id}&after={last id seen}                             -> new lines
    GET  /api/logs/window/?job={id}               -> the last page of the log, and its rows
    GET  /api/results/{id}/download/                                          -> the file

Everything needed is set on the views themselves (authentication, permissions, pagination,
filters, parsers, schema class), so the project's ``REST_FRAMEWORK`` settings do not matter.
The project needs ``rest_framework``, ``django_filters`` and ``drf_spectacular`` in
``INSTALLED_APPS``, and ``knox`` with ``django_remote_submission.tokens`` for API tokens
(``rest_framework.authtoken`` keys are accepted too where that app is installed).
"""
