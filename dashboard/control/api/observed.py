"""What the balancers and the platform report, as the API shows it: the page history's
frames (`actions.latest_frame`) joined with the desired state from the database."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings

from dashboard.app.history import service_history
from dashboard.app.overview import STALE_INTERVALS
from dashboard.control import actions
from dashboard.control.models import ClusterOverride, EndpointOverride

POD_FIELDS = (
    "pod", "state", "weight", "rps", "err_s", "p50", "p99", "in_flight", "pod_rps", "cpu_m",
    "mem", "mem_limit", "restarts", "last_reason", "started", "phase", "ready",
    "oom_s",
)  # fmt: skip
TOTALS = ("pods", "ready", "rps", "pod_rps", "err_ratio", "p50", "p99")


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def policy_override(service: str) -> dict[str, Any] | None:
    o = ClusterOverride.objects.select_related("updated_by").filter(service=service).first()
    if o is None:
        return None
    return {
        "policy": o.policy,
        "expires_at": o.expires_at,
        "updated_by": _username(o.updated_by),
        "updated_at": o.updated_at,
    }


def service_summary(service: str) -> dict[str, Any]:
    """The service from its newest frame; its name and nulls before the first frame."""
    frame = actions.latest_frame(service)
    totals = (frame or {}).get("totals", {})
    summary: dict[str, Any] = {"name": service, **{k: totals.get(k) for k in TOTALS}}
    summary.update(
        policy=(frame or {}).get("policy"),
        policy_override=policy_override(service),
        imbalance=(frame or {}).get("imbalance"),
        pod_imbalance=(frame or {}).get("pod_imbalance"),
        replicas=_replica_status(frame),
        updated=(frame or {}).get("t"),
    )
    return summary


def _replica_status(frame: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The replicas as the frame says, judged as `replicas()` judges them: a stale frame
    tells nothing (up and converged None)."""
    if frame is None or frame.get("replicas") is None:
        return None
    fresh = _fresh(frame, int(time.time() * 1000))
    return [
        {
            "id": r["id"],
            "up": r["up"] if fresh else None,
            "converged": _converged(r) if fresh else None,
        }
        for r in frame["replicas"]
    ]


def _fresh(frame: dict[str, Any], now_unix_ms: int) -> bool:
    """A frame newer than STALE_INTERVALS: the collector still speaks for the replicas."""
    return now_unix_ms - frame["t"] <= STALE_INTERVALS * settings.BALLAST_COLLECTOR_INTERVAL_MS


def _converged(replica: dict[str, Any]) -> bool | None:
    """What a frame says of a replica holding the desired state: only a replica that is
    up can (the reconciler judges a snapshot taken after the last change; None: not
    judged, as for a replica paused or down)."""
    converged = replica.get("converged")
    return converged if replica["up"] and isinstance(converged, bool) else None


def desired(o: EndpointOverride | None) -> dict[str, Any] | None:
    state = actions.endpoint_state(o)
    if o is None or state is None:
        return None
    return {**state, "updated_by": _username(o.updated_by), "updated_at": o.updated_at}


def pods(service: str) -> list[dict[str, Any]]:
    """Every pod of the newest frame with its desired state (None: no override)."""
    frame = actions.latest_frame(actions.known_service(service)) or {}
    overrides = {
        o.endpoint_id: o
        for o in EndpointOverride.objects.select_related("updated_by").filter(service=service)
    }
    return [
        {**{k: p.get(k) for k in POD_FIELDS}, "desired": desired(overrides.get(p["pod"]))}
        for p in frame.get("pods", [])
    ]


def pod(service: str, name: str) -> dict[str, Any]:
    """One pod of the newest frame; NotFound names the pods there are."""
    every = pods(service)
    for p in every:
        if p["pod"] == name:
            return p
    names = ", ".join(p["pod"] for p in every) or "none reported yet"
    raise actions.NotFound(f"service {service!r} has no pod {name!r}: its pods are {names}")


def window_stats(service: str, window_s: int, now_unix_ms: int | None = None) -> dict[str, Any]:
    """Per pod the mean rps, err_s and p99 over the frames of the last `window_s`."""
    now = now_unix_ms if now_unix_ms is not None else int(time.time() * 1000)
    encoded = service_history().since(actions.known_service(service), now - window_s * 1000)
    frames = [json.loads(f) for f in encoded]
    by_pod: dict[str, list[dict[str, Any]]] = {}
    for frame in frames:
        for p in frame.get("pods", []):
            by_pod.setdefault(p["pod"], []).append(p)
    return {
        "service": service,
        "window_s": window_s,
        "frames": len(frames),
        "pods": [_pod_stats(name, seen) for name, seen in sorted(by_pod.items())],
    }


def _pod_stats(name: str, seen: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pod": name,
        "frames": len(seen),
        "rps": _mean(p.get("rps") for p in seen),
        "err_s": _mean(p.get("err_s") for p in seen),
        "p99": _mean(p.get("p99") for p in seen),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values there are; None when there are none."""
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 3) if present else None


def replicas(now_unix_ms: int | None = None) -> list[dict[str, Any]]:
    """The configured replicas, then any other a fresh frame names (a collector elsewhere
    may watch more), up and converged as the services' fresh frames say (None: no fresh
    frame names the replica; a frame older than STALE_INTERVALS no longer tells).

    `/api/v1/replicas/` and the overview show this; a service's `replicas` judge its own
    newest frame the same way."""
    now = now_unix_ms if now_unix_ms is not None else int(time.time() * 1000)
    up: dict[str, bool] = {}
    converged: dict[str, list[bool | None]] = {}
    for service in settings.BALLAST_SERVICES:
        frame = actions.latest_frame(service)
        if frame is None or not _fresh(frame, now):
            continue
        for r in frame.get("replicas", []):
            up[r["id"]] = up.get(r["id"], False) or r["up"]
            converged.setdefault(r["id"], []).append(_converged(r))
    addresses = actions.replica_addresses()
    ids = list(addresses) + [rid for rid in up if rid not in addresses]
    return [
        {
            "id": rid,
            "address": addresses.get(rid, ""),
            "up": up.get(rid),
            "converged": _all_converged(converged.get(rid, [])),
        }
        for rid in ids
    ]


def _all_converged(notes: Sequence[bool | None]) -> bool | None:
    """False if any service's frame says not converged, True if all say so, else None."""
    if any(n is False for n in notes):
        return False
    return True if notes and all(notes) else None
