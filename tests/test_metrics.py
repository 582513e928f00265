"""Prometheus metrics, scraped over real HTTP from a balancer serving real calls."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer.admin.server import AdminServer
from balancer.config import AdminConfig
from balancer.endpoint import State
from balancer.server import Balancer, ListenError
from balancer.stats import LATENCY_BOUNDS_MS
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.sockets import taken_port

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
Backends = Callable[..., Awaitable[Backend]]
Balancers = Callable[..., Awaitable[Balancer]]


async def _scrape(address: str) -> tuple[str, str]:
    """GET /metrics (off the event loop: the balancer keeps serving); returns type and body."""

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return response.headers["Content-Type"], response.read().decode()

    return await asyncio.to_thread(get)


async def _series(address: str) -> Series:
    _, text = await _scrape(address)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(series: Series, name: str, **labels: str) -> float:
    return series[(name, frozenset(labels.items()))]


async def _start(backends: Backends, balancers: Balancers) -> tuple[Backend, Balancer]:
    backend = await backends("pod-a")
    balancer = await balancers(config([backend], admin={"metrics_address": "127.0.0.1:0"}))
    return backend, balancer


async def test_it_serves_per_endpoint_series(backends: Backends, balancers: Balancers) -> None:
    backend, balancer = await _start(backends, balancers)
    assert balancer.metrics_address is not None
    assert balancer.metrics_address.startswith("127.0.0.1:")
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        for _ in range(5):
            await channel.unary_unary(be.UNARY)(b"x" * 100, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(be.UNARY)(
                b"x" * 100, metadata=[("x-fail-code", "UNAVAILABLE")], timeout=5
            )
        series = await _series(balancer.metrics_address)

    ep = {"cluster": "echo", "endpoint": "pod-a"}
    assert _value(series, "ballast_endpoint_requests_total", **ep, code="OK") == 5
    assert _value(series, "ballast_endpoint_requests_total", **ep, code="UNAVAILABLE") == 1
    codes = {dict(labels)["code"] for name, labels in series if name.endswith("requests_total")}
    assert codes == {"OK", "UNAVAILABLE"}  # codes never seen have no series
    assert _value(series, "ballast_endpoint_received_bytes_total", **ep) == 600
    assert _value(series, "ballast_endpoint_sent_bytes_total", **ep) == 500
    assert _value(series, "ballast_endpoint_in_flight", **ep) == 0
    assert _value(series, "ballast_endpoint_weight", **ep) == 100
    assert _value(series, "ballast_endpoint_effective_weight", **ep) == 100
    assert _value(series, "ballast_endpoint_ejections_total", **ep) == 0
    assert _value(series, "ballast_endpoint_ewma_latency_seconds", **ep) > 0
    for state in State:
        expected = 1 if state is State.READY else 0
        assert _value(series, "ballast_endpoint_state", **ep, state=state.value) == expected
    assert _value(series, "ballast_cluster_info", cluster="echo", policy="round_robin") == 1
    assert _value(series, "ballast_client_connections", peer="127.0.0.1") == 1
    assert backend.calls == 6


async def test_it_serves_the_latency_histogram(backends: Backends, balancers: Balancers) -> None:
    _, balancer = await _start(backends, balancers)
    assert balancer.metrics_address is not None
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        for _ in range(4):
            await channel.unary_unary(be.UNARY)(b"x", timeout=5)
    series = await _series(balancer.metrics_address)

    ep = {"cluster": "echo", "endpoint": "pod-a"}
    name = "ballast_endpoint_request_duration_seconds"
    buckets = [_value(series, f"{name}_bucket", **ep, le=str(b / 1000)) for b in LATENCY_BOUNDS_MS]
    assert buckets == sorted(buckets)  # cumulative
    assert _value(series, f"{name}_bucket", **ep, le="+Inf") == 4
    assert _value(series, f"{name}_count", **ep) == 4
    stats = balancer.clusters["echo"].endpoints["pod-a"].stats
    assert _value(series, f"{name}_sum", **ep) == pytest.approx(stats.latency_sum_s)


async def test_it_shows_a_drained_endpoint(backends: Backends, balancers: Balancers) -> None:
    _, balancer = await _start(backends, balancers)
    assert balancer.metrics_address is not None
    balancer.clusters["echo"].drain("pod-a")
    series = await _series(balancer.metrics_address)

    ep = {"cluster": "echo", "endpoint": "pod-a"}
    assert _value(series, "ballast_endpoint_state", **ep, state="DRAINED") == 1
    assert _value(series, "ballast_endpoint_state", **ep, state="READY") == 0
    assert _value(series, "ballast_endpoint_effective_weight", **ep) == 0


async def test_it_answers_in_the_prometheus_text_format(
    backends: Backends, balancers: Balancers
) -> None:
    _, balancer = await _start(backends, balancers)
    assert balancer.metrics_address is not None
    content_type, text = await _scrape(balancer.metrics_address)
    assert content_type.startswith("text/plain")
    assert "# TYPE ballast_endpoint_requests_total counter" in text
    assert "# TYPE ballast_endpoint_request_duration_seconds histogram" in text
    assert "python_gc" not in text  # a private registry: only the balancer's series


async def test_it_serves_no_metrics_unless_configured(
    backends: Backends, balancers: Balancers
) -> None:
    backend = await backends("pod-a")
    balancer = await balancers(config([backend], admin={}))
    assert balancer.admin_address is not None
    assert balancer.metrics_address is None


async def test_it_stops_serving_metrics_on_stop(backends: Backends, balancers: Balancers) -> None:
    backend = await backends("pod-a")
    balancer = await balancers(config([backend]))
    admin_config = AdminConfig(
        address="127.0.0.1:0", token=ADMIN_TOKEN, metrics_address="127.0.0.1:0"
    )
    admin = AdminServer(balancer, admin_config)
    await admin.start()
    assert admin.metrics_address is not None
    assert await _series(admin.metrics_address)  # serving
    await admin.stop(grace_s=0)
    with pytest.raises(urllib.error.URLError):
        await _scrape(admin.metrics_address)


async def test_it_says_when_the_metrics_port_is_taken(
    backends: Backends, balancers: Balancers
) -> None:
    backend = await backends("pod-a")
    balancer = await balancers(config([backend]))
    with taken_port() as address:
        admin_config = AdminConfig(
            address="127.0.0.1:0", token=ADMIN_TOKEN, metrics_address=address
        )
        admin = AdminServer(balancer, admin_config)
        with pytest.raises(ListenError, match=rf"cannot listen on {address} \(metrics\)"):
            await admin.start()
    assert admin.address is not None
    with pytest.raises(grpc.aio.AioRpcError):  # the gRPC port was closed again
        async with grpc.aio.insecure_channel(admin.address) as channel:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=2)
