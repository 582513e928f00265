"""API tokens: `manage.py apitoken` and the admin make them, and revoking one locks it out."""

from __future__ import annotations

import io
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from knox.models import AuthToken

from tests.control.conftest import ANONYMOUS, Api

pytestmark = pytest.mark.django_db(transaction=True)


def apitoken(*args: str) -> str:
    out = io.StringIO()
    call_command("apitoken", *args, stdout=out)
    return out.getvalue()


async def test_a_created_token_works_until_revoked(api: Api) -> None:
    printed = await sync_to_async(apitoken)("create", "--user", "operator", "--expires-days", "7")
    assert "It will not be shown again" in printed
    token = printed.splitlines()[1]
    prefix = re.search(r"key prefix (\S+):", printed)
    assert prefix is not None and token.startswith(prefix.group(1))
    headers = {"Authorization": f"Token {token}"}

    reply = await api.call("GET", "/api/v1/services/", who=ANONYMOUS, headers=headers)
    assert reply.status == 200
    listed = await sync_to_async(apitoken)("list", "--user", "operator")
    assert prefix.group(1) in listed
    assert "operator" in listed

    revoked = await sync_to_async(apitoken)("revoke", prefix.group(1))
    assert f"Revoked 1 token with prefix {prefix.group(1)}" in revoked
    reply = await api.call("GET", "/api/v1/services/", who=ANONYMOUS, headers=headers)
    assert reply.status == 401
    assert reply.body == {"detail": "Invalid token."}


def test_it_names_an_unknown_user_or_prefix(credentials: object) -> None:
    with pytest.raises(CommandError, match="no user 'mallory'"):
        apitoken("create", "--user", "mallory")
    with pytest.raises(CommandError, match="no API token has the key prefix 'abc'"):
        apitoken("revoke", "abc")
    with pytest.raises(CommandError, match="--expires-days must be from 1 to 3650"):
        apitoken("create", "--user", "viewer", "--expires-days", "0")


def test_an_admin_creates_a_token_in_the_admin_and_sees_it_once(
    credentials: object, admin_user: User
) -> None:
    client = Client()
    client.force_login(admin_user)
    owner = User.objects.get(username="viewer")
    response = client.post(
        "/admin/knox/authtoken/add/", {"user": owner.pk, "expiry": ""}, follow=True
    )
    assert response.status_code == 200
    [token] = [
        str(m).removeprefix("TOKEN ")
        for m in response.context["messages"]
        if str(m).startswith("TOKEN ")
    ]
    assert AuthToken.objects.filter(user=owner, token_key=token[:15]).exists()
    assert client.get("/admin/control/auditevent/").status_code == 200
    assert client.get("/admin/control/auditevent/add/").status_code == 403
    assert client.get("/admin/control/operation/").status_code == 200
    assert client.get("/admin/control/endpointoverride/").status_code == 200
    assert client.get("/admin/control/clusteroverride/").status_code == 200
