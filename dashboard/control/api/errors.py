"""Every API error as JSON with a message that says what was wrong and what to do."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from dashboard.control.actions import ActionError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the actions' refusals (`ActionError`) with their status."""
    if isinstance(exc, ActionError):
        return Response({"detail": str(exc)}, status=exc.status)
    return drf_exception_handler(exc, context)
