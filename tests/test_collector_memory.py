"""The OOM predictor: a pod's working-set slope over a window and its time to OOM."""

from __future__ import annotations

import random

import pytest

from dashboard.collector.memory import (
    MemoryTrends,
    MiB,
    OomForecast,
    forecast,
    least_squares_slope,
)
from platforms.base import PodFacts

LIMIT = 256 * MiB


def leak(start_bytes: float, slope_bytes_per_s: float, seconds: int, step_s: float = 2.0):
    """Samples of a pod leaking `slope_bytes_per_s` from `start_bytes`."""
    n = int(seconds / step_s) + 1
    return [(i * step_s, start_bytes + slope_bytes_per_s * i * step_s) for i in range(n)]


def test_it_fits_the_slope_of_a_steady_leak() -> None:
    samples = leak(100 * MiB, 1 * MiB, 60)
    assert least_squares_slope(samples) == pytest.approx(1 * MiB)


def test_it_predicts_the_time_until_the_working_set_meets_the_limit() -> None:
    samples = leak(100 * MiB, 2 * MiB, 60)  # 220 MiB now, 36 MiB to go at 2 MiB/s
    predicted = forecast("inventory-abc", samples, LIMIT)
    assert predicted is not None
    assert predicted.seconds_to_oom == pytest.approx(18, abs=0.5)
    assert predicted.reason() == (
        "inventory-abc: working set 220 MiB of 256 MiB, +2.0 MiB/s → OOM in ~18 s"
    )


def test_it_predicts_nothing_without_a_limit() -> None:
    assert forecast("p", leak(100 * MiB, 2 * MiB, 60), None) is None


def test_it_predicts_nothing_for_a_flat_or_falling_working_set() -> None:
    assert forecast("p", leak(100 * MiB, 0, 60), LIMIT) is None
    assert forecast("p", leak(200 * MiB, -1 * MiB, 60), LIMIT) is None


def test_it_predicts_nothing_from_too_few_samples() -> None:
    assert forecast("p", leak(100 * MiB, 2 * MiB, 4), LIMIT) is None


def test_it_says_zero_when_already_over_the_limit() -> None:
    predicted = forecast("p", leak(250 * MiB, 1 * MiB, 20), LIMIT)
    assert predicted is not None and predicted.seconds_to_oom == 0


def test_it_sees_the_leak_through_noise() -> None:
    rng = random.Random(7)
    noisy = [(t, v + rng.uniform(-3, 3) * MiB) for t, v in leak(100 * MiB, 1 * MiB, 90)]
    predicted = forecast("p", noisy, LIMIT)
    assert predicted is not None
    assert predicted.slope_bytes_per_s == pytest.approx(1 * MiB, rel=0.15)


def test_it_starts_the_trend_again_after_a_gc_drop() -> None:
    before = leak(100 * MiB, 1 * MiB, 40)  # to 140 MiB, then the GC frees 60
    after = [(t + 42, v - 60 * MiB) for t, v in leak(140 * MiB, 1 * MiB, 30)]
    predicted = forecast("p", before + after, LIMIT)
    assert predicted is not None
    assert predicted.slope_bytes_per_s == pytest.approx(1 * MiB, rel=0.01)
    assert predicted.memory_bytes == 110 * MiB  # from where it is now, not before the drop


def test_it_leaves_out_a_single_low_sample() -> None:
    samples = leak(100 * MiB, 1 * MiB, 60)
    samples[15] = (samples[15][0], 50 * MiB)  # one measurement dip, then back on the line
    predicted = forecast("p", samples, LIMIT)
    assert predicted is not None
    assert predicted.slope_bytes_per_s == pytest.approx(1 * MiB, rel=0.01)


def pod(name: str, memory_bytes: int | None, limit: int | None = LIMIT) -> PodFacts:
    return PodFacts(name, "inventory", "127.0.0.1:1", "Running", True, 0, 0.0,
                    memory_bytes=memory_bytes, memory_limit_bytes=limit)  # fmt: skip


def test_trends_keep_a_window_and_forget_pods_gone() -> None:
    trends = MemoryTrends(window_s=30)
    for t in range(0, 62, 2):
        trends.observe("inventory", [pod("a", 100 * MiB + t * MiB), pod("b", 50 * MiB)], t)
    assert len(trends.samples("inventory", "a")) == 16  # 30 s of samples every 2 s
    forecasts = trends.forecasts("inventory")
    assert set(forecasts) == {"a"}  # b is flat
    assert isinstance(forecasts["a"], OomForecast)
    trends.observe("inventory", [pod("b", 50 * MiB)], 62)
    assert trends.samples("inventory", "a") == []


def test_trends_leave_out_a_new_pods_first_seconds() -> None:
    trends = MemoryTrends()
    for t in range(0, 5):  # its first seconds: fast growth that is no leak
        trends.observe("inventory", [pod("a", 20 * MiB + t * 10 * MiB)], t)
    assert trends.samples("inventory", "a") == []
    assert trends.forecasts("inventory") == {}
