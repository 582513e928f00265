"""Accounts made for the operator rather than by them."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from dashboard.control.roles import OPERATOR as OPERATOR_ROLE

OPERATOR = "operator"


def reset_operator(username: str = OPERATOR) -> str:
    """Creates the account `username` with the operator role, or gives it a new password;
    returns the password.

    The password is random and shown only to the caller: `make demo` prints it once
    per run, and nothing keeps it but the password hash in the database.
    """
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_active = True
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=OPERATOR_ROLE))
    return password
