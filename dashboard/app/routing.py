"""Websocket URLs (the ASGI counterpart of urls.py)."""

from __future__ import annotations

from django.urls import URLPattern, path

from dashboard.app.consumers import ServiceConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/services/<str:service>/", ServiceConsumer.as_asgi()),
]
