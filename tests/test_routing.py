"""2.1.0's ``routing.application`` still serves the websockets, and warns."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.routing import ProtocolTypeRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_2_1_0_application_serves_a_logged_in_user():
    with pytest.warns(DeprecationWarning, match="routing.application is deprecated"):
        from django_remote_submission.routing import application
    assert isinstance(application, ProtocolTypeRouter)
    user = get_user_model().objects.create_user("ada", password="pw")
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    async def scenario():
        communicator = WebsocketCommunicator(
            application, "/ws/job-user/", headers=[(b"cookie", cookie.encode())]
        )
        connected, _ = await communicator.connect()
        assert connected
        message = await communicator.receive_json_from(timeout=5)
        assert (message["type"], message["jobs"]) == ("jobs", [])
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_other_names_are_still_missing():
    import django_remote_submission.routing as routing

    with pytest.raises(AttributeError):
        routing.no_such_name  # noqa: B018
