"""A balancer with `discovery.kind = "kubernetes"`: config, CLI, and the cluster it keeps."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from balancer.config import ConfigError, config_from_dict
from balancer.endpoint import State
from platforms.discovery import kubernetes_discovery
from platforms.kubernetes import KubernetesSettings
from tests.kubernetes.fakeapi import FakeKubernetes, endpoint
from tests.support import backend as be
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]


def _config(discovery: dict[str, Any]) -> Any:
    return config_from_dict(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": "inventory", "discover_unary_methods": False,
                          "discovery": discovery}],
        },
        {},
    )  # fmt: skip


def test_it_reads_the_kubernetes_discovery_keys() -> None:
    config = _config({"kind": "kubernetes", "service": "inventory", "namespace": "shop",
                      "port": "grpc"})  # fmt: skip

    d = config.clusters[0].discovery
    assert (d.kind, d.service, d.namespace, d.port) == ("kubernetes", "inventory", "shop", "grpc")
    assert _config({"kind": "kubernetes", "service": "shop/inventory", "port": 50051})


@pytest.mark.parametrize(
    ("discovery", "message"),
    [
        ({"kind": "kubernetes"}, "kind 'kubernetes' needs service"),
        ({"kind": "kubernetes", "service": "a/b", "namespace": "c"}, "leave out namespace"),
        ({"kind": "kubernetes", "service": "a", "port": 70000}, "out of range"),
        ({"kind": "kubernetes", "service": "a", "port": 1.5}, "discovery.port: expected"),
        ({"kind": "static", "port": 80}, "namespace and port are for kind 'kubernetes'"),
        ({"kind": "kubernetes", "service": "a", "endpoints": ["127.0.0.1:1"]}, "static"),
    ],
)
def test_it_names_a_bad_discovery_key(discovery: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(discovery)


def test_the_cli_refuses_an_unreadable_kubeconfig_in_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "ballast.toml"
    toml.write_text(
        '[[clusters]]\nname = "inventory"\n'
        'discovery = { kind = "kubernetes", service = "shop/inventory" }\n',
        encoding="utf-8",
    )
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "missing")}

    done = subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(toml), "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "cannot configure the Kubernetes client" in done.stderr
    assert "set KUBECONFIG (or --kubeconfig)" in done.stderr


def _slice(fake: FakeKubernetes, pod: be.Backend, **conditions: bool) -> None:
    """One slice per pod: the pods listen on 127.0.0.1 at different ports."""
    fake.put_slice(
        f"inventory-{pod.name}", "inventory", [endpoint("127.0.0.1", pod.name, **conditions)],
        ports=[{"name": "grpc", "port": pod.port}], namespace="shop",
    )  # fmt: skip


async def _served_by(channel: grpc.aio.Channel, n: int) -> Counter[str]:
    served: Counter[str] = Counter()
    for _ in range(n):
        call = channel.unary_unary(be.UNARY)(b"x", timeout=5)
        await call
        served[dict(await call.initial_metadata())["x-backend"]] += 1
    return served


async def test_a_terminating_endpoint_is_drained_its_long_streams_finish_then_it_goes(
    fake_api: FakeKubernetes, settings: KubernetesSettings, backends: Any, balancers: Any
) -> None:
    a, b = await backends("pod-a"), await backends("pod-b")
    _slice(fake_api, a)
    _slice(fake_api, b)
    config = _config({"kind": "kubernetes", "service": "inventory", "namespace": "shop",
                      "port": "grpc"})  # fmt: skip
    balancer = await balancers(config, discovery=kubernetes_discovery(settings))
    cluster = balancer.clusters["inventory"]
    await wait_for(lambda: {e.state for e in cluster.endpoints.values()} == {State.READY}
                   and len(cluster.endpoints) == 2, 20, "both READY")  # fmt: skip
    channel = grpc.aio.insecure_channel(balancer.listen_addresses[0])
    md = [("x-count", "10"), ("x-delay-ms", "100")]
    streams = [channel.unary_stream(be.SERVER_STREAM)(b"s", metadata=md, timeout=30)
               for _ in range(8)]  # fmt: skip
    await wait_for(lambda: a.in_flight + b.in_flight == 8, 10, "8 streams open")
    assert a.in_flight > 0

    _slice(fake_api, a, ready=False, serving=True, terminating=True)
    await wait_for(lambda: cluster.endpoints["pod-a"].state is State.DRAINING, 10, "DRAINING")
    calls_before = a.calls
    served = await _served_by(channel, 20)

    assert served == Counter({"pod-b": 20})  # not one new call to the terminating pod
    assert a.calls == calls_before
    assert [len([m async for m in call]) for call in streams] == [10] * 8
    assert [await call.code() for call in streams] == [grpc.StatusCode.OK] * 8
    await wait_for(lambda: cluster.endpoints["pod-a"].state is State.DRAINED, 10, "DRAINED")
    cluster.undrain("pod-a")  # the operator cannot bring back a terminating pod
    assert cluster.endpoints["pod-a"].state is State.DRAINED
    fake_api.delete_slice("inventory-pod-a", namespace="shop")
    await wait_for(lambda: "pod-a" not in cluster.endpoints, 10, "pod-a removed")
    await channel.close()
