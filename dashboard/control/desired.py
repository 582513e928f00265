"""Desired state against what a balancer replica holds: the commands that close the gap.

Pure and Django-free: the reconciler gives it the operator's desired state
(`ServiceWant`) and a replica's latest admin snapshot, and sends the commands it
returns. Level-triggered: every field is compared, whatever changed it. An endpoint
without an override should hold the cluster's configured `default_weight` and be in
service (not drained); a cluster without a policy override its `configured_policy`
(both from the replica's own config file, carried in its snapshot). So a replica
that missed an undrain, a clear or an expiry (down or paused while it was sent) is
corrected as soon as it is seen again, and "converged" means equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from balancer.admin.v1 import admin_pb2
from dashboard.collector.rates import state_name

DRAINING_STATES = frozenset({"DRAINING", "DRAINED"})

CommandKind = Literal["weight", "drain", "undrain", "policy"]


@dataclass(frozen=True, slots=True)
class Command:
    """One admin API call to a replica."""

    kind: CommandKind
    cluster: str
    endpoint_id: str = ""
    weight: int = 0
    timeout_s: float | None = None  # drain: cancel what is left after this long
    policy: str = ""

    def describe(self) -> str:
        target = f"{self.cluster}/{self.endpoint_id}" if self.endpoint_id else self.cluster
        detail = {"weight": f" to {self.weight}", "policy": f" to {self.policy}"}.get(self.kind, "")
        return f"{self.kind} {target}{detail}"


@dataclass(frozen=True, slots=True)
class EndpointWant:
    """One endpoint's override: a weight (None: the configured default) and/or a drain.

    `auto_weight` is the auto-weights controller's, given only while the service's
    autoweights are on and automation is not paused: the operator's `weight` wins over
    it, and it over the configured default.
    """

    endpoint_id: str
    weight: int | None = None
    drained: bool = False
    drain_timeout_s: float | None = None
    auto_weight: int | None = None

    @property
    def desired_weight(self) -> int | None:
        """The operator's weight, else the auto weight; None: the configured default."""
        return self.weight if self.weight is not None else self.auto_weight


@dataclass(frozen=True)
class ServiceWant:
    """What the operator asked of one service (its balancer cluster).

    `restarting` names the endpoints a running restart owns (`rolling_out`: every
    endpoint, a rollout restart runs): they are never undrained behind the operation's
    back, even between the moment it drops its drain override and the moment discovery
    removes the old pod.
    """

    cluster: str
    policy: str | None = None
    endpoints: Mapping[str, EndpointWant] = field(default_factory=dict)
    restarting: frozenset[str] = frozenset()
    rolling_out: bool = False

    def may_undrain(self, endpoint_id: str) -> bool:
        return not self.rolling_out and endpoint_id not in self.restarting


def commands_for(want: ServiceWant, snapshot: admin_pb2.Snapshot | None) -> list[Command]:
    """What a replica with `snapshot` must be told to hold `want`; [] when it does.

    A replica without the cluster, or an endpoint it does not know (yet), gets
    no command for it: discovery adds the endpoint, and the next pass sees it. An
    endpoint discovery removed drains on its own and is left alone. A replica too
    old to report its configured defaults (`configured_policy` empty) is only held
    to the overrides.
    """
    cluster = _cluster(snapshot, want.cluster)
    if cluster is None:
        return []
    knows_defaults = bool(cluster.configured_policy)
    commands: list[Command] = []
    policy = want.policy or (cluster.configured_policy if knows_defaults else "")
    if policy and cluster.policy != policy:
        commands.append(Command("policy", want.cluster, policy=policy))
    default_weight = cluster.default_weight if knows_defaults else None
    for seen in sorted(cluster.endpoints, key=lambda e: e.endpoint_id):
        if not seen.removed:
            endpoint_want = want.endpoints.get(seen.endpoint_id) or EndpointWant(seen.endpoint_id)
            commands += _endpoint_commands(want, endpoint_want, seen, default_weight)
    return commands


def _cluster(snapshot: admin_pb2.Snapshot | None, name: str) -> admin_pb2.ClusterSnapshot | None:
    if snapshot is None:
        return None
    return next((c for c in snapshot.clusters if c.name == name), None)


def _endpoint_commands(
    want: ServiceWant,
    endpoint_want: EndpointWant,
    seen: admin_pb2.EndpointSnapshot,
    default_weight: int | None,
) -> list[Command]:
    commands: list[Command] = []
    endpoint_id = seen.endpoint_id
    desired = endpoint_want.desired_weight
    weight = desired if desired is not None else default_weight
    if weight is not None and seen.weight != weight:
        commands.append(Command("weight", want.cluster, endpoint_id, weight=weight))
    draining = state_name(seen.state) in DRAINING_STATES
    if endpoint_want.drained and not draining:
        # A draining endpoint is not drained again: that would restart its timeout.
        commands.append(
            Command("drain", want.cluster, endpoint_id, timeout_s=endpoint_want.drain_timeout_s)
        )
    elif not endpoint_want.drained and draining and want.may_undrain(endpoint_id):
        commands.append(Command("undrain", want.cluster, endpoint_id))
    return commands


def endpoint_view(
    snapshot: admin_pb2.Snapshot | None, cluster: str
) -> dict[str, admin_pb2.EndpointSnapshot]:
    """A replica's endpoints of `cluster` by id (removed ones left out)."""
    found = _cluster(snapshot, cluster)
    if found is None:
        return {}
    return {e.endpoint_id: e for e in found.endpoints if not e.removed}


def configured(snapshot: admin_pb2.Snapshot | None, cluster: str) -> tuple[int, str] | None:
    """The cluster's configured default weight and policy as the replica reports them;
    None when it does not (no such cluster, or a replica too old to say)."""
    found = _cluster(snapshot, cluster)
    if found is None or not found.configured_policy:
        return None
    return found.default_weight, found.configured_policy
