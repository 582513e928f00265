"""Logging out closes that session's open streams (4401, "log in again"), and only
that session's: a real login, a real logout, the real ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from dashboard.app.live import BACKFILL_TYPE, CLOSE_UNAUTHENTICATED
from dashboard.asgi import application
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]


def logged_in(username: str) -> Client:
    """A browser that logged in through the login page (a real session)."""
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


async def open_stream(client: Client) -> WebsocketCommunicator:
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    socket = WebsocketCommunicator(
        application, "/ws/services/inventory/", headers=[*HEADERS, (b"cookie", cookie.encode())]
    )
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == BACKFILL_TYPE
    return socket


async def test_logging_out_closes_the_sessions_streams_with_4401(operator: User) -> None:
    browser = await sync_to_async(logged_in)("alice")
    tab1, tab2 = await open_stream(browser), await open_stream(browser)

    response = await sync_to_async(browser.post)("/accounts/logout/")
    assert response.status_code == 302

    for tab in (tab1, tab2):
        assert await tab.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": CLOSE_UNAUTHENTICATED,
        }
        await tab.wait()


async def test_another_sessions_stream_stays_open(
    operator: User, django_user_model: type[User]
) -> None:
    await sync_to_async(django_user_model.objects.create_user)("bob", password=PASSWORD)
    alice, bob = await sync_to_async(logged_in)("alice"), await sync_to_async(logged_in)("bob")
    alice_laptop = await sync_to_async(logged_in)("alice")  # alice elsewhere: a session of its own
    tabs = [await open_stream(c) for c in (alice, bob, alice_laptop)]

    await sync_to_async(alice.post)("/accounts/logout/")

    assert (await tabs[0].receive_output(timeout=5))["code"] == CLOSE_UNAUTHENTICATED
    await tabs[0].wait()
    for tab in tabs[1:]:
        assert await tab.receive_nothing(timeout=0.5)
        await tab.disconnect()
