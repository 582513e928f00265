"""The websocket Origin check compares scheme, host and port with the origin the page was
served from, through the real ASGI application."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from dashboard.app.origins import Origin, parse_origin
from dashboard.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/services/inventory/"


async def handshake(host: str, origin: str | None, *extra: tuple[bytes, bytes]) -> bool:
    """True when the handshake is accepted (the consumer then closes an anonymous socket
    with 4401: that is past the Origin check)."""
    headers = [(b"host", host.encode()), *extra]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    socket = WebsocketCommunicator(application, PATH, headers=headers)
    connected, _ = await socket.connect()
    await socket.disconnect()
    return bool(connected)


async def test_the_same_origin_passes() -> None:
    assert await handshake("127.0.0.1:8000", "http://127.0.0.1:8000")
    assert await handshake("[::1]:8000", "http://[::1]:8000")
    assert await handshake("localhost", "http://localhost")  # port 80 both ways


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another program on the same machine
        "https://127.0.0.1:8000",  # another scheme
        "http://127.0.0.1",  # port 80, not 8000
        "http://localhost:8000",  # an allowed host, but not this page's
        "null",
        "http://127.0.0.1:notaport",
    ],
)
async def test_another_origin_is_refused(origin: str) -> None:
    assert not await handshake("127.0.0.1:8000", origin)


async def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin() -> None:
    # DNS rebinding: evil.example resolved to 127.0.0.1, its page opens a socket to it.
    assert not await handshake("evil.example:8000", "http://evil.example:8000")


async def test_behind_a_tls_proxy_https_is_the_expected_scheme(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["dash.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    tls = (b"x-forwarded-proto", b"https")
    assert await handshake("dash.example.com", "https://dash.example.com", tls)
    assert not await handshake("dash.example.com", "http://dash.example.com", tls)
    assert not await handshake("dash.example.com", "https://dash.example.com:8443", tls)
    # Without the proxy's word the connection is plain: http is the page's scheme.
    assert await handshake("dash.example.com", "http://dash.example.com")
    assert not await handshake("dash.example.com", "https://dash.example.com")


async def test_the_proxy_header_counts_only_when_configured(settings: Any) -> None:
    settings.SECURE_PROXY_SSL_HEADER = None
    forged = (b"x-forwarded-proto", b"https")
    assert not await handshake("127.0.0.1:8000", "https://127.0.0.1:8000", forged)


async def test_csrf_trusted_origins_are_let_in(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://ops.example.com", "https://*.corp.example"]
    assert await handshake("127.0.0.1:8000", "https://ops.example.com")
    assert await handshake("127.0.0.1:8000", "https://dash.corp.example")
    assert not await handshake("127.0.0.1:8000", "http://ops.example.com")
    assert not await handshake("127.0.0.1:8000", "https://ops.example.com:8443")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://LocalHost:8000", Origin("http", "localhost", 8000)),
        ("https://[::1]", Origin("https", "[::1]", 443)),
        ("ws://localhost", None),
        ("file://", None),
    ],
)
def test_it_parses_origins(value: str, expected: Origin | None) -> None:
    assert parse_origin(value) == expected
