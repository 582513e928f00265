"""Pod facts from the API's Pod objects and metrics.k8s.io PodMetrics (pure: no I/O)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, cast

from kubernetes.utils import parse_quantity

from platforms.base import Phase, PodFacts

Obj = Mapping[str, Any]
_PHASES = ("Pending", "Running", "Succeeded", "Failed")


def unix_s(timestamp: str | None) -> float | None:
    """An RFC 3339 time of the API (`2026-01-02T03:04:05Z`) as Unix seconds."""
    if not timestamp:
        return None
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def quantity(value: object) -> Decimal | None:
    """A resource quantity (`250m`, `128Mi`, `1.5`) as a number; None when absent or bad."""
    if value is None:
        return None
    try:
        return Decimal(parse_quantity(value))
    except ValueError:
        return None


def _port(pod: Obj, names: Iterable[str], first: bool) -> int | None:
    ports = [p for c in pod.get("spec", {}).get("containers") or () for p in c.get("ports") or ()]
    for name in names:
        for port in ports:
            if port.get("name") == name:
                return int(port["containerPort"])
    return int(ports[0]["containerPort"]) if first and ports else None


def _last_termination(statuses: list[Obj]) -> Obj:
    """The latest `lastState.terminated` of the pod's containers, or {}."""
    ended = [
        s["lastState"]["terminated"]
        for s in statuses
        if (s.get("lastState") or {}).get("terminated")
    ]
    return max(ended, key=lambda t: t.get("finishedAt") or "", default={})


def _memory_limit(pod: Obj) -> int | None:
    """The sum of the containers' memory limits; None unless every container has one."""
    limits = [
        quantity(((c.get("resources") or {}).get("limits") or {}).get("memory"))
        for c in pod.get("spec", {}).get("containers") or ()
    ]
    if not limits or any(limit is None for limit in limits):
        return None
    return int(sum(cast(list[Decimal], limits)))


def _usage(metrics: Obj | None) -> tuple[float | None, int | None]:
    """CPU millicores and memory bytes (the working set, as metrics-server reports)."""
    if metrics is None:
        return None, None
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)
    for container in metrics.get("containers") or ():
        usage = container.get("usage") or {}
        cpu += quantity(usage.get("cpu")) or 0
        memory += quantity(usage.get("memory")) or 0
    return float(cpu * 1000), int(memory)


def pod_facts(pod: Obj, deployment: str, metrics: Obj | None) -> PodFacts:
    """What `kubectl get pod -o yaml` and `kubectl top pod` say of one pod."""
    status = pod.get("status") or {}
    statuses = list(status.get("containerStatuses") or ())
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    phase = status.get("phase")
    ip = status.get("podIP")
    grpc_port = _port(pod, ("grpc",), first=True)
    metrics_port = _port(pod, ("metrics", "http-metrics"), first=False)
    terminated = _last_termination(statuses)
    cpu, memory = _usage(metrics)
    return PodFacts(
        name=pod["metadata"]["name"],
        deployment=deployment,
        address=f"{ip}:{grpc_port}" if ip and grpc_port else None,
        phase=cast(Phase, phase if phase in _PHASES else "Pending"),
        ready=conditions.get("Ready") == "True",
        restart_count=sum(int(s.get("restartCount") or 0) for s in statuses),
        started_at_s=unix_s(status.get("startTime")),
        last_termination_reason=terminated.get("reason"),
        last_termination_exit_code=terminated.get("exitCode"),
        last_terminated_at_s=unix_s(terminated.get("finishedAt")),
        cpu_millicores=cpu,
        memory_bytes=memory,
        memory_limit_bytes=_memory_limit(pod),
        metrics_address=f"{ip}:{metrics_port}" if ip and metrics_port else None,
        node=(pod.get("spec") or {}).get("nodeName"),
    )


def match_labels_selector(deployment: Obj) -> str:
    """A Deployment's `spec.selector.matchLabels` as a label selector (`a=b,c=d`)."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
