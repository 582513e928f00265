"""Every policy spreads new requests by weight; load-aware ones steer away from busy endpoints."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator

import pytest

from balancer.cluster import Cluster
from balancer.config import ClusterConfig, PeakEwmaConfig
from balancer.discovery import Reset
from balancer.endpoint import Address, Endpoint
from balancer.picker import POLICIES

P2C = ("least_request", "peak_ewma")
N = 40_000
# With N = 40,000 picks a share p has a binomial standard deviation of at most
# sqrt(0.25 / N) = 0.0025 for the random policies, so ±0.01 is four of them;
# round robin is exact to 1/N. The seed is fixed, so the result is too.
TOLERANCE = 0.01


class FakeClock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


def make_cluster(
    policy: str,
    weights: dict[str, int],
    *,
    seed: int = 7,
    clock: FakeClock | None = None,
    panic_threshold_percent: float = 50.0,
) -> Cluster:
    """A cluster of READY endpoints named by `weights`' keys, with those weights."""
    cluster = Cluster(
        ClusterConfig("c", policy=policy, panic_threshold_percent=panic_threshold_percent),
        clock=clock or FakeClock(),
        rng=random.Random(seed),
        channel_factory=lambda address: object(),  # pick() never touches a channel
    )
    cluster.apply(
        Reset(tuple(Address("10.0.0.1", 5000 + i, pod_name=n) for i, n in enumerate(weights)))
    )
    for name, weight in weights.items():
        cluster.set_weight(name, weight)
    return cluster


def shares(cluster: Cluster, n: int = N) -> dict[str, float]:
    picks = Counter(ep.id for ep in picks_of(cluster, n))
    return {name: count / n for name, count in picks.items()}


def picks_of(cluster: Cluster, n: int) -> Iterator[Endpoint]:
    for _ in range(n):
        ep = cluster.pick()
        assert ep is not None
        yield ep


def assert_shares_follow(actual: dict[str, float], weights: dict[str, int], tol: float) -> None:
    total = sum(weights.values())
    expected = {name: w / total for name, w in weights.items() if w}
    assert set(actual) == set(expected)
    for name, share in expected.items():
        assert actual[name] == pytest.approx(share, abs=tol), (name, actual)


def hold_calls(cluster: Cluster, name: str, n: int) -> None:
    for _ in range(n):
        cluster.endpoints[name].begin(object())  # type: ignore[arg-type]


WEIGHTS = {"a": 1, "b": 2, "c": 5}


@pytest.mark.parametrize("policy", POLICIES)
def test_it_gives_idle_endpoints_shares_that_follow_their_weights(policy):
    assert_shares_follow(shares(make_cluster(policy, WEIGHTS)), WEIGHTS, TOLERANCE)


@pytest.mark.parametrize("policy", P2C)
def test_it_gives_busy_endpoints_shares_that_follow_their_weights(policy):
    # A closed loop with 80 calls in flight, each finishing in pick order. With
    # whole numbers of calls, (in-flight + 1) / weight rounds in favour of the
    # heavier endpoint; at 80 in flight that bias is under 0.01 (hence ±0.015).
    cluster = make_cluster(policy, WEIGHTS)
    in_flight: list[tuple[Endpoint, object]] = []
    picks: Counter[str] = Counter()
    for ep in picks_of(cluster, N):
        call = object()
        ep.begin(call)  # type: ignore[arg-type]
        in_flight.append((ep, call))
        picks[ep.id] += 1
        if len(in_flight) > 80:
            done, done_call = in_flight.pop(0)
            done.finish(done_call, 1_000.0)  # type: ignore[arg-type]
    assert_shares_follow({k: v / N for k, v in picks.items()}, WEIGHTS, 0.015)


@pytest.mark.parametrize("policy", POLICIES)
def test_it_never_picks_an_endpoint_of_weight_0(policy):
    cluster = make_cluster(policy, {"a": 0, "b": 1, "c": 1})
    assert "a" not in {ep.id for ep in picks_of(cluster, 2_000)}


@pytest.mark.parametrize("policy", POLICIES)
def test_it_picks_nothing_from_an_empty_cluster(policy):
    cluster = make_cluster(policy, {})
    assert cluster.pick() is None
    assert "has no endpoints" in cluster.no_endpoint_reason()


@pytest.mark.parametrize("policy", POLICIES)
def test_it_picks_nothing_when_every_endpoint_has_weight_0(policy):
    cluster = make_cluster(policy, {"a": 0, "b": 0})
    assert cluster.pick() is None


@pytest.mark.parametrize("policy", POLICIES)
def test_it_always_picks_a_lone_endpoint(policy):
    cluster = make_cluster(policy, {"a": 3})
    assert {ep.id for ep in picks_of(cluster, 100)} == {"a"}


# --- load-aware policies --------------------------------------------------------------------


@pytest.mark.parametrize("policy", P2C)
def test_it_steers_picks_away_from_an_endpoint_with_calls_in_flight(policy):
    cluster = make_cluster(policy, {"a": 100, "b": 100, "c": 100})
    hold_calls(cluster, "a", 5)
    actual = shares(cluster, 6_000)
    # `a` only wins when both candidates are `a`: (1/3)·(1/3)^4 ≈ 0.4 % of picks.
    assert actual.get("a", 0.0) < 0.01
    assert actual["b"] == pytest.approx(0.5, abs=0.03)
    assert actual["c"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("policy", P2C)
def test_it_judges_load_per_unit_of_weight(policy):
    cluster = make_cluster(policy, {"a": 100, "b": 400})
    # 3 calls each: b carries less than its weight's worth, so it takes nearly everything.
    hold_calls(cluster, "a", 3)
    hold_calls(cluster, "b", 3)
    assert shares(cluster, 4_000)["b"] > 0.9
    # 3 and 12: both carry their weight's worth, so shares follow the weights.
    hold_calls(cluster, "b", 9)
    assert shares(cluster, 4_000)["b"] == pytest.approx(0.8, abs=0.03)
    # 3 and 40: b is backed up, so a takes more than its weight's 20 %.
    hold_calls(cluster, "b", 28)
    assert shares(cluster, 4_000)["a"] > 0.35


def test_peak_ewma_avoids_a_slow_endpoint_and_probes_it_again_once_its_estimate_decays():
    clock = FakeClock()
    cluster = make_cluster("peak_ewma", {"a": 100, "b": 100, "c": 100}, clock=clock)
    cluster.endpoints["a"].ewma.observe(1.0, clock())
    for name in ("b", "c"):
        cluster.endpoints[name].ewma.observe(0.010, clock())
    assert shares(cluster, 4_000).get("a", 0.0) < 0.01

    # 70 s on, b and c still answer in 10 ms; a's 1 s peak has decayed to
    # 1 s · exp(-70 / 10) ≈ 0.9 ms, so a wins every duel it is drawn into again.
    clock.advance(70)
    for name in ("b", "c"):
        cluster.endpoints[name].ewma.observe(0.010, clock())
    assert shares(cluster, 4_000)["a"] > 0.4


@pytest.mark.parametrize(("tolerance", "low", "high"), [(0.5, 0.47, 0.53), (0.0, 0.99, 1.01)])
def test_peak_ewma_treats_latencies_within_its_tolerance_as_equal(tolerance, low, high):
    clock = FakeClock()
    cluster = Cluster(
        ClusterConfig("c", policy="peak_ewma", peak_ewma=PeakEwmaConfig(tolerance=tolerance)),
        clock=clock, rng=random.Random(7), channel_factory=lambda address: object(),
    )  # fmt: skip
    cluster.apply(Reset((Address("10.0.0.1", 1, pod_name="a"), Address("10.0.0.1", 2, "b"))))
    cluster.endpoints["a"].ewma.observe(0.100, clock())  # peaks over the 30 ms prior
    cluster.endpoints["b"].ewma.observe(0.120, clock())  # 20 % slower: noise, not a slow pod
    # Within the tolerance every duel is a draw and the first, uniform draw goes (0.5);
    # strictly, a wins every duel, and with two endpoints every pick is a duel.
    assert low < shares(cluster, 4_000)["a"] < high


def test_peak_ewma_prefers_the_endpoint_with_the_lower_latency_estimate():
    clock = FakeClock()
    cluster = make_cluster("peak_ewma", {"a": 100, "b": 100}, clock=clock)
    cluster.endpoints["a"].ewma.observe(0.200, clock())
    cluster.endpoints["b"].ewma.observe(0.020, clock())
    # Two endpoints: a wins only when drawn five times in a row, 1/32 of picks.
    assert shares(cluster, 4_000).get("a", 0.0) < 0.05


# --- round robin ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_round_robin_with_equal_weights_repeats_one_order(seed):
    cluster = make_cluster("round_robin", {"a": 1, "b": 1, "c": 1}, seed=seed)
    order = [ep.id for ep in picks_of(cluster, 300)]
    first_round = order[:3]
    assert sorted(first_round) == ["a", "b", "c"]
    assert order == first_round * 100


@pytest.mark.parametrize("seed", range(20))
def test_round_robin_interleaves_a_heavy_endpoint_instead_of_bursting(seed):
    cluster = make_cluster("round_robin", WEIGHTS, seed=seed)
    order = [ep.id for ep in picks_of(cluster, 800)]
    # 5 of every 8 picks go to c; spread evenly, that is never more than 3 in a row.
    longest = max(len(list(run)) for name, run in itertools.groupby(order) if name == "c")
    assert longest <= 3
    assert Counter(order) == {"a": 100, "b": 200, "c": 500}


def test_round_robin_replicas_with_different_seeds_do_not_all_start_on_one_endpoint():
    firsts = {
        next(iter(picks_of(make_cluster("round_robin", {"a": 1, "b": 1, "c": 1}, seed=s), 1))).id
        for s in range(30)
    }
    assert firsts == {"a", "b", "c"}


# --- why nothing was picked -----------------------------------------------------------------


def test_it_explains_that_every_endpoint_is_drained():
    cluster = make_cluster("round_robin", {"a": 1, "b": 1, "c": 1})
    for name in ("a", "b", "c"):
        cluster.drain(name)
    assert cluster.pick() is None
    assert "no READY endpoint: all 3 are DRAINED" in cluster.no_endpoint_reason()


def test_it_counts_each_state_when_no_endpoint_is_ready():
    cluster = make_cluster("round_robin", {"a": 1, "b": 1, "c": 1}, panic_threshold_percent=0)
    cluster.drain("a")
    cluster.set_unhealthy(cluster.endpoints["b"], "health check failed")
    cluster.set_unhealthy(cluster.endpoints["c"], "health check failed")
    assert cluster.pick() is None
    assert "no READY endpoint (1 DRAINED, 2 UNHEALTHY)" in cluster.no_endpoint_reason()


def test_it_explains_that_every_ready_endpoint_has_weight_0():
    cluster = make_cluster("round_robin", {"a": 0, "b": 0, "c": 1})
    cluster.drain("c")
    assert cluster.pick() is None
    assert "every READY endpoint has weight 0" in cluster.no_endpoint_reason()


def test_it_names_the_cluster_in_every_explanation():
    assert "cluster 'c'" in make_cluster("random", {}).no_endpoint_reason()
