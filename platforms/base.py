"""The platform interface the balancer and the dashboard use.

One interface, two implementations: `local` (pods are processes on this
machine: the demo, tests, benchmarks) and `kubernetes` (EndpointSlices,
pod status, metrics.k8s.io, eviction, rollout restart). Nothing here imports
Django or the dashboard; the balancer may import it.

Names follow Kubernetes: a *deployment* owns pods; a *service* selects them
and is what the balancer discovers. On the local platform a deployment is
also the service of the same name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from balancer.discovery import Update

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]


class PlatformError(RuntimeError):
    """An action the platform refused or could not do; the message says why."""


class RestartRefused(PlatformError):
    """The platform refuses to restart a pod now (Kubernetes: a PodDisruptionBudget)."""


class UnknownPod(PlatformError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class UnknownDeployment(PlatformError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PodFacts:
    """What the platform knows of one pod, as `kubectl get pod -o yaml` would tell.

    Times are Unix seconds. `memory_bytes` is the resident set (the local
    platform) or the working set (Kubernetes): what the OOM killer looks at.
    Resource figures are None until the first measurement.
    """

    name: str
    deployment: str
    address: str | None  # host:port of its gRPC server
    phase: Phase
    ready: bool
    restart_count: int
    started_at_s: float | None
    last_termination_reason: str | None = None  # "OOMKilled", "Error", "Completed"
    last_termination_exit_code: int | None = None
    last_terminated_at_s: float | None = None
    cpu_millicores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    metrics_address: str | None = None  # host:port of its Prometheus /metrics, if any
    node: str | None = None  # the node it runs on (Kubernetes); None on the local platform


class Platform(Protocol):
    def watch_endpoints(self, service: str) -> AsyncIterator[Update]:
        """Balancer discovery updates for a service's pods, with pod names and readiness.

        The first update is a Reset; it follows until the caller stops iterating.
        """

    async def list_pods(self, deployment: str) -> list[PodFacts]:
        """The deployment's pods, oldest first; raises UnknownDeployment."""

    async def restart_pod(self, name: str) -> None:
        """Replaces one pod (Kubernetes: evicts it); the new pod has a new name.

        Returns once the old pod is gone and its replacement started (not
        necessarily ready). Raises UnknownPod.
        """

    async def rollout_restart(self, deployment: str) -> None:
        """Replaces every pod one at a time, as a RollingUpdate with maxSurge 1 and
        maxUnavailable 0 does: each new pod is ready before an old one goes."""

    async def scale(self, deployment: str, replicas: int) -> None:
        """Sets the number of pods; raises UnknownDeployment or PlatformError (replicas < 0)."""


# Optional attributes a platform may have, read with getattr (the local platform has none):
# - `rolls_out_itself: bool`: `rollout_restart` is the platform's own rolling update, so the
#   control plane does not restart pod by pod (Kubernetes).
# - `usage_note: str | None`: why the pods' CPU and memory figures are missing (no
#   metrics-server), in words for the page; None while they are there.
