"""ASGI app of the test project, served by daphne in the browser test.

Usage: ``DJANGO_SETTINGS_MODULE=tests.settings python -m daphne tests.asgi:application``.
Set ``DRS_CHANNEL_REDIS=redis://...`` so that a worker's broadcasts reach it.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

import tests.celery_app  # noqa: E402, F401  (the Celery app that .delay() sends through)
from django_remote_submission.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_application),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
