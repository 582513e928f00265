"""PeakEwma: jumps up to a slow response, eases down towards fast ones, forgets when idle."""

from __future__ import annotations

import math

import pytest

from balancer.config import PeakEwmaConfig
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
