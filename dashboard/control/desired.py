"""Desired state against what a balancer replica holds: the commands that close the gap.

Pure and Django-free: the reconciler and the actions give it the operator's desired
state (`ServiceWant`) and a replica's latest admin snapshot, and send the commands it
returns. Only what an operator asked for is enforced — a weight, a drain, a policy;
undrain and reverts are sent by the action that clears them, since a replica that
restarts comes back undrained at its configured weights anyway.
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
    endpoint_id: str
    weight: int | None = None
    drained: bool = False
    drain_timeout_s: float | None = None


@dataclass(frozen=True)
class ServiceWant:
    """What the operator asked of one service (its balancer cluster)."""

    cluster: str
    policy: str | None = None
    endpoints: Mapping[str, EndpointWant] = field(default_factory=dict)


def commands_for(want: ServiceWant, snapshot: admin_pb2.Snapshot | None) -> list[Command]:
    """What a replica with `snapshot` must be told to hold `want`; [] when it does.

    A replica without the cluster, or an endpoint it does not know (yet), gets
    no command for it: discovery adds the endpoint, and the next pass sees it.
    """
    if snapshot is None:
        return []
    cluster = next((c for c in snapshot.clusters if c.name == want.cluster), None)
    if cluster is None:
        return []
    commands: list[Command] = []
    if want.policy and cluster.policy != want.policy:
        commands.append(Command("policy", want.cluster, policy=want.policy))
    endpoints = {e.endpoint_id: e for e in cluster.endpoints if not e.removed}
    for endpoint_id, endpoint_want in sorted(want.endpoints.items()):
        seen = endpoints.get(endpoint_id)
        if seen is None:
            continue
        if endpoint_want.weight is not None and seen.weight != endpoint_want.weight:
            commands.append(
                Command("weight", want.cluster, endpoint_id, weight=endpoint_want.weight)
            )
        if endpoint_want.drained and state_name(seen.state) not in DRAINING_STATES:
            commands.append(
                Command("drain", want.cluster, endpoint_id, timeout_s=endpoint_want.drain_timeout_s)
            )
    return commands


def endpoint_view(
    snapshot: admin_pb2.Snapshot | None, cluster: str
) -> dict[str, admin_pb2.EndpointSnapshot]:
    """A replica's endpoints of `cluster` by id (removed ones left out)."""
    if snapshot is None:
        return {}
    for c in snapshot.clusters:
        if c.name == cluster:
            return {e.endpoint_id: e for e in c.endpoints if not e.removed}
    return {}
