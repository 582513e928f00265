"""Proxyless gRPC: real grpcio xDS clients (`xds:///echo`) balance from the balancer's ADS."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client.parser import text_string_to_metric_families

from balancer.__main__ import main as balancer_main
from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.config import ConfigError, XdsConfig, config_from_dict
from balancer.discovery import Add, Remove
from balancer.endpoint import Address
from balancer.server import Balancer
from balancer.xds.resources import CLUSTER, ENDPOINT, TYPES, build_resources
from balancer.xds.server import XdsServer
from tests.support.balancing import ADMIN_TOKEN, config
from tests.support.certs import make_pki
from tests.support.waiting import wait_for
from tests.support.xds import XdsClientProcess, write_bootstrap

pytestmark = pytest.mark.timeout(120)

AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
TOKEN = "test-xds-token-0123456789"


def _xds(balancer: Balancer) -> XdsServer:
    assert balancer.xds is not None
    return balancer.xds


def _all_acked(server: XdsServer, node_id: str) -> bool:
    snapshot = server.snapshot()
    clients = [c for c in server.clients() if c.node_id == node_id]
    return bool(clients) and all(
        c.in_sync(snapshot) and set(c.types) == set(TYPES) for c in clients
    )


async def test_it_serves_resources_a_grpc_client_accepts(backends, balancers, xds_clients):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    client = await xds_clients(balancer)

    answer = await client.request(op="calls", n=40)

    assert answer["errors"] == {}
    assert sum(answer["counts"].values()) == 40
    assert set(answer["counts"]) == {"pod-a", "pod-b"}
    await wait_for(lambda: _all_acked(_xds(balancer), "client-1"), what="every type ACKed")
    (status,) = _xds(balancer).clients()
    assert status.pending_nacks() == {}


async def test_it_makes_shares_follow_weights(backends, balancers, xds_clients):
    pods = [await backends(name) for name in ("pod-a", "pod-b", "pod-c")]
    balancer = await balancers(config(pods, xds={"address": "127.0.0.1:0"}))
    cluster = balancer.clusters["echo"]
    for name, weight in (("pod-a", 100), ("pod-b", 200), ("pod-c", 500)):
        cluster.set_weight(name, weight)
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)
    await wait_for(lambda: _all_acked(_xds(balancer), "client-1"), what="weights ACKed")

    answer = await client.request(op="calls", n=4000)

    assert answer["errors"] == {}
    shares = {name: n / 4000 for name, n in answer["counts"].items()}
    expected = {"pod-a": 1 / 8, "pod-b": 2 / 8, "pod-c": 5 / 8}
    assert all(abs(shares[name] - share) < 0.03 for name, share in expected.items()), shares


def _eds_version(server: XdsServer) -> int:
    return int(server.snapshot().version(ENDPOINT))


async def test_it_stops_new_calls_to_a_drained_pod_within_one_push(
    backends, balancers, xds_clients
):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], admin={}, xds={"address": "127.0.0.1:0"}))
    server = _xds(balancer)
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)
    await wait_for(lambda: _all_acked(server, "client-1"), what="first config ACKed")
    await client.request(op="open_streams", n=10, messages=10, delay_ms=200)
    await wait_for(lambda: a.in_flight + b.in_flight == 10, what="10 streams open")
    assert a.in_flight > 0
    version_before = _eds_version(server)
    calls_before = a.calls

    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        request = admin_pb2.DrainRequest(cluster="echo", endpoint_id="pod-a")
        await admin_pb2_grpc.AdminStub(channel).Drain(request, metadata=AUTH)
    await wait_for(lambda: _eds_version(server) > version_before, what="the drain pushed")
    await wait_for(lambda: _all_acked(server, "client-1"), what="drain ACKed")

    assert _eds_version(server) == version_before + 1  # one push
    answer = await client.request(op="calls", n=50)
    assert answer["counts"] == {"pod-b": 50} and answer["errors"] == {}
    assert a.calls == calls_before  # not one new call reached the drained pod
    streams = await client.request(op="finish_streams")
    assert streams["codes"] == {"OK": 10}
    assert streams["messages"] == [10] * 10  # the drained pod's streams finished whole


async def _in_sync_after_push(server: XdsServer, version_before: int) -> None:
    await wait_for(lambda: _eds_version(server) > version_before, what="a push")
    await wait_for(lambda: _all_acked(server, "client-1"), what="the push ACKed")


async def test_it_follows_endpoints_added_and_removed_by_discovery(
    backends, balancers, xds_clients
):
    a, b, c = await backends("pod-a"), await backends("pod-b"), await backends("pod-c")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    server, cluster = _xds(balancer), balancer.clusters["echo"]
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)

    version = _eds_version(server)
    cluster.apply(Add((Address("127.0.0.1", c.port, pod_name="pod-c"),)))
    await _in_sync_after_push(server, version)
    added = await client.request(op="calls", n=60)
    assert added["errors"] == {} and added["counts"].get("pod-c", 0) > 0

    version = _eds_version(server)
    cluster.apply(Remove(("pod-a",)))
    await _in_sync_after_push(server, version)
    calls_before = a.calls
    removed = await client.request(op="calls", n=60)
    assert removed["errors"] == {} and set(removed["counts"]) == {"pod-b", "pod-c"}
    assert a.calls == calls_before


async def test_it_keeps_and_shows_a_nack_of_an_invalid_update(
    backends, balancers, xds_clients, caplog
):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    server, cluster = _xds(balancer), balancer.clusters["echo"]
    client = await xds_clients(balancer)
    await client.request(op="calls", n=10)
    await wait_for(lambda: _all_acked(server, "client-1"), what="first config ACKed")
    good_version = server.snapshot().version(CLUSTER)

    invalid = build_resources(balancer.clusters.values())
    invalid[CLUSTER]["echo"].type = cluster_pb2.Cluster.DiscoveryType.STATIC  # gRPC: EDS only
    server.cache.set_snapshot(invalid)
    (status,) = server.clients()
    await wait_for(lambda: CLUSTER in status.pending_nacks(), what="a NACK")

    nack = status.pending_nacks()[CLUSTER]
    assert nack.version == server.snapshot().version(CLUSTER) != good_version
    assert nack.message  # the client's own words
    assert status.types[CLUSTER].acked_version == good_version
    assert f"NACKed CDS version {nack.version}: {nack.message}" in caplog.text
    still = await client.request(op="calls", n=10)  # the client kept its last good config
    assert still["errors"] == {} and sum(still["counts"].values()) == 10

    cluster.set_weight("pod-a", 50)  # the next change publishes valid resources again
    await wait_for(lambda: not status.pending_nacks(), what="the NACK cleared by an ACK")
    assert status.types[CLUSTER].acked_version == server.snapshot().version(CLUSTER)


@pytest.mark.parametrize("policy", ["least_request", "peak_ewma", "random"])
async def test_it_falls_back_to_weighted_round_robin_visibly(
    policy, backends, balancers, xds_clients, caplog
):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    server = _xds(balancer)
    balancer.clusters["echo"].set_policy(policy)
    await wait_for(lambda: f"policy {policy} cannot be sent" in caplog.text, what="the warning")

    sent = server.snapshot().resources[CLUSTER]["echo"]
    assert sent.lb_policy == cluster_pb2.Cluster.LbPolicy.ROUND_ROBIN
    client = await xds_clients(balancer)
    answer = await client.request(op="calls", n=20)
    assert answer["errors"] == {} and sum(answer["counts"].values()) == 20
    assert "they balance by weighted round robin" in caplog.text


def _config_with_xds(xds: dict[str, object], environ: dict[str, str] | None = None):
    data = {
        "clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}],
        "xds": xds,
    }
    return config_from_dict(data, environ or {})


def test_it_is_off_without_an_xds_table_or_when_disabled():
    assert _config_with_xds({"enabled": False}).xds is None
    data = {"clusters": [{"name": "echo", "discovery": {"endpoints": ["127.0.0.1:1"]}}]}
    assert config_from_dict(data, {}).xds is None
    assert _config_with_xds({}).xds == XdsConfig(address="127.0.0.1:18000")


def test_it_refuses_a_non_loopback_address_without_a_token():
    with pytest.raises(ConfigError, match="not a loopback address and the xDS server has no token"):
        _config_with_xds({"address": "0.0.0.0:18000"})
    config = _config_with_xds({"address": "0.0.0.0:18000"}, {"BALLAST_XDS_TOKEN": TOKEN})
    assert config.xds is not None and config.xds.token == TOKEN
    with pytest.raises(ConfigError, match=r"xds\.adress: unknown key; did you mean 'address'"):
        _config_with_xds({"adress": "127.0.0.1:1"})


async def test_it_refuses_a_stream_without_the_token(backends, balancers):
    a = await backends("pod-a")
    balancer = await balancers(config([a], xds={"address": "127.0.0.1:0", "token": TOKEN}))
    assert balancer.xds_address is not None
    async with grpc.aio.insecure_channel(balancer.xds_address) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, resource_names=["echo"])
        refused = stub.StreamAggregatedResources(iter([request]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", f"Bearer {TOKEN}"),)
        allowed = stub.StreamAggregatedResources(iter([request]), metadata=auth)
        response = await allowed.read()
        assert response.type_url == CLUSTER and len(response.resources) == 1
        allowed.cancel()


async def test_it_counts_the_calls_clients_report_per_pod(backends, balancers, xds_clients):
    a, b = await backends("pod-a"), await backends("pod-b")
    xds = {"address": "127.0.0.1:0", "load_report_interval_s": 0.2}
    balancer = await balancers(config([a, b], xds=xds))
    loads = _xds(balancer).loads
    client = await xds_clients(balancer)

    ok = await client.request(op="calls", n=40)
    failed = await client.request(op="calls", n=10, metadata={"x-fail-code": "INTERNAL"})

    assert failed["errors"] == {"INTERNAL": 10}
    issued = Counter(ok["counts"]) + Counter(failed["failed_on"])

    def reported() -> dict[str, tuple[int, int, int]]:
        return {
            pod: (c.issued, c.succeeded, c.errored)
            for pod in ("pod-a", "pod-b")
            if (c := loads.counters("echo", pod)).issued
        }

    expected = {
        pod: (issued[pod], ok["counts"].get(pod, 0), failed["failed_on"].get(pod, 0))
        for pod in issued
    }
    await wait_for(lambda: reported() == expected, timeout_s=20, what=f"LRS == {expected}")
    assert all(loads.counters("echo", pod).in_progress == 0 for pod in issued)


async def test_it_shows_clients_nacks_and_proxyless_calls_in_the_admin_snapshot(
    backends, balancers, xds_clients
):
    a, b = await backends("pod-a"), await backends("pod-b")
    xds = {"address": "127.0.0.1:0", "load_report_interval_s": 0.2}
    balancer = await balancers(config([a, b], admin={}, xds=xds))
    server = _xds(balancer)
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)
    assert balancer.admin_address is not None
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        latest: list[admin_pb2.Snapshot] = []

        async def snapshot_shows(predicate: Callable[[admin_pb2.Snapshot], bool]) -> bool:
            latest[:] = [await stub.GetSnapshot(admin_pb2.GetSnapshotRequest(), metadata=AUTH)]
            return predicate(latest[0])

        def issued(s: admin_pb2.Snapshot) -> int:
            return sum(ep.proxyless_requests_issued for ep in s.clusters[0].endpoints)

        await _poll(lambda: snapshot_shows(lambda s: issued(s) == 20), "20 proxyless calls")
        (shown,) = latest[0].xds_clients
        assert shown.node_id == "client-1" and shown.in_sync and not shown.pending_nacks
        assert dict(shown.acked_versions) == dict(latest[0].xds_versions)
        cluster = latest[0].clusters[0]
        assert (cluster.xds_clients, cluster.xds_clients_in_sync) == (1, 1)
        assert {ep.xds_health_status for ep in cluster.endpoints} == {"HEALTHY"}
        assert sum(ep.requests_total for ep in cluster.endpoints) == 0  # none via the proxy

        invalid = build_resources(balancer.clusters.values())
        invalid[CLUSTER]["echo"].type = cluster_pb2.Cluster.DiscoveryType.STATIC
        server.cache.set_snapshot(invalid)
        await _poll(
            lambda: snapshot_shows(lambda s: bool(s.xds_clients[0].pending_nacks)), "the NACK"
        )
        (nack,) = latest[0].xds_clients[0].pending_nacks
        assert nack.type == "CDS" and nack.version == latest[0].xds_versions["CDS"]
        assert nack.message and not latest[0].xds_clients[0].in_sync


async def _poll(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_it_takes_an_unhealthy_pod_out_and_back(backends, balancers, xds_clients):
    pods = [await backends(name) for name in ("pod-a", "pod-b", "pod-c")]
    health = {"enabled": True, "interval_s": 0.1, "unhealthy_threshold": 1}
    balancer = await balancers(
        config(pods, cluster={"health_check": health}, xds={"address": "127.0.0.1:0"})
    )
    server, ep = _xds(balancer), balancer.clusters["echo"].endpoints["pod-a"]
    client = await xds_clients(balancer)
    await client.request(op="calls", n=30)

    version = _eds_version(server)
    await pods[0].set_serving(False)
    await _in_sync_after_push(server, version)
    assert server.endpoint_health(ep) == "UNHEALTHY"
    calls_before = pods[0].calls
    out = await client.request(op="calls", n=40)
    assert out["errors"] == {} and set(out["counts"]) == {"pod-b", "pod-c"}
    assert pods[0].calls == calls_before

    version = _eds_version(server)
    await pods[0].set_serving(True)
    await _in_sync_after_push(server, version)
    back = await client.request(op="calls", n=60)
    assert back["errors"] == {} and back["counts"].get("pod-a", 0) > 0


async def test_it_keeps_clients_serving_through_a_balancer_restart(
    backends, balancers, xds_clients
):
    a, b = await backends("pod-a"), await backends("pod-b")
    first = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    client = await xds_clients(first)
    await client.request(op="calls", n=20)
    await wait_for(lambda: _all_acked(_xds(first), "client-1"), what="first config ACKed")
    address = first.xds_address
    await first.stop(grace_s=0)

    alone = await client.request(op="calls", n=20)  # no xDS server: the last config holds
    assert alone["errors"] == {} and set(alone["counts"]) == {"pod-a", "pod-b"}

    second = await balancers(config([a, b], xds={"address": address}))
    second.clusters["echo"].drain("pod-a")
    await wait_for(lambda: _xds(second).publisher.pushes == 2, what="the drain published")
    await wait_for(lambda: _all_acked(_xds(second), "client-1"), timeout_s=60, what="resync")
    calls_before = a.calls
    after = await client.request(op="calls", n=30)
    assert after["counts"] == {"pod-b": 30} and a.calls == calls_before


def test_it_says_where_xds_is_served_in_check(tmp_path, capsys):
    path = tmp_path / "ballast.toml"
    path.write_text(
        '[[clusters]]\nname = "echo"\n[clusters.discovery]\nendpoints = ["127.0.0.1:1"]\n'
        '[xds]\naddress = "127.0.0.1:18123"\n',
        encoding="utf-8",
    )
    assert balancer_main(["--config", str(path), "--check"]) == 0
    assert "xDS server for proxyless gRPC clients on 127.0.0.1:18123" in capsys.readouterr().out


async def test_it_leaves_out_an_endpoint_known_by_host_name_and_says_so(
    backends, balancers, xds_clients, caplog
):
    a, h = await backends("pod-a"), await backends("pod-h")
    data = config([a], xds={"address": "127.0.0.1:0"})
    by_name = Address("localhost", h.port, pod_name="pod-h")
    balancer = await balancers(data)
    balancer.clusters["echo"].apply(Add((by_name,)))
    await wait_for(lambda: "endpoint pod-h (localhost:" in caplog.text, what="the warning")
    assert "they need an IP address, not a host name" in caplog.text

    client = await xds_clients(balancer)
    answer = await client.request(op="calls", n=10)
    assert answer["counts"] == {"pod-a": 10} and answer["errors"] == {}
    await wait_for(lambda: _all_acked(_xds(balancer), "client-1"), what="no NACK: all ACKed")


async def test_it_serves_clients_over_mutual_tls(tmp_path, backends, balancers, xds_clients):
    pki = make_pki(tmp_path / "pki")
    a = await backends("pod-a")
    tls = {"cert_file": pki.server.cert, "key_file": pki.server.key}
    xds = {"address": "127.0.0.1:0", "tls": {**tls, "client_ca_file": pki.ca.cert_file}}
    balancer = await balancers(config([a], xds=xds))
    assert balancer.xds_address is not None
    host_port = "localhost:" + balancer.xds_address.rpartition(":")[2]  # the cert's name
    client_tls = {"ca_certificate_file": pki.ca.cert_file, "certificate_file": pki.client.cert,
                  "private_key_file": pki.client.key}  # fmt: skip
    bootstrap = write_bootstrap(tmp_path / "tls.json", host_port, "tls-client", client_tls)
    client = await XdsClientProcess.start("xds:///echo", bootstrap)
    try:
        answer = await client.request(op="calls", n=10)
    finally:
        await client.close()
    assert answer["counts"] == {"pod-a": 10} and answer["errors"] == {}


def _scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_it_exports_proxyless_calls_and_client_sync_to_prometheus(
    backends, balancers, xds_clients
):
    a = await backends("pod-a")
    xds = {"address": "127.0.0.1:0", "load_report_interval_s": 0.2}
    balancer = await balancers(config([a], admin={"metrics_address": "127.0.0.1:0"}, xds=xds))
    assert balancer.metrics_address is not None
    client = await xds_clients(balancer)
    await client.request(op="calls", n=20)
    await client.request(op="calls", n=5, metadata={"x-fail-code": "INTERNAL"})

    def issued() -> float:
        series = _scrape(str(balancer.metrics_address))
        key = frozenset({"cluster": "echo", "endpoint": "pod-a", "result": "issued"}.items())
        return series.get(("ballast_endpoint_proxyless_requests_total", key), 0)

    await wait_for(lambda: issued() == 25, timeout_s=20, what="25 proxyless calls scraped")
    series = _scrape(balancer.metrics_address)
    ep = {"cluster": "echo", "endpoint": "pod-a"}
    errored = frozenset({**ep, "result": "errored"}.items())
    assert series[("ballast_endpoint_proxyless_requests_total", errored)] == 5
    synced = frozenset({"cluster": "echo", "in_sync": "true"}.items())
    await wait_for(
        lambda: _scrape(str(balancer.metrics_address))[("ballast_xds_clients", synced)] == 1
    )
    assert series[("ballast_xds_pending_nacks", frozenset())] == 0


async def test_it_fails_calls_fast_when_every_pod_is_drained_and_recovers(
    backends, balancers, xds_clients
):
    a, b = await backends("pod-a"), await backends("pod-b")
    balancer = await balancers(config([a, b], xds={"address": "127.0.0.1:0"}))
    server, cluster = _xds(balancer), balancer.clusters["echo"]
    client = await xds_clients(balancer)
    await client.request(op="calls", n=10)

    version = _eds_version(server)
    cluster.drain("pod-a")
    cluster.drain("pod-b")
    await _in_sync_after_push(server, version)
    calls_before = a.calls + b.calls
    refused = await client.request(op="calls", n=5, wait_for_ready=False)
    assert refused["errors"] == {"UNAVAILABLE": 5} and a.calls + b.calls == calls_before

    version = _eds_version(server)
    cluster.undrain("pod-b")
    await _in_sync_after_push(server, version)
    back = await client.request(op="calls", n=10)
    assert back["counts"] == {"pod-b": 10} and back["errors"] == {}
