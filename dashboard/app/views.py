"""Pages. Every view needs a logged-in user (``LoginRequiredMiddleware``)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """The services configured with ``BALLAST_SERVICES``."""
    return render(request, "ballast/index.html", {"services": settings.BALLAST_SERVICES})
