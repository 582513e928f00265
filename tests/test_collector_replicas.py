"""`ReplicaFollower`: the admin Service's discovery updates → the balancer replicas, each
named by its pod, handed on only when the set (or an address) changes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address
from dashboard.collector.replicas import ReplicaFollower
from dashboard.collector.runner import ReplicaTarget

TOKEN = "t" * 24


def _follower() -> tuple[ReplicaFollower, list[list[tuple[str, str]]]]:
    applied: list[list[tuple[str, str]]] = []

    async def nothing() -> AsyncIterator[Update]:
        yield Reset(())

    follower = ReplicaFollower(
        nothing,
        lambda a: ReplicaTarget(a.endpoint_id, a.target, TOKEN),
        lambda targets: applied.append([(t.id, t.address) for t in targets]),
    )
    return follower, applied


def test_it_names_each_replica_by_its_pod_ready_or_not_terminating_or_not() -> None:
    follower, applied = _follower()
    follower.observe(
        Reset(
            (
                Address("10.0.0.7", 9901, pod_name="ballast-balancer-b"),
                Address("10.0.0.5", 9901, pod_name="ballast-balancer-a", ready=False),
                Address("10.0.0.6", 9901, pod_name="ballast-balancer-c", terminating=True),
            )
        )
    )
    assert applied == [
        [
            ("ballast-balancer-a", "10.0.0.5:9901"),
            ("ballast-balancer-b", "10.0.0.7:9901"),
            ("ballast-balancer-c", "10.0.0.6:9901"),
        ]
    ]


def test_it_hands_on_only_a_change_of_the_set_or_an_address() -> None:
    follower, applied = _follower()
    a = Address("10.0.0.5", 9901, pod_name="a")
    follower.observe(Reset((a,)))
    follower.observe(Add((Address("10.0.0.5", 9901, pod_name="a", ready=False),)))  # same
    follower.observe(Add((Address("10.0.0.9", 9901, pod_name="b"),)))
    follower.observe(Add((Address("10.0.0.8", 9901, pod_name="b"),)))  # b moved
    follower.observe(Remove(("a",)))
    follower.observe(Remove(("nobody",)))
    assert applied == [
        [("a", "10.0.0.5:9901")],
        [("a", "10.0.0.5:9901"), ("b", "10.0.0.9:9901")],
        [("a", "10.0.0.5:9901"), ("b", "10.0.0.8:9901")],
        [("b", "10.0.0.8:9901")],
    ]
