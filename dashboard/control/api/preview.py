"""What-if: the share of new requests every pod would get after a weight or a drain, and
what to worry about, from the newest frame. Nothing is saved, pushed or audited.

The shares are the balancer's own formula (`balancer.admin.explain.expected_shares`):
effective weight ÷ the sum over the pods routed to, where a READY pod's effective weight
is its weight × its slow-start factor (the frame's `eff_weight ÷ weight`) and any other
pod's is 0. For round_robin and random that is the share; for least_request and
peak_ewma it is the share at equal load (a busier or slower pod gets less).

Two warnings: a pod that gains share would run hotter than `hot_cpu_m` (its CPU now,
from the platform's pod facts, scaled by its share after ÷ before: the CPU a pod spends
follows its calls), and a change that leaves fewer than `min_ready` READY pods taking
requests. The panic threshold is not modelled: a drain that takes a service into panic
spreads calls wider than this says (the floor warning fires first at sane settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from balancer.admin.explain import expected_shares, share_basis

READY = "READY"


@dataclass(frozen=True, slots=True)
class Change:
    """The act to preview: a weight for `pod`, or its drain (`weight` None)."""

    pod: str
    weight: int | None = None

    @property
    def action(self) -> str:
        return "drain" if self.weight is None else "set_weight"


class PodPreview(TypedDict):
    pod: str
    state: str | None
    weight: int | None
    weight_after: int | None
    share: float  # of new requests via Ballast, now (0..1)
    share_after: float
    cpu_m: int | None  # now, from the platform; null when not measured
    cpu_after_m: int | None  # scaled by the share; null when it cannot be told


class PreviewWarning(TypedDict):
    kind: str  # "hot" or "ready_floor"
    pod: str | None  # the pod that would run hot; null for the floor
    text: str


class Preview(TypedDict):
    dry_run: bool
    action: str
    pod: str
    policy: str | None
    share_basis: str
    pods: list[PodPreview]
    warnings: list[PreviewWarning]
    hot_cpu_m: int
    min_ready: int


def preview(frame: Mapping[str, Any], change: Change, *, hot_cpu_m: int, min_ready: int) -> Preview:
    """Every pod the balancers route to in `frame` (a service frame), before and after
    `change`, with the warnings it raises."""
    pods = [p for p in frame.get("pods", []) if p.get("state") is not None]
    before = expected_shares({p["pod"]: _weight_now(p) for p in pods})
    after = expected_shares({p["pod"]: _weight_after(p, change) for p in pods})
    rows = [_row(p, change, before[p["pod"]], after[p["pod"]]) for p in pods]
    policy = frame.get("policy")
    warnings = [_hot(row, hot_cpu_m) for row in rows if _runs_hot(row, hot_cpu_m)]
    floor = _floor(rows, change, min_ready)
    return {
        "dry_run": True,
        "action": change.action,
        "pod": change.pod,
        "policy": policy,
        "share_basis": share_basis(policy or ""),
        "pods": rows,
        "warnings": warnings + ([floor] if floor else []),
        "hot_cpu_m": hot_cpu_m,
        "min_ready": min_ready,
    }


def _weight_now(p: Mapping[str, Any]) -> float:
    """The weight the balancers pick by now: 0 unless READY (slow start included)."""
    if p.get("state") != READY:
        return 0.0
    eff = p.get("eff_weight")
    return float(eff if eff is not None else p.get("weight") or 0)


def _slow_start_factor(p: Mapping[str, Any]) -> float:
    weight, eff = p.get("weight") or 0, p.get("eff_weight")
    if weight <= 0 or eff is None:
        return 1.0
    return min(1.0, eff / weight)


def _weight_after(p: Mapping[str, Any], change: Change) -> float:
    if p["pod"] != change.pod:
        return _weight_now(p)
    if change.weight is None or p.get("state") != READY:
        return 0.0
    return change.weight * _slow_start_factor(p)


def _row(p: Mapping[str, Any], change: Change, share: float, share_after: float) -> PodPreview:
    cpu = p.get("cpu_m")
    cpu_after = None
    if cpu is not None and share > 0:
        cpu_after = round(cpu * share_after / share)
    elif cpu is not None and share_after == 0:
        cpu_after = cpu  # no calls via Ballast before or after: its CPU is not ours to move
    targeted = p["pod"] == change.pod and change.weight is not None
    return {
        "pod": p["pod"],
        "state": p.get("state"),
        "weight": p.get("weight"),
        "weight_after": change.weight if targeted else p.get("weight"),
        "share": round(share, 4),
        "share_after": round(share_after, 4),
        "cpu_m": cpu,
        "cpu_after_m": cpu_after,
    }


def _runs_hot(row: PodPreview, hot_cpu_m: int) -> bool:
    cpu_after = row["cpu_after_m"]
    return row["share_after"] > row["share"] and cpu_after is not None and cpu_after > hot_cpu_m


def _hot(row: PodPreview, hot_cpu_m: int) -> PreviewWarning:
    return {
        "kind": "hot",
        "pod": row["pod"],
        "text": (
            f"{row['pod']} would run at about {row['cpu_after_m']} m CPU (now {row['cpu_m']} m;"
            f" share {row['share'] * 100:.1f} % → {row['share_after'] * 100:.1f} %), above"
            f" {hot_cpu_m} m"
        ),
    }


def _floor(rows: list[PodPreview], change: Change, min_ready: int) -> PreviewWarning | None:
    left = sum(1 for r in rows if r["state"] == READY and r["share_after"] > 0)
    if left >= min_ready:
        return None
    what = (
        f"draining {change.pod}"
        if change.weight is None
        else f"weight {change.weight} on {change.pod}"
    )
    return {
        "kind": "ready_floor",
        "pod": None,
        "text": (
            f"{what} leaves {left} READY pod{'s' if left != 1 else ''} taking requests,"
            f" fewer than the floor of {min_ready}"
        ),
    }
