"""The frame tells the two paths apart: what Ballast carried, what bypassed it (the
pods' own counts minus Ballast's: the L4 path), and the total; each scored. And the
busiest pod named does not flip between near-equal pods."""

from __future__ import annotations

from dashboard.collector.frames import ColorBook, build_frame, bypass_load
from dashboard.collector.imbalance import LoadWindow, imbalance
from dashboard.collector.scrape import PodRates
from tests.test_collector_frames import UP, T, endpoint_rates, pod_facts

PODS = ("pod-a", "pod-b", "pod-c")


def _windows() -> tuple[LoadWindow, LoadWindow, LoadWindow]:
    return LoadWindow(1), LoadWindow(1), LoadWindow(1)


def test_it_gives_each_pod_the_calls_that_bypassed_ballast():
    carried = [endpoint_rates(name, 50) for name in PODS]
    # Ballast's 50/s each, plus L4 clients pinned to pod-a (100/s) and pod-b (20/s).
    reported = {"pod-a": PodRates(150, 0), "pod-b": PodRates(70, 0), "pod-c": PodRates(50, 0)}
    frame = build_frame("svc", T, carried, [pod_facts(n) for n in PODS], UP, pod_rates=reported)
    assert bypass_load({r.endpoint_id: r for r in carried}, reported) == {
        "pod-a": 100,
        "pod-b": 20,
        "pod-c": 0,
    }
    assert frame["totals"]["bypass_rps"] == 120
    assert frame["imbalance"]["flagged"] is False
    # The bypassing path alone is far more skewed than the total, which Ballast evens out.
    assert frame["bypass_imbalance"]["busiest"] == "pod-a"
    assert frame["bypass_imbalance"]["max_mean"] == 2.5
    assert frame["bypass_imbalance"]["flagged"] is True
    assert frame["pod_imbalance"]["max_mean"] < frame["bypass_imbalance"]["max_mean"]


def _leaning(policy: str, carried_a: float, carried_b: float) -> dict:
    """Two pods; L4 clients pinned to pod-a (90/s); Ballast sends `carried_a`/`carried_b`."""
    carried = [endpoint_rates("pod-a", carried_a), endpoint_rates("pod-b", carried_b)]
    reported = {"pod-a": PodRates(90 + carried_a, 0), "pod-b": PodRates(carried_b, 0)}
    pods = [pod_facts("pod-a"), pod_facts("pod-b")]
    frame = build_frame("svc", T, carried, pods, UP, pod_rates=reported, policy=policy)
    return dict(frame["imbalance"])


def test_a_load_aware_policy_leaning_away_from_the_l4_pinned_pod_is_not_flagged():
    # least_request sends more to pod-b, which the L4 clients leave idle: by design.
    score = _leaning("least_request", 30, 60)
    assert (score["busiest"], score["max_mean"]) == ("pod-b", 1.333)
    assert (score["flagged"], score["leans_away"]) == (False, True)
    assert _leaning("peak_ewma", 30, 60)["leans_away"] is True


def test_a_skew_that_nothing_explains_stays_flagged():
    # Round robin has no reason to lean; a load-aware skew toward the pinned pod neither.
    for score in (_leaning("round_robin", 30, 60), _leaning("least_request", 60, 30)):
        assert score["flagged"] is True
        assert "leans_away" not in score


def test_an_even_share_is_balanced_without_a_lean():
    score = _leaning("least_request", 45, 45)
    assert score["flagged"] is False
    assert "leans_away" not in score


def test_it_never_counts_negative_bypass_and_counts_all_of_an_unrouted_pod():
    # The pod's scrape and the balancer's snapshot cover slightly different seconds.
    carried = [endpoint_rates("pod-a", 52)]
    reported = {"pod-a": PodRates(50, 0), "pod-b": PodRates(30, 0)}
    pods = [pod_facts("pod-a"), pod_facts("pod-b")]
    frame = build_frame("svc", T, carried, pods, UP, pod_rates=reported)
    assert bypass_load({"pod-a": carried[0]}, reported) == {"pod-a": 0, "pod-b": 30}
    assert frame["totals"]["bypass_rps"] == 30


def test_it_has_no_bypass_figures_when_no_pod_reports():
    frame = build_frame("svc", T, [endpoint_rates("pod-a")], [pod_facts("pod-a")], UP)
    assert frame["totals"]["bypass_rps"] is None
    assert frame["bypass_imbalance"]["max_mean"] is None


def test_it_keeps_naming_the_busiest_pod_while_another_is_only_a_little_busier():
    first = imbalance({"pod-a": 101.0, "pod-b": 100.0, "pod-c": 10.0})
    assert first.busiest == "pod-a"
    near = imbalance({"pod-a": 100.0, "pod-b": 103.0, "pod-c": 10.0}, incumbent="pod-a")
    assert near.busiest == "pod-a"
    assert near.max_over_mean == 103.0 / (213.0 / 3)  # the score is the top pod's
    clear = imbalance({"pod-a": 100.0, "pod-b": 110.0, "pod-c": 10.0}, incumbent="pod-a")
    assert clear.busiest == "pod-b"
    gone = imbalance({"pod-b": 100.0, "pod-c": 10.0}, incumbent="pod-a")
    assert gone.busiest == "pod-b"


def test_the_frames_busiest_pod_does_not_flip_between_near_equal_pods():
    windows = _windows()
    names = []
    for a, b in [(100, 99), (99, 100), (100, 98), (98, 101), (99, 100)]:
        carried = [endpoint_rates("pod-a", a), endpoint_rates("pod-b", b)]
        frame = build_frame("svc", T, carried, [], UP, windows=windows)
        names.append(frame["imbalance"]["busiest"])
    assert names == ["pod-a"] * 5
    carried = [endpoint_rates("pod-a", 80), endpoint_rates("pod-b", 120)]
    frame = build_frame("svc", T, carried, [], UP, windows=windows)
    assert frame["imbalance"]["busiest"] == "pod-b"


def test_a_pod_keeps_its_color_and_a_replacement_takes_an_unused_one():
    book = ColorBook(size=4)
    assert book.assign(["pod-a", "pod-b"]) == {"pod-a": 0, "pod-b": 1}
    # pod-a is replaced by pod-c: pod-b keeps 1, pod-c takes 2, not pod-a's 0.
    assert book.assign(["pod-b", "pod-c"]) == {"pod-b": 1, "pod-c": 2}
    assert book.assign(["pod-b", "pod-c", "pod-d", "pod-e"]) == {
        "pod-b": 1,
        "pod-c": 2,
        "pod-d": 3,
        "pod-e": 0,
    }


def test_every_pod_of_a_frame_has_a_distinct_color_while_the_palette_lasts():
    names = [f"pod-{i}" for i in range(5)]
    frame = build_frame("svc", T, [endpoint_rates(n) for n in names], [], UP)
    assert [p["color"] for p in frame["pods"]] == [0, 1, 2, 3, 4]


def test_it_counts_errors_by_grpc_status_code():
    carried = [
        endpoint_rates("pod-a", 100, errors_per_s=3),
        endpoint_rates("pod-b", 100, errors_per_s=1.5),
        endpoint_rates("pod-c", 100),
    ]
    frame = build_frame("svc", T, carried, [], UP)
    assert frame["totals"]["err_by_code"] == {"UNAVAILABLE": 4.5}
    quiet = build_frame("svc", T, [endpoint_rates("pod-a")], [], UP)
    assert quiet["totals"]["err_by_code"] == {}


def test_it_adds_up_the_pods_calls_by_method():
    reported = {
        "pod-a": PodRates(30, 0, {"demo.Inventory/Get": 20, "demo.Inventory/List": 10}),
        "pod-b": PodRates(5, 0, {"demo.Inventory/Get": 5, "demo.Knobs/Set": 0}),
    }
    pods = [pod_facts("pod-a"), pod_facts("pod-b")]
    frame = build_frame("svc", T, [], pods, UP, pod_rates=reported)
    assert frame["totals"]["rps_by_method"] == {
        "demo.Inventory/Get": 25,
        "demo.Inventory/List": 10,
    }
