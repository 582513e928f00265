"""The retry policy in the other engines: HAProxy's retries/retry-on, and the xDS route's
retry policy (gRPC A44) that a real proxyless grpcio client follows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import grpc
import pytest

from balancer.config import config_from_dict
from balancer.engines.haproxy.config import render
from balancer.xds.resources import route_configuration
from tests.support.retries import GET_ITEM, inventory_config
from tests.support.xds import REPO, write_bootstrap

HAPROXY = "/usr/sbin/haproxy"
pytestmark = pytest.mark.timeout(180)


def _haproxy_config(retry: dict[str, object]) -> str:
    data = {
        "balancer": {"engine": "haproxy"},
        "clusters": [{"name": "inventory", "retry": retry,
                      "discovery": {"endpoints": ["127.0.0.1:1"]}}],
    }  # fmt: skip
    config = config_from_dict(data, environ={})
    return render(
        config, listen_addresses=["127.0.0.1:50051"], runtime_socket="/tmp/unused.sock",
        policies={"inventory": "round_robin"}, servers={},
    )  # fmt: skip


def test_it_writes_the_policy_as_haproxy_retries_and_retry_on(tmp_path):
    text = _haproxy_config({"max_attempts": 3})
    backend = text[text.index("backend c0_inventory") :]
    assert "    retries 2\n" in backend
    assert "    retry-on conn-failure empty-response\n" in backend
    path = tmp_path / "haproxy.cfg"
    path.write_text(text, encoding="utf-8")
    checked = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_it_turns_haproxy_retries_off_with_one_attempt():
    text = _haproxy_config({"max_attempts": 1})
    backend = text[text.index("backend c0_inventory") :]
    assert "    retries 0\n" in backend
    assert "retry-on" not in backend


def test_it_gives_only_idempotent_methods_an_xds_retry_policy():
    config = config_from_dict({"clusters": [{"name": "inventory", "retry": {
        "idempotent_methods": [GET_ITEM, "/shop.Catalog/*"], "max_attempts": 3,
        "retry_on": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "UNKNOWN"]}}]}, environ={})  # fmt: skip
    routes = route_configuration("inventory", config.clusters[0].retry).virtual_hosts[0].routes
    by_match = {r.match.path or r.match.prefix: r.route for r in routes}
    assert list(by_match) == [GET_ITEM, "/shop.Catalog/", ""]  # the catch-all last
    policy = by_match[GET_ITEM].retry_policy
    assert policy.retry_on == "resource-exhausted,unavailable"  # A44 knows no UNKNOWN
    assert policy.num_retries.value == 2
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 25
    assert policy.retry_back_off.max_interval.ToMilliseconds() == 250
    assert not by_match[""].HasField("retry_policy")


async def test_it_makes_a_proxyless_grpc_client_retry(inventories, balancers, tmp_path):
    """The client picks localities at random by weight, so a retry may land on the failing
    pod again (A44 has no "other host" predicate): counted at the pods, not assumed away."""
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    pods[0].fail_with = grpc.StatusCode.UNAVAILABLE
    retry = {"idempotent_methods": [GET_ITEM], "max_attempts": 4}
    with_retry = await _proxyless_codes(balancers, tmp_path, pods, retry)
    tries_with = sum(p.total_calls for p in pods)
    without = await _proxyless_codes(balancers, tmp_path, pods, {"max_attempts": 1})
    tries_without = sum(p.total_calls for p in pods) - tries_with
    assert tries_with > 40  # the client tried failed calls again…
    assert tries_without == 40  # … and without a policy never
    assert with_retry.get("UNAVAILABLE", 0) < without["UNAVAILABLE"]
    assert with_retry["OK"] + with_retry.get("UNAVAILABLE", 0) == 40


async def _proxyless_codes(balancers, tmp_path, pods, retry) -> dict[str, int]:
    config = inventory_config(pods, retry)
    xds = config_from_dict(
        {"xds": {"address": "127.0.0.1:0"}, "clusters": [{"name": "x"}]}, environ={}
    ).xds
    balancer = await balancers(replace(config, xds=xds))
    node = f"node-{retry['max_attempts']}"
    bootstrap = write_bootstrap(tmp_path / f"{node}.json", balancer.xds_address, node)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.retries_xds_client", "xds:///inventory", "40",
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    codes: dict[str, int] = json.loads(out)["codes"]
    return codes
