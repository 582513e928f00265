"""The imbalance score of a service: busiest pod ÷ mean, and the coefficient of variation."""

from __future__ import annotations

import pytest

from dashboard.collector.imbalance import CV_LIMIT, MAX_OVER_MEAN_LIMIT, LoadWindow, imbalance


def test_it_scores_one_hot_pod():
    score = imbalance({"pod-a": 300.0, "pod-b": 50.0, "pod-c": 50.0, "pod-d": 0.0})
    assert score.mean_rps == 100.0
    assert score.max_over_mean == 3.0
    # Population stdev of (200, -50, -50, -100) is sqrt(55,000 / 4) ≈ 117.26.
    assert score.cv == pytest.approx(1.1726, abs=1e-4)
    assert (score.busiest, score.flagged) == ("pod-a", True)


def test_it_does_not_flag_an_even_spread():
    score = imbalance({"pod-a": 101.0, "pod-b": 99.0, "pod-c": 100.0})
    assert score.max_over_mean == pytest.approx(1.01)
    assert score.cv is not None and score.cv < 0.01
    assert not score.flagged


def test_it_flags_a_wide_spread_on_the_cv_alone():
    # Half the pods at 0.76×, half at 1.24×: the busiest stays under its limit.
    score = imbalance({f"pod-{i}": (76.0 if i % 2 else 124.0) for i in range(10)})
    assert score.max_over_mean is not None and score.max_over_mean < MAX_OVER_MEAN_LIMIT
    assert score.cv is not None and score.cv > CV_LIMIT
    assert score.flagged


def test_it_scores_nothing_without_pods():
    score = imbalance({})
    assert (score.pods, score.max_over_mean, score.cv, score.busiest, score.flagged) == (
        0,
        None,
        None,
        None,
        False,
    )


def test_it_scores_one_pod_as_balanced():
    score = imbalance({"pod-a": 250.0})
    assert (score.max_over_mean, score.cv, score.busiest, score.flagged) == (
        1.0,
        0.0,
        "pod-a",
        False,
    )


def test_it_scores_nothing_without_traffic():
    score = imbalance({"pod-a": 0.0, "pod-b": 0.0})
    assert (score.pods, score.mean_rps, score.max_over_mean, score.cv) == (2, 0.0, None, None)
    assert not score.flagged


def test_it_does_not_flag_too_little_traffic():
    score = imbalance({"pod-a": 3.0, "pod-b": 1.0})
    assert score.max_over_mean == 1.5
    assert not score.flagged
    assert imbalance({"pod-a": 3.0, "pod-b": 1.0}, min_mean_rps=1.0).flagged


def test_it_takes_other_limits():
    load = {"pod-a": 140.0, "pod-b": 60.0}
    assert imbalance(load).flagged
    assert not imbalance(load, max_over_mean_limit=1.5, cv_limit=0.5).flagged


def test_a_load_window_averages_each_pod_over_the_intervals_it_was_in() -> None:
    window = LoadWindow(3)
    assert window.add({"a": 30.0, "b": 50.0}) == {"a": 30.0, "b": 50.0}
    assert window.add({"a": 50.0, "b": 30.0}) == {"a": 40.0, "b": 40.0}
    assert window.add({"a": 40.0, "b": 40.0, "c": 10.0}) == {"a": 40.0, "b": 40.0, "c": 10.0}
    # The oldest interval leaves; "b" has gone and drops out at once.
    assert window.add({"a": 60.0, "c": 20.0}) == {"a": 50.0, "c": 15.0}


def test_chance_spread_per_second_is_not_flagged_once_averaged() -> None:
    """Two pods taking turns at 30 and 50 req/s: each second looks skewed, the window even."""
    window = LoadWindow(10)
    seconds = [{"a": 30.0, "b": 50.0}, {"a": 50.0, "b": 30.0}] * 5
    assert imbalance(seconds[-1]).flagged
    for load in seconds:
        smoothed = window.add(load)
    assert not imbalance(smoothed).flagged
    assert imbalance(smoothed).max_over_mean == 1.0


def test_a_load_window_holds_at_least_one_interval() -> None:
    with pytest.raises(ValueError, match="at least one interval"):
        LoadWindow(0)
