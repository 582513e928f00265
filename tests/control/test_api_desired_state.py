"""`GET /api/v1/desired-state/`: what a starting balancer replica fetches — who may read it,
its shape, expired overrides left out, and its place in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken

from dashboard.control.models import ClusterOverride, EndpointOverride
from dashboard.control.roles import OPERATOR, VIEWER

pytestmark = pytest.mark.django_db

URL = "/api/v1/desired-state/"


def _user(name: str, role: str | None) -> User:
    user = User.objects.create_user(name, password="correct horse battery staple")
    if role is not None:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def _session(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _token(user: User) -> Client:
    _, key = AuthToken.objects.create(user=user, expiry=None)
    return Client(headers={"Authorization": f"Token {key}"})


def _get(client: Client) -> tuple[int, Any]:
    reply = client.get(URL)
    return reply.status_code, reply.json()


def _override(endpoint_id: str, **fields: Any) -> EndpointOverride:
    fields.setdefault("service", "inventory")
    return EndpointOverride.objects.create(endpoint_id=endpoint_id, **fields)


def test_it_answers_viewers_operators_and_tokens() -> None:
    viewer, operator = _user("viewer", VIEWER), _user("operator", OPERATOR)
    nobody = _user("nobody", None)
    for client in (_session(viewer), _session(operator), _token(viewer), _token(operator)):
        status, body = _get(client)
        assert status == 200, body
        assert body["services"] == []
    assert _get(_session(nobody))[0] == 200  # a user in no group reads only, like the other reads


def test_it_refuses_the_anonymous_and_a_bad_token() -> None:
    status, body = _get(Client())
    assert status == 401
    assert "credentials" in body["detail"].lower()
    bad = Client(headers={"Authorization": "Token not-a-token"})
    assert _get(bad)[0] == 401


def test_it_only_reads() -> None:
    reply = _token(_user("operator", OPERATOR)).post(URL, {}, content_type="application/json")
    assert reply.status_code == 405


def test_it_gives_policies_weights_and_drains_by_service() -> None:
    _override("pod-b", drained=True, drain_timeout_s=3.0)
    _override("pod-a", weight=250)
    _override("pod-c", weight=None, drained=False)  # asks nothing: left out
    _override("pay-0", service="payments", weight=0, drained=True)
    ClusterOverride.objects.create(service="inventory", policy="peak_ewma", base_policy="random")
    ClusterOverride.objects.create(service="orders", policy="random")
    status, body = _get(_token(_user("viewer", VIEWER)))
    assert status == 200
    assert body["services"] == [
        {"name": "inventory", "policy": "peak_ewma", "endpoints": [
            {"endpoint_id": "pod-a", "weight": 250, "drained": False, "drain_timeout_s": None},
            {"endpoint_id": "pod-b", "weight": None, "drained": True, "drain_timeout_s": 3.0},
        ]},
        {"name": "orders", "policy": "random", "endpoints": []},
        {"name": "payments", "policy": None, "endpoints": [
            {"endpoint_id": "pay-0", "weight": 0, "drained": True, "drain_timeout_s": None},
        ]},
    ]  # fmt: skip
    generated = datetime.fromisoformat(body["generated_at"])
    assert abs(generated - timezone.now()) < timedelta(minutes=1)


def test_it_leaves_out_overrides_whose_time_is_up() -> None:
    past, future = timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(hours=1)
    _override("pod-a", weight=300, expires_at=past)
    _override("pod-b", drained=True, expires_at=future)
    ClusterOverride.objects.create(service="inventory", policy="random", expires_at=past)
    ClusterOverride.objects.create(service="orders", policy="random", expires_at=past)
    _, body = _get(_token(_user("viewer", VIEWER)))
    assert body["services"] == [
        {"name": "inventory", "policy": None, "endpoints": [
            {"endpoint_id": "pod-b", "weight": None, "drained": True, "drain_timeout_s": None},
        ]},
    ]  # fmt: skip


def test_the_schema_lists_it() -> None:
    reply = _token(_user("viewer", VIEWER)).get("/api/schema/")
    assert reply.status_code == 200
    schema = reply.json()
    get = schema["paths"][URL]["get"]
    assert list(get["responses"]) == ["200"]
    ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    out = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(out["properties"]) == {"services", "generated_at"}
    endpoint = schema["components"]["schemas"]["EndpointStateOut"]["properties"]
    assert set(endpoint) == {"endpoint_id", "weight", "drained", "drain_timeout_s"}
