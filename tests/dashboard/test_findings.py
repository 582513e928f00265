"""The pinning finding where an operator reads it: the REST API's
`GET /api/v1/services/{s}/findings/` and the overview's card, from a frame the collector
built over real pods with clients pinned to one of them (tests/test_pinning.py's rig)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from dashboard.app.history import service_history
from dashboard.control import runtime
from tests.dashboard.test_overview import card
from tests.support.pinning import pin_clients
from tests.test_pinning import Rig, pod_of, rig

__all__ = ["rig"]  # the fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def history() -> Iterator[None]:
    service_history.cache_clear()
    yield
    service_history.cache_clear()


async def test_the_api_and_the_overview_give_the_finding(rig: Rig, operator_client: Client) -> None:
    first, _ = await rig.pods()
    assert first.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))

    def found(pinning: Any) -> bool:
        conns = pod_of(pinning, first.name).get("conns") or []
        told = [c for c in conns if c["origin"] == "bypass" and c["calls_s"]]
        return bool(pinning["pinned"] == first.name and len(told) == 2)

    pinning = await rig.pinning_when(found, "a finding about 2 connections")
    frame = rig.frame()
    frame["pinning"] = pinning  # the frame the finding was read from
    service_history().append(frame)
    get = sync_to_async(operator_client.get)
    reply = await get("/api/v1/services/inventory/findings/")
    assert reply.status_code == 200
    body = reply.json()
    assert body["service"] == "inventory" and body["pinned"] == first.name
    assert body["finding"] == pinning["finding"]
    assert f"pod {first.name}'s calls" in body["finding"]
    pods = {p["pod"]: p for p in body["pods"]}
    assert pods[first.name]["client_conns"] == 2
    assert pods[first.name]["bypass_share"] > 0.5
    assert {c["origin"] for c in pods[first.name]["conns"]} == {"bypass"}
    overview = card((await get("/")).content.decode(), "inventory")
    assert f"pod {first.name}&#x27;s calls" in overview
    assert "MAX_CONNECTION_AGE" in overview


async def test_the_api_gives_every_pods_connections_from_the_collector_here(
    rig: Rig, operator_client: Client
) -> None:
    """Frames carry the pinned pod's connections only; with the collector in the
    dashboard's process the API gives every pod's, as it holds them now."""
    first, second = await rig.pods()
    assert first.address is not None and second.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))
    rig.pinned.append(await pin_clients(second.address, 1, 5.0))

    def both(pinning: Any) -> bool:
        counts = [pod_of(pinning, p.name).get("client_conns") for p in (first, second)]
        return bool(pinning["pinned"] == first.name and counts == [2, 1])

    await rig.pinning_when(both, "a finding, and a client on each pod")
    service_history().append(rig.frame())
    assert "conns" not in pod_of(rig.frame()["pinning"], second.name)
    runtime.install(loop=asyncio.get_running_loop(), replicas=(), collector=rig.collector)
    try:
        reply = await sync_to_async(operator_client.get)("/api/v1/services/inventory/findings/")
    finally:
        runtime.reset()
    assert reply.status_code == 200
    pods = {p["pod"]: p for p in reply.json()["pods"]}
    assert [c["origin"] for c in pods[second.name]["conns"]] == ["bypass"]
    assert len(pods[first.name]["conns"]) == 2


def test_the_api_says_a_service_has_no_finding_before_its_first_frame(
    operator_client: Client,
) -> None:
    reply = operator_client.get("/api/v1/services/inventory/findings/")
    assert reply.status_code == 200
    assert reply.json() == {
        "service": "inventory", "t": None, "finding": None, "pinned": None, "pods": []
    }  # fmt: skip


def test_the_api_answers_404_for_an_unknown_service(operator_client: Client) -> None:
    reply = operator_client.get("/api/v1/services/shipping/findings/")
    assert reply.status_code == 404
    detail = reply.json()["detail"]
    assert detail == "unknown service 'shipping': the services are inventory, payments"


def test_the_api_asks_an_anonymous_caller_to_authenticate(client: Client) -> None:
    reply = client.get("/api/v1/services/inventory/findings/")
    assert reply.status_code == 401
