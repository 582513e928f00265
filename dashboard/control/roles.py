"""Roles: `viewer` reads, `operator` acts, and admins (superusers) do both and manage
accounts and tokens in the Django admin. Roles are Django groups; a user in no group
reads only.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

VIEWER = "viewer"
OPERATOR = "operator"


def can_act(user: Any) -> bool:
    """May change desired state, restart pods and roll out deployments."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return bool(user.is_superuser or user.groups.filter(name=OPERATOR).exists())


def role_of(user: Any) -> str:
    if user.is_superuser:
        return "admin"
    return OPERATOR if can_act(user) else VIEWER


class ReadOrOperate(BasePermission):
    """Reading needs a logged-in user (or a token); acting needs the operator role.

    A refused attempt to act is answered 403 and written to the audit log by the view
    (`api.views.ControlView.permission_denied`).
    """

    message = "acting needs the operator role; this account may only read"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or can_act(user)
