from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.support.redis import MISSING, running_redis

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    """Each test gets its own in-memory channel layer: groups and queues another test
    left behind (a consumer cut off at server shutdown) do not leak into it."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def operator(django_user_model: type[User]) -> User:
    """A logged-in-able operator account."""
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def operator_client(client: Client, operator: User) -> Client:
    client.force_login(operator)
    return client


@pytest.fixture
def session_cookie(operator: User) -> bytes:
    """A `Cookie` header value of a logged-in operator's session."""
    client = Client()
    client.force_login(operator)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={session}".encode()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """The URL of this test's own real redis-server, stopped at teardown.

    Fails rather than skips without the binary: CI installs it, so a skip would hide a
    Redis test that never ran.
    """
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING, pytrace=False)
    with running_redis(tmp_path) as url:
        yield url
