"""The pages show the third path: calls proxyless (xDS) clients send straight to the pods,
and whether every proxyless client ACKed the endpoints being served."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest
from django.test import Client

from dashboard.app.history import service_history
from dashboard.collector.frames import ReplicaFrame, XdsFrame, build_frame
from dashboard.collector.scrape import PodRates
from tests.dashboard.test_overview import card
from tests.test_collector_frames import endpoint_rates, pod_facts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_dashboard_state")]
PODS = ("inventory-a", "inventory-b")
UP: list[ReplicaFrame] = [{"id": "b0", "up": True, "converged": True}]


def keep(proxyless: tuple[float, float], own: tuple[float, float], xds: XdsFrame | None) -> None:
    """A frame of inventory: the proxy carries 10/s to each pod, proxyless clients send
    `proxyless`, the pods count `own`."""
    rates = [
        dataclasses.replace(endpoint_rates(name, 10.0), proxyless_rps=px)
        for name, px in zip(PODS, proxyless, strict=True)
    ]
    frame: Any = build_frame(
        "inventory",
        int((time.time() - 0.5) * 1000),
        rates,
        [pod_facts(name) for name in PODS],
        UP,
        pod_rates={name: PodRates(rps, 0) for name, rps in zip(PODS, own, strict=True)},
        xds=xds,
    )
    service_history().append(frame)


def figure(body: str, label: str) -> str:
    found = re.search(rf"<span>{label}</span><b[^>]*>([^<]*)</b>", body)
    assert found is not None, f"no figure {label!r}"
    return found.group(1)


def test_it_shows_the_proxyless_total_and_share_on_the_overview(operator_client: Client) -> None:
    keep((20.0, 20.0), own=(30.0, 30.0), xds={"clients": 3, "in_sync": 3, "fallback": False})
    body = card(operator_client.get("/").content.decode(), "inventory")
    assert figure(body, "proxyless") == "40.0"
    assert "share of proxyless requests (xDS)" in body
    assert "xDS clients: 3, all in sync" in body
    # 10/s via the proxy and 20/s proxyless make up all the pods report: nothing bypassed.
    assert figure(body, "bypassing") == "0.0"
    assert "share of requests bypassing Ballast (L4)" not in body


def test_it_says_how_many_xds_clients_have_not_acked_yet(operator_client: Client) -> None:
    keep((20.0, 20.0), own=(30.0, 30.0), xds={"clients": 3, "in_sync": 1, "fallback": False})
    body = card(operator_client.get("/").content.decode(), "inventory")
    assert "xDS clients: 3, 2 pending" in body


def test_it_shows_no_xds_badge_for_a_service_without_proxyless_clients(
    operator_client: Client,
) -> None:
    keep((0.0, 0.0), own=(10.0, 10.0), xds=None)
    body = card(operator_client.get("/").content.decode(), "inventory")
    assert "xDS clients" not in body
    assert "share of proxyless requests" not in body
    assert figure(body, "proxyless") == "0.0"


def test_the_service_page_has_a_proxyless_chart_and_an_xds_badge(operator_client: Client) -> None:
    html = operator_client.get("/services/inventory/").content.decode()
    assert 'id="chart-px_rps"' in html
    assert re.search(r'<span id="xds-clients" class="badge"[^>]* hidden>', html)


def test_the_service_pages_history_carries_the_proxyless_figures(operator_client: Client) -> None:
    keep((20.0, 5.0), own=(30.0, 15.0), xds={"clients": 2, "in_sync": 1, "fallback": False})
    frames = operator_client.get("/services/inventory/history.json").json()
    (frame,) = frames
    assert [p["px_rps"] for p in frame["pods"]] == [20.0, 5.0]
    assert frame["totals"]["px_rps"] == 25.0
    assert frame["xds"] == {"clients": 2, "in_sync": 1, "fallback": False}


def test_it_says_which_version_the_xds_clients_are_on_and_who_lags(
    operator_client: Client,
) -> None:
    words = "xDS clients: 1 of 2 on version 13; client shop-1 NACKed CDS 13: bad policy"
    xds: XdsFrame = {
        "clients": 2,
        "in_sync": 1,
        "fallback": False,
        "versions": {"b0": "13"},
        "lagging": [{"node": "shop-1", "replica": "b0", "version": "12", "nack": "CDS 13: x"}],
        "label": words,
    }
    keep((20.0, 20.0), own=(30.0, 30.0), xds=xds)
    body = card(operator_client.get("/").content.decode(), "inventory")
    assert re.search(rf'class="badge warn"[^>]*>{re.escape(words)}</span>', body)
