"""The demo scene with the HAProxy engine: calls spread per request, a rollout costs none."""

from __future__ import annotations

import pytest

from demo.__main__ import options_from, parse_args
from demo.scene import Scene, SceneOptions
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)


def test_it_takes_the_engine_from_the_command_line():
    assert options_from(parse_args(["--engine", "haproxy"])).engine == "haproxy"
    assert options_from(parse_args([])).engine == "embedded"


@pytest.fixture
async def scene():
    options = SceneOptions(
        pods=3, clients_per_group=4, rate_per_client=25, seed=3, engine="haproxy"
    )
    started = Scene(options)
    await started.start()
    yield started
    await started.stop()


async def test_it_spreads_every_client_over_every_pod_and_follows_a_rollout(scene):
    assert scene.via_ballast is not None
    assert scene.balancer.engine.name == "haproxy"
    pods = {p.name for p in await scene.platform.list_pods("inventory")}
    await wait_for(lambda: scene.via_ballast.stats().ok >= 200, timeout_s=30, what="calls")
    for client in scene.via_ballast.stats().clients:  # per request, through HAProxy
        assert set(client.pods) == pods, client.pods
    scene.reset_load()
    await scene.platform.rollout_restart("inventory")
    during = scene.via_ballast.stats()
    print(f"\nrollout through haproxy: {during.ok} calls, {during.errors} errors {during.codes}")
    assert during.errors == 0, during.codes  # old pods left HAProxy before they stopped
    new = {p.name for p in await scene.platform.list_pods("inventory") if p.ready}
    cluster = scene.balancer.clusters["inventory"]
    await wait_for(lambda: set(cluster.endpoints) == new, timeout_s=10, what="new endpoints")
    scene.reset_load()
    await wait_for(lambda: scene.via_ballast.stats().ok >= 150, timeout_s=30, what="calls")
    stats = scene.via_ballast.stats()
    assert set(stats.pods) == new
    assert stats.errors == 0
