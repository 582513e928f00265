"""The pinning detector on real pods: `python -m demo.workload` processes serving channelz,
a real balancer in front of them with a client calling through it, and clients that
bypass it, each holding one long-lived connection straight to one pod (in their own
processes, tests/support/pinning.py). The collector reads the pods' channelz and the
balancer's snapshots, as it does in the dashboard."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dashboard.collector.frames import ServiceFrame
from dashboard.collector.pinning import PinningReader, pinning_frame
from dashboard.collector.runner import Collector, CollectorConfig, ReplicaTarget, ServiceTarget
from demo.loadgen import ClientSpec, LoadGenerator
from demo.scene import SERVICE, Scene, SceneOptions
from platforms.base import PodFacts
from tests.support.backend import start_backend
from tests.support.pinning import PinnedClients, pin_clients

pytestmark = pytest.mark.timeout(180)

SHARE = re.compile(r"(\d+) % of pod")


class Rig:
    """Two pods behind a balancer, a client through it, the collector watching."""

    def __init__(self, scene: Scene, collector: Collector, ballast: LoadGenerator) -> None:
        self.scene = scene
        self.collector = collector
        self.ballast = ballast
        self.pinned: list[PinnedClients] = []

    async def pods(self) -> list[PodFacts]:
        return sorted(await self.scene.platform.list_pods(SERVICE), key=lambda p: p.name)

    def frame(self) -> ServiceFrame:
        return self.collector.frame(SERVICE, int(time.time() * 1000))

    async def pinning_when(self, predicate: Any, what: str, timeout_s: float = 60) -> Any:
        """Reads the pods' channelz and builds frames until `predicate(frame["pinning"])`."""
        found: list[Any] = []

        async def holds() -> bool:
            await self.collector.read_channelz()
            pinning = self.frame().get("pinning")
            if pinning is not None and predicate(pinning):
                found.append(pinning)
            return bool(found)

        deadline = time.monotonic() + timeout_s
        while not await holds():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.frame()}"
            await asyncio.sleep(1.0)
        return found[0]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    scene = Scene(SceneOptions(pods=2, clients_per_group=0, rate_per_client=1, seed=5))
    await scene.start()
    assert scene.balancer.admin_address is not None
    replica = ReplicaTarget("b1", scene.balancer.admin_address, scene.admin_token)
    config = CollectorConfig(
        [replica], {SERVICE: ServiceTarget(SERVICE, SERVICE)}, interval_s=0.5, pods_interval_s=0.5
    )

    async def publish(frame: ServiceFrame) -> None:
        pass

    collector = Collector(config, publish, platform=scene.platform, rng=random.Random(1))
    address = scene.balancer.listen_addresses[0]
    ballast = LoadGenerator([ClientSpec("via-ballast", address, 20.0)], rng=random.Random(2))
    await collector.start()
    await ballast.start()
    made = Rig(scene, collector, ballast)
    try:
        yield made
    finally:
        for pinned in made.pinned:
            await pinned.stop()
        await ballast.stop(grace_s=1.0)
        await collector.stop()
        await scene.stop()


def _pod(pinning: Any, name: str) -> Any:
    return next(p for p in pinning["pods"] if p["pod"] == name)


def _busy_clients(pod: Any) -> int:
    return sum(1 for c in pod.get("conns", []) if c["calls_s"])


async def test_it_names_the_pinned_pod_its_bypassing_connections_and_their_share(rig: Rig) -> None:
    first, second = await rig.pods()
    assert first.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))
    rig.pinned.append(await pin_clients(first.address, 1, 20.0))

    def named(pinning: Any) -> bool:
        return pinning["pinned"] == first.name and _busy_clients(_pod(pinning, first.name)) == 3

    pinning = await rig.pinning_when(named, "a finding about the pinned pod's 3 connections")
    text = pinning["finding"]
    assert f"pod {first.name}'s calls come from 3" in text, text
    assert "bypass Ballast" in text and "MAX_CONNECTION_AGE" in text, text
    # 60 calls/s over the pinned connections, 10 of Ballast's (20/s over two pods): 86 %.
    match = SHARE.search(text)
    assert match is not None, text
    assert 76 <= int(match[1]) <= 96, text
    pinned = _pod(pinning, first.name)
    assert pinned["bypass_share"] == pytest.approx(0.86, abs=0.1)
    assert all(c["origin"] == "client" for c in pinned["conns"])
    assert pinned["ballast_conns"] >= 1  # Ballast's connection is there, and not a client's
    # The pod only Ballast calls holds its connection, and no client's.
    other = _pod(pinning, second.name)
    assert other["ballast_conns"] >= 1 and other["client_conns"] == 0, other
    ballast_peers = set(rig.collector.ballast_addresses()[0])
    assert ballast_peers and not ballast_peers & {c["peer"] for c in pinned["conns"]}


async def test_it_forgets_a_connection_that_closed(rig: Rig) -> None:
    first, _ = await rig.pods()
    assert first.address is not None
    rig.pinned.append(await pin_clients(first.address, 2, 20.0))
    crashing = await pin_clients(first.address, 1, 20.0)
    rig.pinned.append(crashing)
    await rig.pinning_when(
        lambda p: _pod(p, first.name).get("client_conns") == 3, "three client connections"
    )
    crashing.kill()
    pinning = await rig.pinning_when(
        lambda p: _pod(p, first.name).get("client_conns") == 2, "the killed client's gone"
    )
    assert len(_pod(pinning, first.name)["conns"]) == 2


async def test_it_counts_no_bypass_when_every_call_goes_through_ballast(rig: Rig) -> None:
    pods = await rig.pods()

    def read_twice(pinning: Any) -> bool:
        return all(_pod(pinning, p.name).get("ballast_conns") for p in pods) and all(
            _pod(pinning, p.name).get("bypass_share") is not None for p in pods
        )

    pinning = await rig.pinning_when(read_twice, "every pod's connections and counts")
    assert pinning["finding"] is None
    for pod in pods:
        assert _pod(pinning, pod.name)["client_conns"] == 0


async def test_it_shows_no_connections_for_a_pod_without_channelz_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = await start_backend("plain")  # a gRPC server with no channelz service
    reader = PinningReader()
    pod = PodFacts("plain", "plain", backend.address, "Running", True, 0, None)
    try:
        with caplog.at_level(logging.INFO, logger="dashboard.collector.pinning"):
            for _ in range(3):
                await reader.read([pod], set(), True)
        assert reader.connections("plain") is None
        said = [r.getMessage() for r in caplog.records if "no channelz" in r.getMessage()]
        assert len(said) == 1 and "UNIMPLEMENTED" in said[0], said
    finally:
        await reader.close()
        await backend.stop()
    frame = {
        "pods": [
            {"pod": "plain", "rps": 10.0, "pod_rps": 70.0},
            {"pod": "other", "rps": 10.0, "pod_rps": 10.0},
        ],
        "bypass_imbalance": {"flagged": True, "busiest": "plain", "max_mean": 2.0},
    }
    pinning = pinning_frame(frame, reader.connections)
    assert pinning["pinned"] == "plain"
    assert pinning["finding"] is not None
    assert pinning["finding"].startswith("86 % of pod plain's calls bypass Ballast (2.0×")
    assert "its channelz does not answer" in pinning["finding"]
    assert "conns" not in _pod(pinning, "plain")
