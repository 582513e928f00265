"""Pages. Every view needs a logged-in user (``LoginRequiredMiddleware``)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from dashboard.app.assets import JAVASCRIPT, asset
from dashboard.app.history import recent_frames, service_history
from dashboard.app.overview import PALETTE, overview, replicas
from dashboard.collector.history import json_array

# The browser keeps a script for a year: its URL changes with its content.
IMMUTABLE = "private, max-age=31536000, immutable"


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """The overview: every service of ``BALLAST_SERVICES`` at a glance, refreshed in place."""
    context = {
        **_overview_context(),
        "refresh_url": reverse("overview_cards"),
        "refresh_ms": max(1000, settings.BALLAST_COLLECTOR_INTERVAL_MS),
        "overview_js_url": _asset_url("overview.js"),
        "palette": PALETTE,
    }
    return render(request, "ballast/index.html", context)


@require_safe
@never_cache
def overview_cards(request: HttpRequest) -> HttpResponse:
    """The overview's cards alone: what the page's script swaps in on every refresh."""
    return render(request, "ballast/_overview.html", _overview_context())


def _overview_context() -> dict[str, object]:
    summaries = overview()
    return {"summaries": summaries, "replicas": replicas(summaries)}


def _known(service: str) -> str:
    if service not in settings.BALLAST_SERVICES:
        raise Http404("No such service")
    return service


@require_safe
def service(request: HttpRequest, service: str) -> HttpResponse:
    """One service's live per-pod charts and table; 404 for a service not configured."""
    page = {
        "service": _known(service),
        "ws_path": f"/ws/services/{service}/",
        "login_url": f"{reverse('login')}?{urlencode({'next': request.path})}",
        # The charts keep as many points as the history holds: its window.
        "max_points": service_history().capacity,
    }
    context = {
        "service": service,
        "page": page,
        "plotly_url": _asset_url("plotly.min.js"),
        "service_js_url": _asset_url("service.js"),
    }
    return render(request, "ballast/service.html", context)


@require_safe
@never_cache
def service_history_json(request: HttpRequest, service: str) -> HttpResponse:
    """The service's frames of the last ``HISTORY_WINDOW_S`` as a JSON array, oldest first."""
    frames = recent_frames(_known(service), int(time.time() * 1000))
    return HttpResponse(json_array(frames), content_type="application/json")


@require_safe
def script(request: HttpRequest, digest: str, name: str) -> HttpResponse:
    """A script the pages load, at the URL its content hash names (404 for a stale one)."""
    found = asset(name)
    if found is None or found.digest != digest:
        raise Http404("No such script")
    response = HttpResponse(found.body, content_type=JAVASCRIPT)
    response["Cache-Control"] = IMMUTABLE
    response["ETag"] = f'"{found.digest}"'
    return response


def _asset_url(name: str) -> str:
    found = asset(name)
    assert found is not None, name
    return found.url
