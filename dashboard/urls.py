"""URL map; the dashboard issue adds the pages and the REST API."""

from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
