"""The scene end to end: L4 clients stay pinned to one pod each; Ballast's clients use all."""

from __future__ import annotations

import pytest

from demo.scene import Scene, SceneOptions
from tests.support.waiting import wait_for


@pytest.fixture
async def scene():
    started = Scene(SceneOptions(pods=3, clients_per_group=4, rate_per_client=25, seed=3))
    await started.start()
    yield started
    await started.stop()


async def test_it_pins_each_l4_client_to_one_pod_and_spreads_ballasts_over_all(scene):
    assert scene.via_l4 is not None and scene.via_ballast is not None
    pods = {p.name for p in await scene.platform.list_pods("inventory")}
    await wait_for(lambda: scene.via_ballast.stats().ok >= 200, timeout_s=30, what="calls")
    l4 = scene.via_l4.stats()
    ballast = scene.via_ballast.stats()
    for client in l4.clients:  # one long-lived connection each: one pod each
        assert len(client.pods) == 1, client.pods
    for client in ballast.clients:  # balanced per request: every client reaches every pod
        assert set(client.pods) == pods, client.pods
    assert l4.errors == 0 and ballast.errors == 0


async def test_it_follows_a_rollout_without_errors_through_ballast(scene):
    assert scene.via_ballast is not None
    old = {p.name for p in await scene.platform.list_pods("inventory")}
    scene.reset_load()
    await scene.platform.rollout_restart("inventory")
    during = scene.via_ballast.stats()
    assert during.errors == 0, during.codes  # old pods left the balancer before they stopped
    assert during.ok > 0
    new = {p.name for p in await scene.platform.list_pods("inventory") if p.ready}
    assert len(new) == 3 and not new & old
    scene.reset_load()
    cluster = scene.balancer.clusters["inventory"]
    await wait_for(lambda: set(cluster.endpoints) == new, timeout_s=10, what="new endpoints")
    await wait_for(lambda: scene.via_ballast.stats().ok >= 150, timeout_s=30, what="calls")
    stats = scene.via_ballast.stats()
    assert set(stats.pods) == new
    assert stats.errors == 0
