"""The commands that bring a replica to the desired state, from its snapshot alone."""

from __future__ import annotations

from balancer.admin.v1 import admin_pb2
from dashboard.control.desired import Command, EndpointWant, ServiceWant, commands_for

READY = admin_pb2.ENDPOINT_STATE_READY
DRAINING = admin_pb2.ENDPOINT_STATE_DRAINING
DRAINED = admin_pb2.ENDPOINT_STATE_DRAINED


def snapshot(policy: str = "least_request", **endpoints: tuple[int, int]) -> admin_pb2.Snapshot:
    """One cluster `svc`; each endpoint as (state, weight)."""
    return admin_pb2.Snapshot(
        balancer_id="b0",
        clusters=[
            admin_pb2.ClusterSnapshot(
                name="svc",
                policy=policy,
                endpoints=[
                    admin_pb2.EndpointSnapshot(endpoint_id=name, state=state, weight=weight)
                    for name, (state, weight) in endpoints.items()
                ],
            )
        ],
    )


def want(policy: str | None = None, **endpoints: EndpointWant) -> ServiceWant:
    return ServiceWant("svc", policy, endpoints)


def test_a_replica_that_holds_the_desired_state_needs_nothing() -> None:
    desired = want(
        "round_robin", a=EndpointWant("a", weight=300), b=EndpointWant("b", drained=True)
    )
    held = snapshot("round_robin", a=(READY, 300), b=(DRAINED, 100))
    assert commands_for(desired, held) == []


def test_a_restarted_replica_gets_weight_drain_and_policy_again() -> None:
    desired = want(
        "round_robin",
        a=EndpointWant("a", weight=300),
        b=EndpointWant("b", drained=True, drain_timeout_s=30.0),
    )
    fresh = snapshot("least_request", a=(READY, 100), b=(READY, 100))
    assert commands_for(desired, fresh) == [
        Command("policy", "svc", policy="round_robin"),
        Command("weight", "svc", "a", weight=300),
        Command("drain", "svc", "b", timeout_s=30.0),
    ]


def test_a_draining_endpoint_is_not_drained_again() -> None:
    """Draining again would restart its timeout."""
    desired = want(b=EndpointWant("b", drained=True, drain_timeout_s=30.0))
    assert commands_for(desired, snapshot(b=(DRAINING, 100))) == []


def test_endpoints_the_replica_does_not_know_and_other_clusters_are_left_alone() -> None:
    desired = want(gone=EndpointWant("gone", weight=5))
    assert commands_for(desired, snapshot(a=(READY, 100))) == []
    assert commands_for(ServiceWant("other", "random"), snapshot(a=(READY, 100))) == []
    assert commands_for(desired, None) == []


def test_undrain_is_never_forced_on_a_replica() -> None:
    """Someone else's drain (or one in flight from an action) is not undone by a pass."""
    desired = want(b=EndpointWant("b", weight=100, drained=False))
    assert commands_for(desired, snapshot(b=(DRAINED, 100))) == []
