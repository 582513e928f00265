"""What every API view shares: DRF's own authentication instead of the login redirect,
the acting user as an `Actor`, the service and pod of the path checked before anything
looks them up, and refused attempts to act written to the audit log (bounded: names
checked and cut first, at most so many rows per actor a minute: `denials`)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from django.contrib.auth.decorators import login_not_required
from knox.models import AuthToken
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.views import APIView

from dashboard.control import actions
from dashboard.control.actions import ActionError, Actor
from dashboard.control.api.denials import DenialLimiter
from dashboard.control.models import AuditEvent

# One write at a time in this process (acts, denied attempts): SQLite, the default
# database, has no row locks, and two transactions that read and then write at once fail
# ("database is locked") instead of one waiting for the other. Acts are rare and short.
ACTING = threading.Lock()
# Denied attempts to act, per actor, at a bounded rate (guarded by ACTING).
DENIALS = DenialLimiter()


def actor_of(request: Request) -> Actor:
    """Who acts: a token's user from automation ("api"), else the dashboard's session ("ui")."""
    token = request.auth if isinstance(request.auth, AuthToken) else None
    source = AuditEvent.Source.API if token is not None else AuditEvent.Source.UI
    user = request.user
    return Actor(
        name=user.get_username(), source=source, token=token.token_key if token else "", user=user
    )


class ControlView(APIView):
    """A view of the API.

    Exempt from `LoginRequiredMiddleware`: DRF authenticates (a knox token or the
    session) and answers an anonymous request 401 with `WWW-Authenticate: Token`, as
    JSON, rather than redirecting it to the login page. A logged-in user without the
    operator role who tries to act gets 403, and the attempt is audited ("denied")
    under the view's `action_names` for the method.
    """

    action_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return login_not_required(super().as_view(**initkwargs))

    def check_permissions(self, request: Request) -> None:
        # A method the view does not have is 405 whoever asks, never a denied act.
        if request.method and not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method)
        user = request.user
        if user and user.is_authenticated:  # anonymous callers learn no names: 401
            self.check_names(request)
        super().check_permissions(request)

    def check_names(self, request: Request) -> None:
        """The path's service must be configured (404) and its pod well formed (400);
        an attempt to act that the caller may not make is audited even then, with the
        names cut to a bounded length."""
        service, pod = self.kwargs.get("service"), self.kwargs.get("pod")
        try:
            if service is not None:
                actions.known_service(service)
            if pod is not None:
                actions.valid_pod_name(pod)
        except ActionError:
            if request.method not in SAFE_METHODS and not self._may_act(request):
                self._audit_denial(request, actions.shown(service or ""), actions.shown(pod or ""))
            raise

    def _may_act(self, request: Request) -> bool:
        return all(p.has_permission(request, self) for p in self.get_permissions())

    def _audit_denial(self, request: Request, service: str, target: str) -> None:
        name = self.action_names.get(request.method or "", (request.method or "").lower())
        with ACTING:  # cut to the columns' sizes: a database other than SQLite enforces them
            DENIALS.audit(actor_of(request), name[:32], service[:64], target[:253])

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> None:
        user = request.user
        if user and user.is_authenticated and request.method not in SAFE_METHODS:
            service = self.kwargs.get("service", "")
            self._audit_denial(request, service, self.kwargs.get("pod", service))
        super().permission_denied(request, message, code)
