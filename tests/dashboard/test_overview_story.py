"""The overview says in words which path is skewed, and shows trouble beyond traffic:
restarts (OOMKilled said) in the last minutes, pods not ready, replicas down or out of
sync."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from dashboard.app.history import service_history
from dashboard.collector.frames import ReplicaFrame, build_frame
from dashboard.collector.scrape import PodRates
from tests.dashboard.test_overview import card
from tests.test_collector_frames import endpoint_rates, pod_facts

pytestmark = pytest.mark.django_db
PODS = ("inventory-a", "inventory-b")
UP: list[ReplicaFrame] = [{"id": "b0", "up": True, "converged": True}]


@pytest.fixture(autouse=True)
def history() -> Iterator[None]:
    service_history.cache_clear()
    yield
    service_history.cache_clear()


def keep(
    age_s: float,
    *,
    own: tuple[float, float] = (10.0, 10.0),
    restarts: tuple[int, int] = (0, 0),
    reason: str | None = None,
    ready: tuple[bool, bool] = (True, True),
    replicas: list[ReplicaFrame] = UP,
) -> None:
    """A frame of inventory: Ballast carries 10/s to each pod; the pods count `own`."""
    t_ms = int((time.time() - age_s) * 1000)
    facts = [
        pod_facts(name, restart_count=n, ready=ok, last_termination_reason=reason if n else None)
        for name, n, ok in zip(PODS, restarts, ready, strict=True)
    ]
    frame: Any = build_frame(
        "inventory",
        t_ms,
        [endpoint_rates(name, 10.0) for name in PODS],
        facts,
        replicas,
        pod_rates={name: PodRates(rps, 0) for name, rps in zip(PODS, own, strict=True)},
    )
    service_history().append(frame)


def inventory(client: Client) -> str:
    return card(client.get("/").content.decode(), "inventory")


def test_it_says_the_clients_that_bypass_ballast_are_pinned(operator_client: Client) -> None:
    keep(0.5, own=(100.0, 12.0))  # 90/s and 2/s bypassing
    body = inventory(operator_client)
    assert "Clients that bypass Ballast: busiest pod 1.96× mean (inventory-a)" in body
    assert "these clients are pinned by L4 connections." in body
    assert "Via Ballast: even (max/mean 1.00)." in body
    assert "bypassing Ballast: imbalanced" in body
    assert "share of requests bypassing Ballast (L4)" in body


def test_it_says_a_load_aware_policy_leans_away_from_the_pinned_pod(
    operator_client: Client,
) -> None:
    # least_request gives the pod the L4 clients pin (90/s) 6 of Ballast's calls, the other 14.
    carried = [endpoint_rates(PODS[0], 6.0), endpoint_rates(PODS[1], 14.0)]
    own = {PODS[0]: PodRates(96.0, 0), PODS[1]: PodRates(14.0, 0)}
    frame: Any = build_frame(
        "inventory", int(time.time() * 1000), carried, [pod_facts(n) for n in PODS], UP,
        pod_rates=own, policy="least_request",
    )  # fmt: skip
    service_history().append(frame)
    body = inventory(operator_client)
    assert "via Ballast: leans away from L4 load, busiest 1.40× mean" in body
    assert (
        "Via Ballast: busiest pod 1.40× mean (inventory-b) by design: least_request sends"
        " fewer calls to the pods that clients bypassing Ballast keep busy." in body
    )
    assert "via Ballast: imbalanced" not in body


def test_it_says_both_paths_are_even_when_they_are(operator_client: Client) -> None:
    keep(0.5, own=(30.0, 30.0))
    body = inventory(operator_client)
    assert "Clients that bypass Ballast are spread evenly." in body
    assert "trouble" not in body


def test_it_lists_restarts_of_the_last_minutes_with_oomkilled(operator_client: Client) -> None:
    keep(300, restarts=(0, 0))
    keep(0.5, restarts=(2, 0), reason="OOMKilled")
    body = inventory(operator_client)
    assert "inventory-a restarted 2× in the last 10 min (OOMKilled)" in body
    assert "flagged" in body.split(">", 1)[0]


def test_it_forgets_restarts_older_than_the_window(operator_client: Client) -> None:
    keep(900, restarts=(0, 0))
    keep(500, restarts=(1, 0), reason="Error")
    keep(0.5, restarts=(1, 0), reason="Error")
    assert "restarted" not in inventory(operator_client)


def test_it_lists_pods_not_ready_and_replicas_down_or_out_of_sync(
    operator_client: Client,
) -> None:
    replicas: list[ReplicaFrame] = [
        {"id": "b0", "up": False},
        {"id": "b1", "up": True, "converged": False},
    ]
    keep(0.5, ready=(True, False), replicas=replicas)
    body = inventory(operator_client)
    assert "1 pod not ready: inventory-b" in body
    assert "balancer b0 down" in body
    assert "balancer b1 out of sync with the desired state (applying)" in body
