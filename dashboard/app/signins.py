"""Logins: what django-axes counts, and what the audit log says about failures.

django-axes counts failed logins per account and per client address and locks either
out for a cool-off (settings: ``AXES_*``). This module gives it the attempted username
(bounded), the client address (from the proxy's header only when one is configured),
and a handler that audits each failure and each lockout as an ``AuditEvent``
(source ``ui``): ``login_failed`` (result ``failed``) and ``login_locked`` (``denied``).

Attempts refused during a lockout are not audited one by one: the lockout entry says
the account or address is locked, and a flood of refused attempts must not grow the
audit log without bound.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.http import HttpRequest

from dashboard.control.models import AuditEvent

LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"
# User.username's length: no account has a longer name, so nothing is lost by cutting.
USERNAME_MAX = 150


def attempted_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The username a login attempt named, cut to ``USERNAME_MAX`` characters (axes keeps
    it in a 255-character column; a longer one must not fail the request)."""
    name = (credentials or {}).get("username")
    if name is None:
        name = request.POST.get("username")
    return None if name is None else str(name)[:USERNAME_MAX]


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the last item of ``BALLAST_CLIENT_IP_HEADER`` (the one the
    reverse proxy in front appended; the items before it are the client's own say) when
    that setting names a header and the request carries a valid address in it, else
    the connection's peer (``REMOTE_ADDR``)."""
    header = settings.BALLAST_CLIENT_IP_HEADER
    if header:
        last = request.META.get(header, "").rpartition(",")[2].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # absent or mangled: the peer is the best we know
    address = request.META.get("REMOTE_ADDR")
    return str(address) if address else None


class AuditedAxesHandler(AxesDatabaseHandler):  # type: ignore[misc]
    """axes' database handler that also writes the audit log."""

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        # The backend marks an attempt it refused because of a lockout before this runs.
        refused = bool(getattr(request, "axes_locked_out", False))
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or refused:
            return
        username = attempted_username(request, credentials) or ""
        address = getattr(request, "axes_ip_address", None) or ""
        failures = getattr(request, "axes_failures_since_start", 0)
        limit = settings.AXES_FAILURE_LIMIT
        if getattr(request, "axes_locked_out", False):
            cooloff_s = int(settings.AXES_COOLOFF_TIME.total_seconds())
            action, result = LOGIN_LOCKED, AuditEvent.Result.DENIED
            detail = (
                f"{failures} failed logins for this account or from {address or 'this address'}:"
                f" logins refused for {cooloff_s} s (or until `manage.py axes_reset`)"
            )
        else:
            action, result = LOGIN_FAILED, AuditEvent.Result.FAILED
            detail = f"wrong username or password (failure {failures} of {limit})"
        AuditEvent.objects.create(
            actor=username, source=AuditEvent.Source.UI, action=action,
            target=address[:253], result=result, detail=detail,
        )  # fmt: skip
