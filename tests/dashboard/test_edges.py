"""The dashboard's edges under bad input, as a user or a hostile client meets them: the
audit page's date filters at the calendar's edges, websocket paths nothing serves and
oversized handshakes against the real uvicorn server, and `manage.py apitoken` with an
expiry beyond the calendar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import websockets
from django.test import Client

from dashboard.app.routing import NOT_FOUND_BODY
from dashboard.server import DashboardServer

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
# A raw client waits this long at most for an answer: a server that hangs fails the test.
ANSWER_TIMEOUT_S = 10.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture
async def server() -> AsyncIterator[DashboardServer]:
    """The dashboard's ASGI application on uvicorn on a free port, no collector."""
    running = DashboardServer(port=0)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs at ERROR or above (its loggers do not reach the root logger)."""
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "django")]
    for logger in loggers:
        logger.addHandler(records)
    yield records.records
    for logger in loggers:
        logger.removeHandler(records)


# ---- the audit page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["since=0001-01-01T00:00:00%2B05:00", "until=9999-12-31T23:59:59-05:00"],
)
def test_the_audit_page_says_a_date_beyond_the_calendar_is_out_of_range(
    operator_client: Client, query: str
) -> None:
    page = operator_client.get(f"/audit/?{query}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="filter-error"' in html
    assert "is out of range: use a date and time from 0001-01-01 to 9999-12-31 in UTC" in html


def test_the_audit_page_filters_by_date(operator_client: Client) -> None:
    from dashboard.control.models import AuditEvent

    AuditEvent.objects.create(actor="alice", source="ui", action="drain", result="ok")
    shown = operator_client.get("/audit/?since=0001-01-01T00:00Z").content.decode()
    hidden = operator_client.get("/audit/?until=2000-01-01T00:00Z").content.decode()
    assert "No events match these filters" in hidden
    assert "No events" not in shown
    assert 'id="filter-error"' not in shown + hidden


# ---- websockets --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/services/inventory/extra/", "/", "/ws/"])
async def test_it_answers_a_websocket_path_nothing_serves_404_without_a_traceback(
    server: DashboardServer, server_errors: list[logging.LogRecord], path: str
) -> None:
    url = f"ws://127.0.0.1:{server.port}{path}"
    origin = websockets.Origin(f"http://127.0.0.1:{server.port}")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with asyncio.timeout(ANSWER_TIMEOUT_S), websockets.connect(url, origin=origin):
            pass
    assert refused.value.response.status_code == 404
    assert refused.value.response.body == NOT_FOUND_BODY
    assert [r for r in server_errors if r.levelno >= logging.ERROR] == []


def _handshake(port: int, headers: str) -> bytes:
    """A websocket handshake with `headers` over a raw socket: the first bytes of the
    answer, b"" when the server closed without one. Raises TimeoutError on a hang."""
    request = (
        f"GET /ws/services/inventory/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n{headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as client:
        # Closed while we were still sending: refused, not hung.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sendall(request.encode())
        try:
            return client.recv(200)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize(
    ("shape", "headers"),
    [
        ("one 100 KB header", f"X-Pad: {'a' * 100_000}\r\n"),
        ("200 headers of 500 B", "".join(f"X-Pad-{i}: {'a' * 500}\r\n" for i in range(200))),
    ],
)
async def test_it_refuses_an_oversized_websocket_handshake_at_once(
    server: DashboardServer, shape: str, headers: str
) -> None:
    answer = await asyncio.to_thread(_handshake, server.port, headers)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large"), (shape, answer)


async def test_a_handshake_of_ordinary_size_still_opens(server: DashboardServer) -> None:
    answer = await asyncio.to_thread(_handshake, server.port, "X-Pad: small\r\n")
    assert answer.startswith(b"HTTP/1.1 101"), answer


# ---- manage.py apitoken ------------------------------------------------------------------


def test_apitoken_refuses_an_expiry_beyond_the_calendar_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(BALLAST_DEV="1", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    done = subprocess.run(
        [sys.executable, "manage.py", "apitoken", "create", "--user", "ops",
         "--expires-days", "999999999"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "CommandError: --expires-days must be from 1 to 3650 (ten years); leave it out for a"
        " token that never expires"
    ]


async def test_the_asgi_application_closes_a_websocket_path_nothing_serves() -> None:
    from channels.testing import WebsocketCommunicator

    from dashboard.app.routing import CLOSE_NOT_FOUND
    from dashboard.asgi import application

    communicator = WebsocketCommunicator(
        application,
        "/ws/nope/",
        headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")],
    )
    connected, code = await communicator.connect(timeout=ANSWER_TIMEOUT_S)
    assert (connected, code) == (False, CLOSE_NOT_FOUND)
