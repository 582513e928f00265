"""The auto-weights math (gRPC WRR with the platform's CPU): calls per core, the error
penalty, the blackout of new pods, expiry, smoothing, the bounded step, the mean kept at
the default, and no churn for small moves. Pure: a fake clock, no Django."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from dashboard.control.autoweigher import pod_loads
from dashboard.control.autoweights import AutoWeights, AutoWeightsConfig, Decision, PodLoad
from dashboard.control.desired import EndpointWant

DEFAULT = 100


def loads(cores: Mapping[str, float], qps: float = 100.0, errors: float = 0.0) -> list[PodLoad]:
    return [PodLoad(pod, qps, errors, c) for pod, c in cores.items()]


def run(
    weights: AutoWeights,
    cores: Mapping[str, float],
    seconds: int,
    current: dict[str, int] | None = None,
    start_s: float = 0.0,
    every_s: float = 2.0,
) -> dict[str, int]:
    """Steps every `every_s` for `seconds`, applying what changed as the controller does."""
    given = dict(current or {})
    t = start_s
    while t <= start_s + seconds:
        for d in weights.step(loads(cores), given, DEFAULT, t):
            apply(given, d)
        t += every_s
    return given


def apply(given: dict[str, int], d: Decision) -> None:
    if not d.changed:
        return
    if d.weight is None:
        given.pop(d.pod, None)
    else:
        given[d.pod] = d.weight


def test_it_gives_a_pod_costing_twice_the_cpu_half_the_weight_of_the_others() -> None:
    given = run(AutoWeights(), {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.2}, seconds=60)
    assert given["d"] == pytest.approx(given["a"] / 2, rel=0.06)
    assert given["a"] == given["b"] == given["c"]


def test_it_keeps_the_mean_weight_at_the_default() -> None:
    given = run(AutoWeights(), {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.2}, seconds=60)
    assert sum(given.values()) / 4 == pytest.approx(DEFAULT, rel=0.03)


def test_it_weighs_by_calls_per_core_not_by_cpu_alone() -> None:
    # Same CPU, but b serves twice the calls with it: b is the efficient one.
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    given: dict[str, int] = {}
    for t in range(0, 60, 2):
        step = [PodLoad("a", 50.0, 0.0, 0.2), PodLoad("b", 100.0, 0.0, 0.2)]
        for d in weights.step(step, given, DEFAULT, t):
            apply(given, d)
    assert given["b"] > given["a"]


def test_it_penalises_errors_as_grpc_does() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    given: dict[str, int] = {}
    for t in range(0, 60, 2):
        # Same calls and CPU; b fails 20 % of them (cheap, fast failures).
        step = [PodLoad("a", 100.0, 0.0, 0.2), PodLoad("b", 100.0, 20.0, 0.2)]
        for d in weights.step(step, given, DEFAULT, t):
            apply(given, d)
    # qps ÷ (0.2 + 1.0 × 0.2) against qps ÷ 0.2: half the raw weight.
    assert given["b"] == pytest.approx(given["a"] / 2, rel=0.1)  # within the 10 % dead band
    step = [PodLoad("a", 100.0, 0.0, 0.2), PodLoad("b", 100.0, 20.0, 0.2)]
    decision = weights.step(step, given, DEFAULT, 100)[1]
    assert "0.20 cores at 100 rps, 20.0 % errors" in decision.reason


def test_it_gives_no_weight_during_the_blackout_of_a_new_pod() -> None:
    weights = AutoWeights()  # blackout 10 s, as gRPC's
    cores = {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.2}
    early = [d for t in (0, 2, 4, 6, 8) for d in weights.step(loads(cores), {}, DEFAULT, t)]
    assert not any(d.changed for d in early)
    assert "new: measured for" in early[-1].reason
    after = weights.step(loads(cores), {}, DEFAULT, 10)
    assert any(d.changed for d in after)


def test_a_pod_that_joins_later_keeps_the_default_through_its_blackout() -> None:
    weights = AutoWeights()
    cores = {"a": 0.1, "b": 0.1, "c": 0.2}
    given = run(weights, cores, seconds=40)
    joined = {**cores, "new": 0.05}
    for t in (42, 44, 46):
        decisions = {d.pod: d for d in weights.step(loads(joined), given, DEFAULT, t)}
        assert not decisions["new"].changed and decisions["new"].weight is None


def test_it_moves_at_most_a_quarter_per_interval() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    cores = {"a": 0.1, "b": 0.1, "c": 0.1, "d": 1.0}  # d ten times the cost: target ~31
    given: dict[str, int] = {}
    seen = [DEFAULT]
    for t in range(0, 20, 2):
        for d in weights.step(loads(cores), given, DEFAULT, t):
            apply(given, d)
        seen.append(given.get("d", DEFAULT))
    steps = [after / before for before, after in itertools.pairwise(seen)]
    assert min(steps) >= 0.75 - 0.01
    assert seen[1] == 75  # the first step is bounded, though the target is far lower


def test_it_does_not_give_moves_of_a_few_percent() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    given = run(weights, {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.2}, seconds=60)
    # The load wobbles by 5 %: nothing is given again.
    wobble = {"a": 0.105, "b": 0.095, "c": 0.1, "d": 0.21}
    for t in range(62, 120, 2):
        assert not any(d.changed for d in weights.step(loads(wobble), given, DEFAULT, t))


def test_it_smooths_a_single_noisy_sample() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    cores = {"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.1}
    given = run(weights, cores, seconds=20)
    spike = {**cores, "d": 0.2}  # one interval reads d at twice its CPU
    for d in weights.step(loads(spike), given, DEFAULT, 22):
        apply(given, d)
    # The target halved, the smoothed weight moved halfway: not down to the target.
    assert given.get("d", DEFAULT) > 60


def test_a_weight_expires_after_three_minutes_without_a_measurement() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    cores = {"a": 0.1, "b": 0.1, "c": 0.2}
    given = run(weights, cores, seconds=30)
    assert "c" in given
    unmeasured = [PodLoad("a", 100.0, 0.0, 0.1), PodLoad("b", 100.0, 0.0, 0.1),
                  PodLoad("c", 100.0, 0.0, None)]  # fmt: skip
    for t in range(32, 200, 2):
        for d in weights.step(unmeasured, given, DEFAULT, t):
            apply(given, d)
    assert "c" in given  # under three minutes: kept
    for t in range(200, 240, 2):
        for d in weights.step(unmeasured, given, DEFAULT, t):
            apply(given, d)
    assert "c" not in given


def test_a_restarted_controller_keeps_the_weights_given_through_its_blackout() -> None:
    given = {"a": 114, "b": 114, "c": 57}
    weights = AutoWeights()  # nothing learnt yet
    for t in (0, 2, 4):
        decisions = weights.step(loads({"a": 0.1, "b": 0.1, "c": 0.2}), given, DEFAULT, t)
        assert not any(d.changed for d in decisions)


def test_it_never_starves_a_pod_below_a_tenth_of_the_default() -> None:
    # b fails most calls (errors the balancer cannot lower: clients pinned to it).
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    given: dict[str, int] = {}
    for t in range(0, 120, 2):
        step = [PodLoad("a", 100.0, 0.0, 0.2), PodLoad("b", 10.0, 9.0, 0.2)]
        for d in weights.step(step, given, DEFAULT, t):
            apply(given, d)
    assert given["b"] == 10 and given["a"] > 100


def test_the_reason_says_cpu_calls_and_the_weights() -> None:
    weights = AutoWeights(AutoWeightsConfig(blackout_s=0))
    decisions = weights.step(
        [PodLoad("pod-a", 120.0, 0.0, 0.91), PodLoad("pod-b", 120.0, 0.0, 0.45)], {}, DEFAULT, 0
    )
    a = next(d for d in decisions if d.pod == "pod-a")
    assert a.reason == "pod pod-a: 0.91 cores at 120 rps → weight 75 (was 100)"


def test_an_operator_weight_wins_over_the_auto_weight() -> None:
    assert EndpointWant("p", weight=300, auto_weight=70).desired_weight == 300
    assert EndpointWant("p", auto_weight=70).desired_weight == 70
    assert EndpointWant("p", drained=True).desired_weight is None  # the default


def test_the_controller_reads_each_ready_pods_load_from_the_frames() -> None:
    frames = [
        {"pods": [
            {"pod": "a", "state": "READY", "rps": 10.0, "err_s": 0.0, "pod_rps": 20.0,
             "pod_err_s": 1.0, "cpu_m": 100},
            {"pod": "b", "state": "READY", "rps": 10.0, "err_s": 0.5, "pod_rps": None,
             "cpu_m": None},
        ]},
        {"pods": [
            {"pod": "a", "state": "READY", "rps": 10.0, "err_s": 0.0, "pod_rps": 40.0,
             "pod_err_s": 3.0, "cpu_m": 300},
            {"pod": "b", "state": "READY", "rps": 30.0, "err_s": 0.5, "px_rps": 10.0,
             "pod_rps": None, "cpu_m": 200},
            {"pod": "c", "state": "DRAINING", "rps": 1.0, "cpu_m": 10},
            {"pod": "d", "state": "READY", "rps": 1.0, "cpu_m": 10},
        ]},
    ]  # fmt: skip
    found = {load.pod: load for load in pod_loads(frames, skip={"d"})}
    assert set(found) == {"a", "b"}  # c is not READY, d has an operator weight
    assert found["a"] == PodLoad("a", 30.0, 2.0, 0.2)  # its own count: every client's calls
    assert found["b"] == PodLoad("b", 25.0, 0.5, 0.2)  # Ballast's and proxyless calls
