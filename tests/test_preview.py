"""The what-if preview's math on service frames: shares after a weight or a drain, the
pods that would run hot, and the READY floor (the API tests run it against a balancer)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.control.api.preview import Change, preview


def pod(name: str, weight: int = 100, cpu_m: int | None = 200, **more: Any) -> dict[str, Any]:
    return {"pod": name, "state": "READY", "weight": weight, "eff_weight": float(weight),
            "cpu_m": cpu_m, **more}  # fmt: skip


def frame(*pods: dict[str, Any], policy: str = "round_robin") -> dict[str, Any]:
    return {"pods": list(pods), "policy": policy}


def shares_after(answer: Any) -> dict[str, float]:
    return {p["pod"]: p["share_after"] for p in answer["pods"]}


def test_it_warns_when_the_pods_left_would_run_hotter_than_the_threshold() -> None:
    answer = preview(
        frame(pod("a", cpu_m=500), pod("b", cpu_m=300), pod("c")),
        Change("c"),
        hot_cpu_m=600,
        min_ready=1,
    )
    assert shares_after(answer) == {"a": 0.5, "b": 0.5, "c": 0.0}
    cpu_after = {p["pod"]: p["cpu_after_m"] for p in answer["pods"]}
    assert cpu_after == {"a": 750, "b": 450, "c": 0}
    assert answer["warnings"] == [
        {
            "kind": "hot",
            "pod": "a",
            "text": "a would run at about 750 m CPU (now 500 m; share 33.3 % → 50.0 %),"
            " above 600 m",
        }
    ]


def test_a_weight_up_warns_for_the_pod_that_gains_and_not_for_those_that_lose() -> None:
    answer = preview(
        frame(pod("a", cpu_m=400), pod("b", cpu_m=400)),
        Change("a", weight=300),
        hot_cpu_m=500,
        min_ready=2,
    )
    assert shares_after(answer) == {"a": 0.75, "b": 0.25}
    assert [w["pod"] for w in answer["warnings"]] == ["a"]
    assert {p["pod"]: p["cpu_after_m"] for p in answer["pods"]} == {"a": 600, "b": 200}


def test_it_keeps_slow_start_on_a_ramping_pod_and_gives_nothing_to_one_not_ready() -> None:
    ramping = {**pod("a"), "eff_weight": 25.0}
    drained = {**pod("c"), "state": "DRAINED", "eff_weight": 0.0}
    answer = preview(frame(ramping, pod("b"), drained), Change("a", weight=300),
                     hot_cpu_m=10_000, min_ready=0)  # fmt: skip
    # 300 × 0.25 = 75 against b's 100.
    assert shares_after(answer) == pytest.approx(
        {"a": 75 / 175, "b": 100 / 175, "c": 0.0}, abs=1e-4
    )
    answer = preview(frame(pod("a"), drained), Change("c", weight=500), hot_cpu_m=10_000,
                     min_ready=0)  # fmt: skip
    assert shares_after(answer) == {"a": 1.0, "c": 0.0}


def test_it_says_nothing_of_cpu_it_cannot_scale() -> None:
    answer = preview(
        frame(pod("a", cpu_m=None), pod("b", cpu_m=900)), Change("b"), hot_cpu_m=100, min_ready=0
    )
    a = next(p for p in answer["pods"] if p["pod"] == "a")
    assert (a["cpu_m"], a["cpu_after_m"], a["share_after"]) == (None, None, 1.0)
    assert answer["warnings"] == []


def test_it_warns_when_weight_zero_or_a_drain_leaves_too_few_ready_pods() -> None:
    answer = preview(frame(pod("a"), pod("b")), Change("a", weight=0), hot_cpu_m=10_000,
                     min_ready=2)  # fmt: skip
    assert answer["warnings"][0]["kind"] == "ready_floor"
    assert answer["warnings"][0]["text"] == (
        "weight 0 on a leaves 1 READY pod taking requests, fewer than the floor of 2"
    )
    answer = preview(frame(pod("a")), Change("a"), hot_cpu_m=10_000, min_ready=1)
    assert answer["warnings"][0]["text"].startswith("draining a leaves 0 READY pods")


def test_it_names_how_the_policy_turns_weights_into_shares() -> None:
    for policy, basis in [("round_robin", "weights"), ("random", "weights"),
                          ("least_request", "weights at equal load"),
                          ("peak_ewma", "weights at equal load")]:  # fmt: skip
        answer = preview(frame(pod("a"), policy=policy), Change("a", 5), hot_cpu_m=1, min_ready=0)
        assert answer["share_basis"] == basis
