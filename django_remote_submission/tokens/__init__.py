"""Personal API tokens: what scripts, notebooks and portals log in to the API with.

    # settings.py: beside "django_remote_submission"
    INSTALLED_APPS += ["knox", "django_remote_submission.tokens"]

    # a user makes one on the "My API tokens" page, or
    POST /api/tokens/  {"name": "cron", "read_only": true}    (a session, or HTTP basic)
        -> 201 {"id": 3, "token": "drs_5d1c...", "expiry": "...", ...}   (shown once)

    # then, on every request of the API
    Authorization: Bearer drs_5d1c...          (or "Token drs_5d1c...")

Tokens are django-rest-knox tokens (``ApiToken`` extends knox's ``AbstractAuthToken``): only
their SHA-512 digest is stored, each expires (``DRS["API_TOKEN_TTL"]``), and a read-only one
can only read. Making, revoking and the first use of each token are recorded in the audit
trail. Without this app the API takes sessions (and ``rest_framework.authtoken`` tokens, when
that app is installed), as before.
"""
