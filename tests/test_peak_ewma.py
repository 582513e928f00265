"""PeakEwma: jumps up to a slow response, eases down towards fast ones, forgets when idle."""

from __future__ import annotations

import math

import pytest

from balancer.config import ConfigError, PeakEwmaConfig, config_from_dict
from balancer.load import DECAY_S, DEFAULT_RTT_MS, PeakEwma

T0 = 1_000.0


def ewma(estimate_s: float | None = None, decay_s: float = 10.0) -> PeakEwma:
    """A PeakEwma at T0 whose estimate is `estimate_s` (else the default prior)."""
    load = PeakEwma(default_rtt_ms=DEFAULT_RTT_MS, decay_s=decay_s, now_s=T0)
    if estimate_s is not None:
        load.observe(estimate_s, T0)
    return load


def test_it_starts_from_a_30_ms_prior_with_a_10_s_decay():
    assert DEFAULT_RTT_MS == 30.0
    assert DECAY_S == 10.0
    assert PeakEwmaConfig() == PeakEwmaConfig(default_rtt_ms=30.0, decay_s=10.0)
    assert ewma().estimate_s(T0) == pytest.approx(0.030)


def test_a_slower_response_replaces_the_estimate_at_once():
    load = ewma(0.050)
    load.observe(0.400, T0 + 0.001)
    assert load.estimate_s(T0 + 0.001) == pytest.approx(0.400)


def test_a_peak_replaces_the_estimate_however_recent_the_last_update():
    load = ewma(0.050)
    load.observe(0.400, T0)  # same instant: no time to decay, still a jump
    assert load.estimate_s(T0) == pytest.approx(0.400)


# Up to 10 s the 400 ms estimate has decayed to no less than 147 ms, still above the
# 100 ms response; later, the response is a peak over the decayed estimate (tested below).
@pytest.mark.parametrize("elapsed_s", [0.0, 1.0, 5.0, 10.0])
def test_a_faster_response_moves_the_estimate_by_the_ewma_weight(elapsed_s):
    load = ewma(0.400)
    load.observe(0.100, T0 + elapsed_s)
    w = math.exp(-elapsed_s / 10.0)
    assert load.estimate_s(T0 + elapsed_s) == pytest.approx(0.400 * w + 0.100 * (1 - w))


def test_a_faster_response_right_after_the_last_one_changes_nothing():
    load = ewma(0.400)
    load.observe(0.001, T0)
    assert load.estimate_s(T0) == pytest.approx(0.400)


def test_a_long_idle_gap_lets_a_fast_response_take_over():
    load = ewma(0.400)
    load.observe(0.010, T0 + 100)  # ten decay periods: weight of the old estimate e^-10
    assert load.estimate_s(T0 + 100) == pytest.approx(0.010, abs=1e-4)


@pytest.mark.parametrize("elapsed_s", [0.5, 10.0, 23.0, 100.0])
def test_with_no_observations_the_estimate_decays_towards_zero(elapsed_s):
    load = ewma(0.400)
    assert load.estimate_s(T0 + elapsed_s) == pytest.approx(0.400 * math.exp(-elapsed_s / 10))


def test_the_prior_decays_too_so_an_idle_new_endpoint_gets_tried():
    assert ewma().estimate_s(T0 + 10) == pytest.approx(0.030 / math.e)


def test_it_uses_the_configured_decay_period():
    load = ewma(0.400, decay_s=2.0)
    assert load.estimate_s(T0 + 2) == pytest.approx(0.400 / math.e)


def test_reading_the_estimate_does_not_change_it():
    load = ewma(0.400)
    first = load.estimate_s(T0 + 5)
    assert load.estimate_s(T0 + 5) == first
    assert load.estimate_s(T0) == pytest.approx(0.400)


def test_a_clock_that_steps_back_does_not_inflate_the_estimate():
    load = ewma(0.400)
    assert load.estimate_s(T0 - 5) == pytest.approx(0.400)


def test_a_response_slower_than_the_decayed_estimate_becomes_the_estimate():
    load = ewma(1.0)
    assert load.estimate_s(T0 + 10) == pytest.approx(1 / math.e)
    load.observe(0.5, T0 + 10)
    assert load.estimate_s(T0 + 10) == pytest.approx(0.5)


# --- a peak fades with peak_decay_s, the averaged latency with decay_s ----------------------


def steady(load: PeakEwma, rtt_s: float, start_s: float, end_s: float, every_s: float) -> float:
    """Feeds one `rtt_s` answer every `every_s` from `start_s` to `end_s`; returns the end."""
    now = start_s
    while now < end_s:
        now += every_s
        load.observe(rtt_s, now)
    return now


def test_one_slow_answer_among_many_fades_within_a_few_peak_decays():
    load = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.25)
    now = steady(load, 0.005, T0, T0 + 5, 0.01)
    load.observe(0.300, now)  # a scheduling hiccup
    assert load.estimate_s(now) == pytest.approx(0.300)
    now = steady(load, 0.005, now, now + 1.5, 0.01)
    # 295 ms of excess × e^-6 ≈ 0.7 ms: the pod is within any tolerance of its peers again.
    # linkerd's estimate (peak_decay_s = decay_s) would still be 0.300 × e^-0.15 ≈ 258 ms.
    assert load.estimate_s(now) < 0.0065


def test_a_failures_penalty_is_not_forgiven_as_noise_but_fades_over_the_decay():
    load = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.1, outlier_cap=2)
    now = steady(load, 0.005, T0, T0 + 5, 0.01)
    load.observe(5.0, now, failure=True)  # a fast UNAVAILABLE, at the 5 s failure penalty
    now = steady(load, 0.005, now, now + 1.0, 0.01)
    # Fast answers after it do not wash it out within the peak decay, as they would a spike.
    assert load.estimate_s(now) == pytest.approx(5.0 * math.exp(-1.0 / 10), rel=0.01)
    now = steady(load, 0.005, now, now + 60, 0.01)
    assert load.estimate_s(now) < 0.02


def test_with_a_peak_decay_equal_to_the_decay_it_is_linkerds_estimate():
    fast = PeakEwma(default_rtt_ms=30, decay_s=10, now_s=T0, peak_decay_s=10)
    linkerd = ewma()
    for rtt_s, at_s in ((0.005, 1), (0.300, 2), (0.004, 2.5), (0.050, 4), (0.010, 9)):
        fast.observe(rtt_s, T0 + at_s)
        linkerd.observe(rtt_s, T0 + at_s)
        assert fast.estimate_s(T0 + at_s + 0.7) == pytest.approx(
            linkerd.estimate_s(T0 + at_s + 0.7)
        )


def test_a_peak_decay_above_the_decay_acts_as_the_decay():
    load = PeakEwma(default_rtt_ms=30, decay_s=2, now_s=T0, peak_decay_s=50)
    load.observe(0.400, T0)
    assert load.estimate_s(T0 + 2) == pytest.approx(0.400 / math.e)


def test_a_pod_slow_at_every_probe_keeps_an_estimate_far_above_its_fast_peers():
    load = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.25)
    now = steady(load, 0.005, T0, T0 + 5, 0.01)
    # From now on it answers in 50 ms, and is picked once a second (probes).
    for _ in range(20):
        now += 1.0
        load.observe(0.050, now)
    # Each probe after a gap pulls the average towards 50 ms: 2 s later it is still far
    # above 1.5 × a 5 ms peer, so probes get rarer, not more frequent.
    assert load.estimate_s(now + 2) > 0.030


def test_one_answer_counts_at_most_outlier_cap_times_the_average():
    capped = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.1, outlier_cap=2)
    uncapped = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.1)
    for load in (capped, uncapped):
        now = steady(load, 0.005, T0, T0 + 5, 0.01)
        load.observe(1.0, now + 1.0)  # the balancer stalled for a second: one 1 s answer
        steady(load, 0.005, now + 1.0, now + 2.0, 0.01)
    # Uncapped, the 1 s answer weighs 1 − e^-0.1 ≈ 0.095 of the average: +95 ms for 10 s.
    assert uncapped.estimate_s(now + 2.0) > 0.050
    # Capped at 2 × 5 ms it adds under 10 %, within any tolerance of the pod's peers.
    assert capped.estimate_s(now + 2.0) < 0.0056


def test_a_capped_average_still_climbs_to_a_pod_that_stays_slow():
    load = PeakEwma(default_rtt_ms=5, decay_s=10, now_s=T0, peak_decay_s=0.1, outlier_cap=2)
    now = steady(load, 0.005, T0, T0 + 5, 0.01)
    now = steady(load, 0.050, now, now + 30, 0.25)  # 50 ms answers, probed 4 times a second
    assert load.estimate_s(now + 1.0) > 0.030


def _peak_ewma_config(**peak_ewma: object) -> PeakEwmaConfig:
    data = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "clusters": [
            {
                "name": "c",
                "discovery": {"endpoints": [{"address": "127.0.0.1:1"}]},
                "peak_ewma": peak_ewma,
            }
        ],
    }
    return config_from_dict(data, environ={}).clusters[0].peak_ewma


def test_it_reads_the_peak_decay_and_the_outlier_cap_from_the_config():
    assert PeakEwmaConfig().peak_decay_s == 0.1
    assert PeakEwmaConfig().outlier_cap == 2.0
    read = _peak_ewma_config(peak_decay_s=10, outlier_cap=0)  # linkerd's estimate
    assert (read.peak_decay_s, read.outlier_cap) == (10.0, 0.0)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("peak_decay_s", 0, "peak_decay_s must be a positive number"),
        ("outlier_cap", 0.5, "outlier_cap must be 0 (no cap) or between 1 and 1000"),
    ],
)
def test_it_refuses_a_peak_decay_or_outlier_cap_that_cannot_work(key, value, fragment):
    with pytest.raises(ConfigError) as caught:
        _peak_ewma_config(**{key: value})
    assert "clusters[0].peak_ewma" in str(caught.value)
    assert fragment in str(caught.value)
