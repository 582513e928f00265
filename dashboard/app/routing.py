"""Websocket URLs (the ASGI counterpart of urls.py); any other path is answered 404."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path, re_path

from dashboard.app.consumers import ServiceConsumer

NOT_FOUND_BODY = b"No websocket at this path: the live streams are at /ws/services/<service>/.\n"
# Where the server cannot answer a handshake with an HTTP status: a close before accepting,
# which refuses the handshake (403).
CLOSE_NOT_FOUND = 4404


async def no_such_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuses a websocket at a path nothing serves: 404 with a one-line body where the
    server supports denial responses (uvicorn does), else a refused handshake. Channels'
    router would raise instead, a 500 with a traceback in the log."""
    await receive()  # websocket.connect
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": NOT_FOUND_BODY})
    else:
        await send({"type": "websocket.close", "code": CLOSE_NOT_FOUND})


websocket_urlpatterns: list[URLPattern] = [
    path("ws/services/<str:service>/", ServiceConsumer.as_asgi()),
    re_path(r"", no_such_websocket),
]
