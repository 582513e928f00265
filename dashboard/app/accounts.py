"""Accounts made for the operator rather than by them."""

from __future__ import annotations

import secrets

from axes.utils import reset as axes_reset
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from dashboard.control.roles import OPERATOR as OPERATOR_ROLE

OPERATOR = "operator"
LOOPBACK = ("127.0.0.1", "::1")


def reset_operator(username: str = OPERATOR) -> str:
    """Creates the account `username` with the operator role, or gives it a new password;
    returns the password.

    The password is random and shown only to the caller: `make demo` prints it once
    per run, and nothing keeps it but the password hash in the database. Login lockouts
    of the account and of this machine (loopback) end with it: they were against the old
    password, and the new one must work at once.
    """
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_active = True
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=OPERATOR_ROLE))
    for address in LOOPBACK:
        axes_reset(ip=address)
    axes_reset(username=username)
    return password
