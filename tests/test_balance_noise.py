"""bench/balance_noise.py's arithmetic on known inputs: shares over sliding 10 s windows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # bench/ is a folder of scripts importing each other by name

import balance_measure  # noqa: E402
import balance_noise  # noqa: E402


def steady(seconds: int, per_s: list[int]) -> list[tuple[float, list[int]]]:
    """Cumulative samples, one a second, of pods getting `per_s` calls every second."""
    return [(float(t), [n * t for n in per_s]) for t in range(seconds + 1)]


def test_it_finds_no_error_when_every_pod_gets_its_share():
    figures = balance_noise.noise_figures(steady(30, [80] * 5), ["a", "b", "c", "d", "e"], 10)
    assert figures == {
        "max_share_error_pp": 0.0, "min_share_per_pod": [0.2] * 5, "windows": 21,
    }  # fmt: skip


def test_it_catches_a_pod_starved_for_a_few_seconds_inside_one_window():
    samples = steady(30, [80] * 5)
    # Pod e gets nothing from second 12 to 17: its share of the window 10–20 s is 5 × 80 of
    # 4 × 800 + 400 = 3,600 calls, 11.1 %, 8.9 points under 20 %.
    for t, counts in samples:
        counts[4] = 80 * t - 80 * max(0, min(t, 17) - 12)
    figures = balance_noise.noise_figures(samples, ["a", "b", "c", "d", "e"], 10)
    assert figures["max_share_error_pp"] == pytest.approx(8.89, abs=0.01)
    assert figures["min_share_per_pod"][4] == pytest.approx(400 / 3600, abs=1e-4)


def test_a_run_shorter_than_a_window_is_one_window():
    windows = balance_noise.window_share_errors(steady(2, [10, 30]), 10)
    assert windows == [(0.0, [0.25, 0.75])]


def test_it_judges_the_noise_goal_at_3_points():
    report = {"noise": {"noise_max_share_error_pp": 3.5}}
    goal = balance_measure.goals(report)["noise.noise_max_share_error_pp"]
    assert goal == {"value": 3.5, "goal": "<= 3.0", "met": False}
