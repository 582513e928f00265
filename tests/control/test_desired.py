"""The commands that bring a replica to the desired state, from its snapshot alone:
every field is compared, and what has no override is held to the configured defaults."""

from __future__ import annotations

from balancer.admin.v1 import admin_pb2
from dashboard.control.desired import (
    Command,
    EndpointWant,
    ServiceWant,
    commands_for,
    configured,
)

READY = admin_pb2.ENDPOINT_STATE_READY
UNHEALTHY = admin_pb2.ENDPOINT_STATE_UNHEALTHY
DRAINING = admin_pb2.ENDPOINT_STATE_DRAINING
DRAINED = admin_pb2.ENDPOINT_STATE_DRAINED


def snapshot(
    policy: str = "least_request",
    *,
    configured_policy: str = "least_request",
    default_weight: int = 100,
    removed: tuple[str, ...] = (),
    **endpoints: tuple[int, int],
) -> admin_pb2.Snapshot:
    """One cluster `svc` configured with `configured_policy` and `default_weight`; each
    endpoint as (state, weight)."""
    return admin_pb2.Snapshot(
        balancer_id="b0",
        clusters=[
            admin_pb2.ClusterSnapshot(
                name="svc",
                policy=policy,
                default_weight=default_weight,
                configured_policy=configured_policy,
                endpoints=[
                    admin_pb2.EndpointSnapshot(
                        endpoint_id=name, state=state, weight=weight, removed=name in removed
                    )
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
    held = snapshot("round_robin", a=(READY, 300), b=(DRAINED, 100), c=(READY, 100))
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


def test_it_undrains_an_endpoint_that_missed_its_undrain() -> None:
    """The replica was paused while the undrain (or the clear) was sent."""
    undrained = want(b=EndpointWant("b", weight=300, drained=False))
    assert commands_for(undrained, snapshot(b=(DRAINED, 300))) == [Command("undrain", "svc", "b")]
    cleared = want()
    assert commands_for(cleared, snapshot(b=(DRAINING, 100))) == [Command("undrain", "svc", "b")]


def test_it_sets_the_configured_default_weight_where_no_override_is() -> None:
    """A cleared (or expired) weight, missed by the replica."""
    assert commands_for(want(), snapshot(a=(READY, 300), default_weight=50)) == [
        Command("weight", "svc", "a", weight=50)
    ]
    no_weight = want(a=EndpointWant("a", weight=None, drained=True))
    assert commands_for(no_weight, snapshot(a=(DRAINED, 300))) == [
        Command("weight", "svc", "a", weight=100)
    ]


def test_it_sets_the_configured_policy_where_no_override_is() -> None:
    held = snapshot("round_robin", configured_policy="peak_ewma", a=(READY, 100))
    assert commands_for(want(), held) == [Command("policy", "svc", policy="peak_ewma")]


def test_endpoints_discovery_removed_are_left_to_drain() -> None:
    gone = snapshot(a=(DRAINING, 300), removed=("a",))
    assert commands_for(want(), gone) == []


def test_an_unhealthy_endpoint_is_not_undrained_again() -> None:
    """Undrain of an endpoint whose health fails leaves it UNHEALTHY: that is held."""
    assert commands_for(want(), snapshot(a=(UNHEALTHY, 100))) == []


def test_a_pod_a_restart_owns_is_never_undrained_behind_its_back() -> None:
    """Between the operation dropping its drain and discovery removing the old pod."""
    restarting = ServiceWant("svc", restarting=frozenset({"a"}))
    rolling_out = ServiceWant("svc", rolling_out=True)
    held = snapshot(a=(DRAINED, 100), b=(DRAINED, 100))
    assert commands_for(restarting, held) == [Command("undrain", "svc", "b")]
    assert commands_for(rolling_out, held) == []


def test_a_replica_too_old_to_report_its_defaults_is_held_to_the_overrides_only() -> None:
    """Without `configured_policy` its default weight (0 on the wire) means nothing."""
    old = snapshot(
        "round_robin", configured_policy="", default_weight=0, a=(READY, 300), b=(READY, 100)
    )
    assert commands_for(want(b=EndpointWant("b", weight=200)), old) == [
        Command("weight", "svc", "b", weight=200)
    ]
    assert configured(old, "svc") is None
    assert configured(snapshot(default_weight=70), "svc") == (70, "least_request")
