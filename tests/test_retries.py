"""Retries in the embedded proxy, with real gRPC servers: what is retried, what never is."""

from __future__ import annotations

import random

import grpc
import grpc.aio
import pytest

from balancer.config import ConfigError, config_from_dict
from balancer.retries import RetryBudget, RetryPolicy
from demo.v1 import workload_pb2 as pb
from tests.support import backend as be
from tests.support.balancing import config
from tests.support.retries import (
    GET_ITEM,
    SINK,
    WATCH_ITEMS,
    by_pod,
    get_items,
    inventory_config,
    snapshot,
    start_sink,
)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
pytestmark = pytest.mark.timeout(120)


async def _failing_fleet(inventories, n: int = 3):
    pods = [await inventories(f"pod-{i}") for i in range(n)]
    pods[0].fail_with = UNAVAILABLE
    return pods


async def test_it_retries_an_idempotent_call_on_another_pod(inventories, balancers):
    pods = await _failing_fleet(inventories)
    balancer = await balancers(inventory_config(pods, {"idempotent_methods": [GET_ITEM]}))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        codes = await get_items(channel, 60)
    assert codes == {"OK": 60}
    failed = pods[0].calls["GetItem"]
    assert failed >= 10  # round robin: about a third of the first tries
    # Never the same pod twice in a row: every retry went elsewhere, and succeeded.
    assert sum(p.total_calls for p in pods) == 60 + failed
    cluster = await snapshot(balancer)
    ep = by_pod(cluster)["pod-0"]
    assert ep.retries_total == ep.retries_succeeded_total == failed
    assert cluster.retries_total == cluster.retries_succeeded_total == failed
    assert not cluster.retry_budget_exhausted


async def test_it_never_retries_a_non_idempotent_call_the_pod_answered(inventories, balancers):
    pods = await _failing_fleet(inventories)
    balancer = await balancers(inventory_config(pods))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        codes = await get_items(channel, 60)
    failed = pods[0].calls["GetItem"]
    assert codes == {"OK": 60 - failed, "UNAVAILABLE": failed}
    assert sum(p.total_calls for p in pods) == 60  # each call reached exactly one pod
    cluster = await snapshot(balancer)
    assert cluster.retries_total == 0
    assert by_pod(cluster)["pod-0"].retries_not_safe_total == failed


async def test_it_turns_retries_off_with_one_attempt(inventories, balancers):
    pods = await _failing_fleet(inventories)
    retry = {"idempotent_methods": [GET_ITEM], "max_attempts": 1}
    balancer = await balancers(inventory_config(pods, retry))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        codes = await get_items(channel, 30)
    assert codes["UNAVAILABLE"] == pods[0].calls["GetItem"] > 0
    assert (await snapshot(balancer)).retries_total == 0


async def test_it_gives_the_failure_to_the_caller_once_the_budget_is_spent(inventories, balancers):
    pods = await _failing_fleet(inventories, n=2)
    # 0 % of calls plus 0.2 a second over 10 s: two retries in the window, then none.
    retry = {"idempotent_methods": [GET_ITEM], "budget_percent": 0, "budget_min_per_s": 0.2}
    balancer = await balancers(inventory_config(pods, retry))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        codes = await get_items(channel, 40)
    failed = pods[0].calls["GetItem"]
    assert codes == {"OK": 40 - (failed - 2), "UNAVAILABLE": failed - 2}
    cluster = await snapshot(balancer)
    assert cluster.retries_total == 2
    assert cluster.retry_budget_exhausted_total == failed - 2
    assert by_pod(cluster)["pod-0"].retry_budget_exhausted_total == failed - 2
    assert cluster.retry_budget_exhausted


async def test_it_retries_a_server_stream_before_its_first_message(inventories, balancers):
    pods = await _failing_fleet(inventories)
    balancer = await balancers(inventory_config(pods, {"idempotent_methods": [WATCH_ITEMS]}))
    watch = pb.WatchItemsRequest(prefix="w", count=2)
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        method = channel.unary_stream(
            WATCH_ITEMS, request_serializer=pb.WatchItemsRequest.SerializeToString,
            response_deserializer=pb.Item.FromString,
        )  # fmt: skip
        for _ in range(12):
            assert [item.id async for item in method(watch, timeout=10)] == ["w-0", "w-1"]
    assert pods[0].calls["WatchItems"] >= 3
    assert (await snapshot(balancer)).retries_succeeded_total == pods[0].calls["WatchItems"]


async def test_it_never_retries_a_server_stream_after_its_first_message(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    retry = {"idempotent_methods": ["/test.Echo/*"]}
    balancer = await balancers(config([a, b], cluster={"retry": retry}, admin={}))
    md = [("x-count", "1"), ("x-fail-code", "UNAVAILABLE")]  # one message, then UNAVAILABLE
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        for _ in range(6):
            call = channel.unary_stream(be.SERVER_STREAM)(b"s", metadata=md, timeout=10)
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for message in call:
                    received.append(message)
            assert caught.value.code() is UNAVAILABLE
            assert received == [b"s0"]
    assert a.calls + b.calls == 6
    assert (await snapshot(balancer)).retries_total == 0


async def test_it_never_retries_a_unary_call_over_the_buffer(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    a.fail_with = UNAVAILABLE
    cluster = {
        "unary_methods": [be.UNARY], "outlier_detection": {"enabled": False},
        "retry": {"idempotent_methods": ["/test.Echo/*"]},  # buffer_bytes: 256 KiB, gRPC's
    }  # fmt: skip
    balancer = await balancers(config([a, b], cluster=cluster, admin={}))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        unary = channel.unary_unary(be.UNARY)
        over = [await _code(unary(b"x" * (300 << 10), timeout=10)) for _ in range(10)]
        failed_over = a.calls
        under = [await _code(unary(b"x" * (10 << 10), timeout=10)) for _ in range(10)]
    assert over.count(UNAVAILABLE) == failed_over > 0  # each failure went to the caller
    assert under == [grpc.StatusCode.OK] * 10
    assert (await snapshot(balancer)).retries_total == a.calls - failed_over > 0


async def test_it_never_retries_a_client_stream_over_the_buffer(balancers):
    a, b = await start_sink("pod-a"), await start_sink("pod-b")
    a.failing = True
    retry = {"idempotent_methods": [SINK], "buffer_bytes": 64 << 10}
    data = {
        "balancer": {"id": "test"}, "listeners": [{"address": "127.0.0.1:0"}],
        "clusters": [{"name": "sink", "outlier_detection": {"enabled": False}, "retry": retry,
                      "discovery": {"endpoints": [{"address": s.address, "name": s.name}
                                                  for s in (a, b)]}}],
    }  # fmt: skip
    try:
        balancer = await balancers(config_from_dict(data, environ={}))
        async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
            put = channel.stream_unary(SINK)
            over = [await _code(put(iter([b"x" * (30 << 10)] * 3), timeout=10)) for _ in range(10)]
            failed_over = a.calls
            under = [await _code(put(iter([b"x" * (10 << 10)] * 3), timeout=10)) for _ in range(10)]
    finally:
        await a.stop()
        await b.stop()
    assert over.count(UNAVAILABLE) == failed_over > 0  # 90 KiB > 64 KiB: never retried
    assert under == [grpc.StatusCode.OK] * 10  # 30 KiB: replayed on pod-b
    assert a.calls + b.calls == 20 + (a.calls - failed_over)


async def test_it_keeps_a_retry_inside_the_callers_deadline(backends, balancers):
    a, b = await backends("pod-a"), await backends("pod-b")
    a.fail_with = UNAVAILABLE
    cluster = {"unary_methods": [be.UNARY], "retry": {"idempotent_methods": [be.UNARY]}}
    balancer = await balancers(config([a, b], cluster=cluster))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        unary = channel.unary_unary(be.UNARY)
        while a.calls == 0:  # until a call goes to a first: 300 ms there, then UNAVAILABLE
            await _code(unary(b"x", metadata=[("x-delay-ms", "300")], timeout=0.6))
    # The retry on b carried what was left of the caller's 0.6 s, not a fresh deadline.
    assert b.deadlines_seen[-1] is not None and b.deadlines_seen[-1] < 0.35


async def test_it_retries_a_try_past_the_per_try_timeout(inventories, balancers):
    pods = [await inventories(f"pod-{i}") for i in range(2)]
    pods[0].hold()  # pod-0 answers nothing
    retry = {"idempotent_methods": [GET_ITEM], "per_try_timeout_s": 0.3}
    balancer = await balancers(inventory_config(pods, retry))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        codes = await get_items(channel, 10)
    assert codes == {"OK": 10}
    assert by_pod(await snapshot(balancer))["pod-0"].retries_total == pods[0].calls["GetItem"] > 0


async def test_it_takes_a_routes_own_policy(inventories, balancers):
    pods = await _failing_fleet(inventories)
    base = inventory_config(pods)
    data = {
        "balancer": {"id": "test"}, "listeners": [{"address": "127.0.0.1:0"}],
        "admin": {"address": "127.0.0.1:0", "token": base.admin.token},
        "routing": {"routes": [{"service": "ballast.demo.v1.Inventory", "cluster": "inventory",
                                "retry": {"idempotent_methods": [GET_ITEM]}}]},
        "clusters": [{"name": "inventory", "outlier_detection": {"enabled": False},
                      "discovery": {"endpoints": [{"address": p.address, "name": p.pod}
                                                  for p in pods]}}],
    }  # fmt: skip
    balancer = await balancers(config_from_dict(data, environ={}))
    async with grpc.aio.insecure_channel(balancer.listen_addresses[0]) as channel:
        assert await get_items(channel, 30) == {"OK": 30}


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ({"max_attempts": 9}, "clusters[0].retry: max_attempts must be between 1"),
        ({"retry_on": ["UNAVAILABLE", "NOPE"]}, "retry_on: unknown status code(s) NOPE"),
        ({"idempotent_methods": ["GetItem"]}, "'GetItem' is not /package.Service/Method"),
        ({"max_atempts": 3}, "clusters[0].retry.max_atempts: unknown key; did you mean"),
        ({"budget_percent": 150}, "budget_percent must be between 0 and 100"),
    ],
)
def test_it_refuses_a_bad_retry_policy_naming_the_key(retry, message):
    data = {"clusters": [{"name": "inventory", "retry": retry}]}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_it_allows_retries_up_to_20_percent_of_calls_plus_10_a_second_over_10_s():
    clock = _Clock()
    budget = RetryBudget(RetryPolicy(), clock)
    for _ in range(1000):
        budget.deposit()
    granted = sum(budget.withdraw() for _ in range(1000))
    assert granted == 0.2 * 1000 + 10 * 10  # Linkerd's defaults
    clock.now_s += 5  # still inside the window: nothing came back
    assert not budget.withdraw()
    clock.now_s += 6  # the window slid past those calls and retries
    assert budget.withdraw()


def test_it_keeps_the_budget_in_fixed_memory_whatever_the_rate():
    clock = _Clock()
    budget = RetryBudget(RetryPolicy(budget_window_s=10), clock)
    for second in range(100):
        clock.now_s = 1000.0 + second
        for _ in range(500):
            budget.deposit()
    assert len(budget._calls) == len(budget._retries) == 10  # one slot per second
    assert sum(budget._calls) == 10 * 500


def test_it_draws_a_backoff_under_a6s_doubling_ceiling():
    policy = RetryPolicy(initial_backoff_s=0.025, max_backoff_s=0.25, backoff_multiplier=2)
    rng = random.Random(1)
    for retry, ceiling in ((1, 0.025), (2, 0.05), (3, 0.1), (4, 0.2), (5, 0.25), (9, 0.25)):
        delays = [policy.backoff_s(retry, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jittered over the whole range
