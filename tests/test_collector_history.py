"""The ring buffer of recent frames a page paints first."""

from __future__ import annotations

import json

import pytest

from dashboard.collector.frames import ServiceFrame, build_frame
from dashboard.collector.history import DEFAULT_CAPACITY, FrameHistory, json_array

T = 1_700_000_000_000


def frame(t_unix_ms: int, service: str = "svc") -> ServiceFrame:
    return build_frame(service, t_unix_ms, [], [], [{"id": "b1", "up": True}])


def times(encoded: list[str]) -> list[int]:
    return [json.loads(text)["t"] for text in encoded]


def filled(n: int, capacity: int = DEFAULT_CAPACITY, step_ms: int = 1_000) -> FrameHistory:
    history = FrameHistory(capacity)
    for i in range(n):
        history.append(frame(T + i * step_ms))
    return history


def test_it_keeps_fifteen_minutes_at_one_frame_a_second_by_default():
    assert DEFAULT_CAPACITY >= 900
    history = filled(1_000)
    assert history.count("svc") == DEFAULT_CAPACITY
    assert times(history.latest("svc", 1)) == [T + 999_000]


def test_it_evicts_the_oldest_frames_once_full():
    history = filled(5, capacity=3)
    assert times(history.latest("svc", 10)) == [T + 2_000, T + 3_000, T + 4_000]


def test_it_sizes_itself_for_a_window_and_interval():
    assert FrameHistory.for_window(900, 0.25).capacity == 3_600
    assert FrameHistory.for_window().capacity == 900
    with pytest.raises(ValueError):
        FrameHistory.for_window(900, 0)
    with pytest.raises(ValueError):
        FrameHistory(0)


def test_it_returns_the_frames_since_a_pages_last_one_oldest_first():
    history = filled(10)
    assert times(history.since("svc", T + 6_000)) == [T + 7_000, T + 8_000, T + 9_000]
    assert times(history.since("svc", T + 6_500)) == [T + 7_000, T + 8_000, T + 9_000]
    assert history.since("svc", T + 9_000) == []
    assert len(history.since("svc", 0)) == 10


def test_it_returns_the_latest_n_oldest_first():
    history = filled(10)
    assert times(history.latest("svc", 2)) == [T + 8_000, T + 9_000]
    assert history.latest("svc", 0) == []


def test_it_keeps_services_apart_and_forgets_one():
    history = filled(3)
    history.append(frame(T, service="other"))
    assert (history.services(), len(history)) == (["other", "svc"], 4)
    assert times(history.since("other", 0)) == [T]
    history.forget("other")
    assert (history.latest("other", 5), history.since("unknown", 0), len(history)) == ([], [], 3)


def test_it_replaces_later_frames_with_one_from_a_clock_stepped_back():
    history = filled(5)
    history.append(frame(T + 2_500))
    assert times(history.latest("svc", 10)) == [T, T + 1_000, T + 2_000, T + 2_500]


def test_it_serves_frames_as_one_json_array():
    history = filled(3)
    assert [f["t"] for f in json.loads(json_array(history.latest("svc", 3)))] == [
        T,
        T + 1_000,
        T + 2_000,
    ]
    assert json.loads(json_array([])) == []
