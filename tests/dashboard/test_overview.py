"""The overview page: each service at a glance from its newest frame, and the replicas."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from dashboard.app.history import service_history
from dashboard.collector.frames import build_frame
from tests.test_collector_frames import endpoint_rates

pytestmark = pytest.mark.django_db


def keep(
    service: str,
    pods: dict[str, float],
    *,
    age_s: float = 0.5,
    up: bool = True,
    converged: bool | None = None,
) -> None:
    """A frame of `service` with these per-pod rates, `age_s` old, into the page history."""
    t_ms = int((time.time() - age_s) * 1000)
    endpoints = [endpoint_rates(pod, rps) for pod, rps in pods.items()]
    frame: Any = build_frame(
        service, t_ms, endpoints, [], [{"id": "b0", "up": up, "converged": converged}]
    )
    service_history().append(frame)


@pytest.fixture(autouse=True)
def history() -> Iterator[None]:
    service_history.cache_clear()
    yield
    service_history.cache_clear()


def card(body: str, service: str) -> str:
    match = re.search(rf'<section [^>]*data-service="{service}".*?</section>', body, re.S)
    assert match, f"no card for {service}"
    return match[0]


def test_a_skewed_service_is_flagged_and_an_even_one_is_not(operator_client: Client) -> None:
    keep("inventory", {"pod-a": 90.0, "pod-b": 10.0, "pod-c": 10.0})
    keep("payments", {"pod-x": 50.0, "pod-y": 51.0})
    body = operator_client.get("/").content.decode()

    inventory = card(body, "inventory")
    assert "flagged" in inventory.split(">", 1)[0]
    assert "imbalanced, busiest 2.46× mean" in inventory
    assert "110.0" in inventory  # total req/s
    assert inventory.count('class="p') == 3  # a share segment per pod
    assert 'title="pod-a: 90.0 req/s (82%)"' in inventory

    payments = card(body, "payments")
    assert "flagged" not in payments.split(">", 1)[0]
    assert "balanced, max/mean 1.01" in payments


def test_a_service_without_frames_says_so(operator_client: Client) -> None:
    body = operator_client.get("/").content.decode()
    assert "no data yet" in card(body, "inventory")


def test_a_stopped_collector_shows_as_stale(operator_client: Client) -> None:
    keep("inventory", {"pod-a": 10.0}, age_s=60)
    body = operator_client.get("/").content.decode()
    assert re.search(r"stale: last frame \d+ s ago", card(body, "inventory"))


@override_settings(BALLAST_BALANCERS={"b0": "127.0.0.1:9901", "b1": "10.0.0.2:9901"})
def test_replicas_show_up_down_or_unknown(operator_client: Client) -> None:
    keep("inventory", {"pod-a": 10.0}, up=False)
    body = operator_client.get("/").content.decode()
    replicas = re.search(r'<table class="replicas".*?</table>', body, re.S)
    assert replicas
    rows = re.findall(r"<code>(\w+)</code>.*?class=\"(\w+)\">(\w+)<", replicas[0], re.S)
    assert rows == [("b0", "down", "down"), ("b1", "muted", "unknown")]


def test_the_cards_refresh_alone_for_logged_in_users_only(operator_client: Client) -> None:
    keep("inventory", {"pod-a": 10.0, "pod-b": 10.0})
    cards = operator_client.get("/overview/cards")
    assert cards.status_code == 200
    assert "<html" not in cards.content.decode()
    assert 'data-service="inventory"' in cards.content.decode()
    assert Client().get("/overview/cards").status_code == 302


def test_the_page_loads_its_refresh_script(operator_client: Client) -> None:
    body = operator_client.get("/").content.decode()
    src = re.search(r'<script src="([^"]+overview\.js)"', body)
    assert src
    script = operator_client.get(src[1])
    assert script.status_code == 200
    assert b"/overview/cards" not in script.content  # the URL comes from the page
    assert 'data-refresh-url="/overview/cards"' in body


@pytest.mark.parametrize(("converged", "shown"), [(True, "in sync"), (False, "pending")])
def test_a_replica_that_is_up_says_whether_it_holds_the_desired_state(
    operator_client: Client, converged: bool, shown: str
) -> None:
    keep("inventory", {"pod-a": 10.0}, converged=converged)
    body = operator_client.get("/").content.decode()
    replicas = re.search(r'<table class="replicas".*?</table>', body, re.S)
    assert replicas and shown in replicas[0]
