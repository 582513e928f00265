"""Retries reach the dashboard's frames — the count per pod (the table) and retries/s in the
totals (the errors chart's line), from two real snapshots of a balancer that retried — and
Prometheus, scraped over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.discovery import Remove
from dashboard.collector.frames import build_frame
from dashboard.collector.rates import cluster_retry_rates, rates, sample_from_snapshot
from tests.support.retries import AUTH, GET_ITEM, get_items, inventory_config


async def _snapshot(balancer) -> admin_pb2.Snapshot:
    async with grpc.aio.insecure_channel(balancer.admin_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        snapshot: admin_pb2.Snapshot = await stub.GetSnapshot(
            admin_pb2.GetSnapshotRequest(), metadata=AUTH
        )
    return snapshot


async def test_it_puts_retries_in_the_pod_table_and_on_the_errors_chart(inventories, balancers):
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    pods[0].fail_with = grpc.StatusCode.UNAVAILABLE
    balancer = await balancers(inventory_config(pods, {"idempotent_methods": [GET_ITEM]}))
    before = await _snapshot(balancer)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await get_items(channel, 20) == {"OK": 20}
    after = await _snapshot(balancer)
    assert after.retries_total == pods[0].calls["GetItem"] > 0
    interval = rates(sample_from_snapshot(before), sample_from_snapshot(after))
    assert interval is not None
    frame = build_frame("inventory", after.taken_at_unix_ms, interval.values(), [], [])
    by_pod = {p["pod"]: p for p in frame["pods"]}
    assert by_pod["pod-0"]["retries"] == pods[0].calls["GetItem"]
    assert "retries" not in by_pod["pod-1"]  # nothing retried: the frame stays small
    seconds = (after.taken_at_unix_ms - before.taken_at_unix_ms) / 1000
    assert frame["totals"]["retries_s"] == round(after.retries_total / seconds, 2)


async def test_it_leaves_retries_out_of_a_frame_without_any(inventories, balancers):
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    balancer = await balancers(inventory_config(pods))
    before = await _snapshot(balancer)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        await get_items(channel, 5)
    after = await _snapshot(balancer)
    interval = rates(sample_from_snapshot(before), sample_from_snapshot(after))
    assert interval is not None
    frame = build_frame("inventory", after.taken_at_unix_ms, interval.values(), [], [])
    assert "retries_s" not in frame["totals"]
    assert all("retries" not in p for p in frame["pods"])


async def test_it_exports_retries_to_prometheus(inventories, balancers):
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    pods[0].fail_with = grpc.StatusCode.UNAVAILABLE
    config = inventory_config(
        pods, {"idempotent_methods": [GET_ITEM], "budget_percent": 0, "budget_min_per_s": 0.1}
    )
    balancer = await balancers(
        replace(config, admin=replace(config.admin, metrics_address="127.0.0.1:0"))
    )
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        await get_items(channel, 20)
    failed = pods[0].calls["GetItem"]
    series = await _series(balancer.metrics_address)
    pod0 = frozenset({("cluster", "inventory"), ("endpoint", "pod-0")})
    cluster = frozenset({("cluster", "inventory")})
    assert series[("ballast_endpoint_retries_total", pod0)] == 1  # one retry in the budget
    assert series[("ballast_endpoint_retries_succeeded_total", pod0)] == 1
    assert series[("ballast_endpoint_retry_budget_exhausted_total", pod0)] == failed - 1
    assert series[("ballast_cluster_retry_budget_exhausted_total", cluster)] == failed - 1
    assert series[("ballast_cluster_retry_budget_spent", cluster)] == 1


async def _series(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_it_keeps_the_retries_of_a_pod_removed_meanwhile(inventories, balancers):
    """A pod killed with calls held is retried, then removed by discovery before the next
    snapshot: the cluster's own counter still puts its retries on the errors chart."""
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    pods[0].fail_with = grpc.StatusCode.UNAVAILABLE
    balancer = await balancers(inventory_config(pods, {"idempotent_methods": [GET_ITEM]}))
    before = await _snapshot(balancer)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await get_items(channel, 20) == {"OK": 20}
    balancer.clusters["inventory"].apply(Remove(("pod-0",)))
    after = await _snapshot(balancer)
    assert [ep.endpoint_id for ep in after.clusters[0].endpoints] == ["pod-1"]
    seconds = (after.taken_at_unix_ms - before.taken_at_unix_ms) / 1000
    retries_s = cluster_retry_rates(before, after)["inventory"]
    assert retries_s == pytest.approx(pods[0].calls["GetItem"] / seconds)
    interval = rates(sample_from_snapshot(before), sample_from_snapshot(after))
    assert interval is not None
    frame = build_frame(
        "inventory", after.taken_at_unix_ms, interval.values(), [], [], retries_s=retries_s
    )
    assert frame["totals"]["retries_s"] == round(retries_s, 2) > 0
