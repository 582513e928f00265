"""Pods and Deployments as the API returns them, for the fake API server."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def deployment(name: str, replicas: int = 2, namespace: str = "shop") -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "demo:1"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def pod(
    name: str,
    app: str = "inventory",
    *,
    ip: str = "10.0.0.1",
    ready: bool = True,
    restarts: tuple[int, ...] = (0,),
    terminated: Obj | None = None,
    memory_limit: str | None = "256Mi",
    created: str = "2026-01-01T00:00:00Z",
    namespace: str = "shop",
) -> Obj:
    """A running pod of `app` with one container per entry of `restarts`."""
    containers = [
        {
            "name": f"c{i}",
            "image": "demo:1",
            "ports": [
                {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9100, "protocol": "TCP"},
            ],
            "resources": {"limits": {"memory": memory_limit}} if memory_limit else {},
        }
        for i in range(len(restarts))
    ]
    statuses = [
        {
            "name": f"c{i}",
            "ready": ready,
            "restartCount": count,
            "image": "demo:1",
            "imageID": "",
            "state": {"running": {"startedAt": "2026-01-01T00:01:00Z"}},
            "lastState": {"terminated": terminated} if terminated and i == 0 else {},
        }
        for i, count in enumerate(restarts)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app},
            "creationTimestamp": created,
        },
        "spec": {"nodeName": "node-1", "containers": containers},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "startTime": "2026-01-01T00:00:30Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": statuses,
        },
    }
