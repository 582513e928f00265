"""Every API error as JSON `{"detail": "..."}` with a message that says what was wrong and
what to do: the actions' refusals with their status, and DRF's own errors (validation,
authentication, permission, parsing) flattened to one message."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from dashboard.control.actions import ActionError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the actions' refusals (`ActionError`) with their status; a
    validation error's field messages become one `detail` ("weight: ...")."""
    if isinstance(exc, ActionError):
        return Response({"detail": str(exc)}, status=exc.status)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": flatten(exc.detail)}
    if response is not None and isinstance(exc, exceptions.UnsupportedMediaType):
        response.data = {"detail": f"{exc.detail} Send JSON (Content-Type: application/json)."}
    return response


def flatten(detail: Any, field: str = "") -> str:
    """Field errors as one line: `weight: a whole number is needed; expires_in_s: ...`."""
    if isinstance(detail, dict):
        parts = [flatten(value, _join(field, str(key))) for key, value in detail.items()]
        return "; ".join(p for p in parts if p)
    if isinstance(detail, list):
        return "; ".join(flatten(item, field) for item in detail)
    return f"{field}: {detail}" if field else str(detail)


def _join(outer: str, inner: str) -> str:
    if inner == api_settings.NON_FIELD_ERRORS_KEY:
        return outer
    return f"{outer}.{inner}" if outer else inner
