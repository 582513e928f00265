"""Endpoint states, slow start and outlier ejection, driven through a Cluster with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import random

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from balancer.cluster import Cluster, UnknownEndpoint
from balancer.config import (
    ClusterConfig,
    HealthCheckConfig,
    OutlierDetectionConfig,
    SlowStartConfig,
)
from balancer.discovery import Add, Remove, Reset
from balancer.endpoint import Address, Endpoint, IllegalTransition, State, StateChange
from balancer.load import PeakEwma
from balancer.picker import POLICIES
from balancer.stats import CODE_INDEX, EndpointStats

OK = CODE_INDEX[grpc.StatusCode.OK]
UNAVAILABLE = CODE_INDEX[grpc.StatusCode.UNAVAILABLE]
NOT_FOUND = CODE_INDEX[grpc.StatusCode.NOT_FOUND]
T0 = 1_000.0


class FakeClock:
    def __init__(self, now_s: float = T0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


class FakeChannel:
    """Stands in for a grpc.aio.Channel: the cluster only ever closes it."""

    closed = False

    async def close(self) -> None:
        self.closed = True


def address(name: str, *, ready: bool = True) -> Address:
    return Address("10.0.0.1", 5000 + int(name.rsplit("-", 1)[1]), pod_name=name, ready=ready)


def make_cluster(clock: FakeClock, names: list[str], **config: object) -> Cluster:
    cluster = Cluster(
        ClusterConfig("c", **config),  # type: ignore[arg-type]
        clock=clock,
        rng=random.Random(3),
        channel_factory=lambda a: FakeChannel(),  # type: ignore[arg-type,return-value]
    )
    cluster.apply(Reset(tuple(address(n) for n in names)))
    return cluster


# --- the state machine ----------------------------------------------------------------------

S = State
# DESIGN.md: PENDING → READY ⇄ UNHEALTHY, READY → EJECTED → READY,
# any → DRAINING → DRAINED, DRAINING/DRAINED → READY on undrain.
DESIGN = (
    {(S.PENDING, S.READY), (S.READY, S.UNHEALTHY), (S.UNHEALTHY, S.READY)}
    | {(S.READY, S.EJECTED), (S.EJECTED, S.READY)}
    | {(s, S.DRAINING) for s in State if s is not S.DRAINING}
    | {(S.DRAINING, S.DRAINED), (S.DRAINING, S.READY), (S.DRAINED, S.READY)}
)
# Not drawn in DESIGN.md (see balancer/endpoint.py): a health check can fail before an
# endpoint was ever READY and while it is ejected, and an undrained endpoint whose
# health fails goes back UNHEALTHY, not READY.
HEALTH_EXTRAS = {
    (S.PENDING, S.UNHEALTHY),
    (S.EJECTED, S.UNHEALTHY),
    (S.DRAINING, S.UNHEALTHY),
    (S.DRAINED, S.UNHEALTHY),
}
ALLOWED = DESIGN | HEALTH_EXTRAS
# A path from PENDING to each state, using DESIGN.md's transitions only.
PATH_TO = {
    S.PENDING: [],
    S.READY: [S.READY],
    S.UNHEALTHY: [S.READY, S.UNHEALTHY],
    S.EJECTED: [S.READY, S.EJECTED],
    S.DRAINING: [S.DRAINING],
    S.DRAINED: [S.DRAINING, S.DRAINED],
}
PAIRS = [(a, b) for a, b in itertools.product(State, State) if a is not b]


def endpoint_in(state: State) -> tuple[Endpoint, list[StateChange]]:
    changes: list[StateChange] = []
    ep = Endpoint(
        address("pod-1"),
        weight=100,
        now_s=T0,
        ewma=PeakEwma(default_rtt_ms=30, decay_s=10, now_s=T0),
        stats=EndpointStats(),
        on_change=lambda _, change: changes.append(change),
    )
    for step in PATH_TO[state]:
        ep.transition(step, "setting up", T0)
    assert ep.state is state
    changes.clear()
    return ep, changes


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str))
def test_it_makes_every_allowed_transition_and_reports_it(old, new):
    ep, changes = endpoint_in(old)
    ep.transition(new, "because", T0 + 5)
    assert ep.state is new
    assert ep.state_since_s == T0 + 5
    assert changes == [StateChange("pod-1", old, new, "because")]


@pytest.mark.parametrize(
    ("old", "new"), [p for p in PAIRS if p not in ALLOWED], ids=lambda s: s.value
)
def test_it_refuses_every_other_transition(old, new):
    ep, changes = endpoint_in(old)
    with pytest.raises(
        IllegalTransition, match=f"pod-1: cannot go from {old.value} to {new.value}"
    ):
        ep.transition(new, "because", T0 + 5)
    assert ep.state is old
    assert changes == []


def test_the_allowed_set_is_design_plus_two_health_transitions():
    assert len(PAIRS) == 30
    assert len(ALLOWED) == 17
    assert not DESIGN & HEALTH_EXTRAS


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_staying_in_a_state_is_a_silent_no_op(state):
    ep, changes = endpoint_in(state)
    ep.transition(state, "again", T0 + 5)
    assert ep.state is state
    assert changes == []


def test_it_marks_when_an_endpoint_became_ready():
    ep, _ = endpoint_in(S.UNHEALTHY)
    ep.transition(S.READY, "health check passed", T0 + 42)
    assert ep.ready_since_s == T0 + 42


def test_a_draining_endpoint_becomes_drained_when_its_last_call_finishes():
    ep, changes = endpoint_in(S.READY)
    calls = [object(), object()]
    for call in calls:
        ep.begin(call)  # type: ignore[arg-type]
    ep.transition(S.DRAINING, "operator", T0)
    ep.finish(calls[0], T0 + 1)  # type: ignore[arg-type]
    assert ep.state is S.DRAINING
    ep.finish(calls[1], T0 + 2)  # type: ignore[arg-type]
    assert ep.state is S.DRAINED
    assert changes[-1] == StateChange("pod-1", S.DRAINING, S.DRAINED, "no calls in flight")


# --- random operations on a cluster keep the invariants -------------------------------------

NAMES = [f"pod-{i}" for i in range(24)]
MAX_EJECTION_PERCENT = 10.0


class ClusterMachine(RuleBasedStateMachine):
    """Discovery, health, operator and traffic events in any order on one cluster."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.cluster: Cluster | None = None
        self.in_flight: list[tuple[Endpoint, object]] = []

    def run(self, fn, *args):  # type: ignore[no-untyped-def]
        """Runs `fn` inside the loop: removing an endpoint closes its channel in a task."""

        async def call():  # type: ignore[no-untyped-def]
            return fn(*args)

        return self.loop.run_until_complete(call())

    @initialize(
        policy=st.sampled_from(POLICIES),
        health_checks=st.booleans(),
        initial=st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)),
    )
    def start(self, policy: str, health_checks: bool, initial: list[str]) -> None:
        config = ClusterConfig(
            "c",
            policy=policy,
            health_check=HealthCheckConfig(enabled=health_checks),
            outlier_detection=OutlierDetectionConfig(
                consecutive_failures=2,
                base_ejection_s=30,
                max_ejection_s=120,
                max_ejection_percent=MAX_EJECTION_PERCENT,
            ),
        )
        self.cluster = Cluster(
            config,
            clock=self.clock,
            rng=random.Random(11),
            channel_factory=lambda a: FakeChannel(),  # type: ignore[arg-type,return-value]
        )
        self.run(self.cluster.apply, Reset(tuple(address(n) for n in initial)))

    def teardown(self) -> None:
        if self.cluster is not None:
            self.loop.run_until_complete(self.cluster.close())
        self.loop.close()

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def ejected(self) -> int:
        return sum(ep.state is S.EJECTED for ep in self.c.endpoints.values())

    # discovery

    @rule(name=st.sampled_from(NAMES), ready=st.booleans())
    def discover(self, name: str, ready: bool) -> None:
        self.run(self.c.apply, Add((address(name, ready=ready),)))

    @rule(name=st.sampled_from(NAMES))
    def lose(self, name: str) -> None:
        self.run(self.c.apply, Remove((name,)))

    # health

    @precondition(lambda self: self.c.endpoints)
    @rule(data=st.data(), healthy=st.booleans())
    def health_check(self, data: st.DataObject, healthy: bool) -> None:
        ep = data.draw(st.sampled_from(sorted(self.c.endpoints.values(), key=lambda e: e.id)))
        if healthy:
            self.run(self.c.set_healthy, ep, "check passed")
        else:
            self.run(self.c.set_unhealthy, ep, "check failed")

    @precondition(lambda self: self.c.endpoints)
    @rule(data=st.data(), connectivity=st.sampled_from(list(grpc.ChannelConnectivity)))
    def channel(self, data: st.DataObject, connectivity: grpc.ChannelConnectivity) -> None:
        ep = data.draw(st.sampled_from(sorted(self.c.endpoints.values(), key=lambda e: e.id)))
        before = ep.state
        self.run(self.c.set_connectivity, ep, connectivity)
        if connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            assert not ep.reachable
            if before in (S.PENDING, S.READY, S.EJECTED):
                assert ep.state is S.UNHEALTHY
                assert "TRANSIENT_FAILURE" in ep.state_reason
        elif connectivity is grpc.ChannelConnectivity.READY:
            assert ep.reachable
            if before is S.UNHEALTHY and ep.healthy:
                assert ep.state is S.READY

    # operator

    @rule(name=st.sampled_from(NAMES))
    def drain(self, name: str) -> None:
        if name in self.c.endpoints:
            ep = self.run(self.c.drain, name)
            assert ep.state in (S.DRAINING, S.DRAINED)
        else:
            with pytest.raises(UnknownEndpoint):
                self.run(self.c.drain, name)

    @rule(name=st.sampled_from(NAMES))
    def undrain(self, name: str) -> None:
        ep = self.c.endpoints.get(name)
        if ep is None or ep.removed:
            with pytest.raises(UnknownEndpoint):
                self.run(self.c.undrain, name)
            return
        before = ep.state
        self.run(self.c.undrain, name)
        if before in (S.DRAINING, S.DRAINED):
            # Back to what health (or discovery) and the channel last said, not blindly to READY.
            assert ep.state is (S.READY if ep.healthy and ep.reachable else S.UNHEALTHY)
        else:
            assert ep.state is before

    @rule(name=st.sampled_from(NAMES), weight=st.integers(0, 3))
    def set_weight(self, name: str, weight: int) -> None:
        if name in self.c.endpoints:
            assert self.run(self.c.set_weight, name, weight).weight == weight
        else:
            with pytest.raises(UnknownEndpoint):
                self.run(self.c.set_weight, name, weight)

    # traffic

    @rule()
    def begin_call(self) -> None:
        ep = self.run(self.c.pick)
        if ep is not None:
            call = object()
            ep.begin(call)  # type: ignore[arg-type]
            self.in_flight.append((ep, call))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), code=st.sampled_from([OK, UNAVAILABLE, NOT_FOUND]))
    def finish_call(self, data: st.DataObject, code: int) -> None:
        ep, call = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        ejected_before = self.ejected()
        self.run(self.c.record_result, ep, code, 0.005)
        self.run(ep.finish, call, self.clock())
        self.check_ejection_cap(ejected_before)

    @precondition(lambda self: self.c.endpoints)
    @rule(data=st.data(), failures=st.integers(1, 3))
    def fail(self, data: st.DataObject, failures: int) -> None:
        ep = data.draw(st.sampled_from(sorted(self.c.endpoints.values(), key=lambda e: e.id)))
        for _ in range(failures):
            ejected_before = self.ejected()
            self.run(self.c.record_result, ep, UNAVAILABLE, 0.001)
            self.check_ejection_cap(ejected_before)

    @rule(dt_s=st.floats(0, 150))
    def sweep(self, dt_s: float) -> None:
        self.clock.advance(dt_s)
        self.run(self.c.sweep_outliers)
        now = self.clock()
        for ep in self.c.endpoints.values():
            assert not (ep.state is S.EJECTED and now >= ep.ejected_until_s), ep

    def check_ejection_cap(self, ejected_before: int) -> None:
        cap = max(1, int(len(self.c.endpoints) * MAX_EJECTION_PERCENT / 100))
        if self.ejected() > ejected_before:
            assert self.ejected() <= cap

    # invariants

    def routable(self, ep: Endpoint) -> bool:
        """READY; in panic also EJECTED or UNHEALTHY, if its channel can connect."""
        if self.c.panic:
            return ep.state in (S.READY, S.EJECTED, S.UNHEALTHY) and ep.reachable
        return ep.state is S.READY

    @invariant()
    def picks_only_routable_endpoints_with_positive_weight(self) -> None:
        if self.cluster is None:
            return
        for _ in range(3):
            ep = self.c.pick()
            if ep is None:
                routable = [e for e in self.c.endpoints.values() if self.routable(e) and e.weight]
                assert routable == []
                assert isinstance(self.c.no_endpoint_reason(), str)
                return
            assert self.routable(ep)
            assert ep.weight > 0 and ep.effective_weight > 0
            assert self.c.endpoints.get(ep.id) is ep

    @invariant()
    def panics_exactly_below_half_ready(self) -> None:
        if self.cluster is None:
            return
        states = [ep.state for ep in self.c.endpoints.values()]
        judged = sum(s in (S.READY, S.EJECTED, S.UNHEALTHY) for s in states)
        ready = states.count(S.READY)
        assert self.c.panic is (judged > 0 and ready * 2 < judged)

    @invariant()
    def an_unreachable_endpoint_is_never_ready(self) -> None:
        if self.cluster is None:
            return
        for ep in self.c.endpoints.values():
            if not ep.reachable:
                assert ep.state is not S.READY, ep

    @invariant()
    def no_endpoint_sits_draining_without_calls(self) -> None:
        if self.cluster is None:
            return
        tracked = {id(ep): ep for ep, _ in self.in_flight}
        for ep in [*self.c.endpoints.values(), *tracked.values()]:
            if ep.state is S.DRAINING:
                assert ep.calls, ep

    @invariant()
    def only_routable_endpoints_carry_weight(self) -> None:
        if self.cluster is None:
            return
        for ep in self.c.endpoints.values():
            if not self.routable(ep):
                assert ep.effective_weight == 0.0

    @invariant()
    def removed_endpoints_stay_only_while_calls_finish(self) -> None:
        if self.cluster is None:
            return
        for ep in self.c.endpoints.values():
            if ep.removed:
                assert ep.state is S.DRAINING and ep.calls


ClusterMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_it_keeps_its_invariants_under_any_sequence_of_events = ClusterMachine.TestCase


# --- slow start -----------------------------------------------------------------------------

SLOW = SlowStartConfig(window_s=60, aggression=2.0, min_weight_percent=10)


def envoy_factor(age_s: float, config: SlowStartConfig = SLOW) -> float:
    ramp = (max(age_s, 1.0) / config.window_s) ** (1 / config.aggression)
    return max(config.min_weight_percent / 100, ramp)


@pytest.fixture
def ramping() -> tuple[FakeClock, Cluster]:
    """Two endpoints serving for a while, then pod-3 joins at T0 + 100."""
    clock = FakeClock()
    cluster = make_cluster(clock, ["pod-1", "pod-2"], slow_start=SLOW)
    clock.advance(100)
    cluster.apply(Add((address("pod-3"),)))
    return clock, cluster


def test_slow_start_leaves_a_fresh_deployment_at_full_weight():
    cluster = make_cluster(FakeClock(), ["pod-1", "pod-2", "pod-3"], slow_start=SLOW)
    assert [ep.effective_weight for ep in cluster.endpoints.values()] == [100.0] * 3


@pytest.mark.parametrize("age_s", [0, 0.5, 1, 2, 5, 15, 30, 45, 59.9])
def test_slow_start_ramps_a_new_endpoint_by_envoys_formula(ramping, age_s):
    clock, cluster = ramping
    clock.advance(age_s)
    cluster.rebuild()
    assert cluster.endpoints["pod-3"].effective_weight == pytest.approx(100 * envoy_factor(age_s))
    assert cluster.endpoints["pod-1"].effective_weight == 100.0


def test_slow_start_never_goes_below_min_weight_percent():
    config = SlowStartConfig(window_s=100, aggression=1.0, min_weight_percent=25)
    clock = FakeClock()
    cluster = make_cluster(clock, ["pod-1"], slow_start=config)
    clock.advance(500)
    cluster.apply(Add((address("pod-2"),)))
    # (1 / 100)^1 = 1 % would be the ramp; the floor is 25 %.
    assert cluster.endpoints["pod-2"].effective_weight == pytest.approx(25.0)
    clock.advance(50)
    cluster.rebuild()
    assert cluster.endpoints["pod-2"].effective_weight == pytest.approx(50.0)


def test_slow_start_ends_at_full_weight_after_the_window(ramping):
    clock, cluster = ramping
    clock.advance(60)
    cluster.rebuild()
    assert cluster.endpoints["pod-3"].effective_weight == 100.0


def test_slow_start_scales_the_operators_weight(ramping):
    clock, cluster = ramping
    cluster.set_weight("pod-3", 400)
    clock.advance(15)
    cluster.rebuild()
    assert cluster.endpoints["pod-3"].effective_weight == pytest.approx(400 * envoy_factor(15))


def test_slow_start_sends_a_new_endpoint_its_reduced_share(ramping):
    clock, cluster = ramping
    clock.advance(15)  # factor (15/60)^(1/2) = 0.5
    cluster.rebuild()
    picks = [cluster.pick() for _ in range(2_500)]
    share = sum(ep is not None and ep.id == "pod-3" for ep in picks) / len(picks)
    assert share == pytest.approx(50 / 250, abs=0.005)


def test_slow_start_begins_again_when_an_endpoint_recovers(ramping):
    clock, cluster = ramping
    clock.advance(300)
    ep = cluster.endpoints["pod-1"]
    cluster.set_unhealthy(ep, "check failed")
    clock.advance(10)
    cluster.set_healthy(ep, "check passed")
    assert ep.effective_weight == pytest.approx(100 * envoy_factor(0))


def test_slow_start_works_with_a_clock_that_starts_at_zero():
    clock = FakeClock(0.0)
    cluster = make_cluster(clock, ["pod-1"], slow_start=SLOW)
    clock.advance(100)
    cluster.apply(Add((address("pod-2"),)))
    assert cluster.endpoints["pod-2"].effective_weight == pytest.approx(100 * envoy_factor(0))


# --- outlier ejection -----------------------------------------------------------------------

OUTLIERS = OutlierDetectionConfig(consecutive_failures=5, base_ejection_s=30, max_ejection_s=100)


def fail_until_ejected(cluster: Cluster, ep: Endpoint) -> float:
    """Records failures until `ep` is EJECTED; returns how long it is ejected for."""
    for _ in range(5):
        assert ep.state is S.READY
        cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.state is S.EJECTED
    return ep.ejected_until_s - ep.state_since_s


@pytest.fixture
def outliers() -> tuple[FakeClock, Cluster]:
    clock = FakeClock()
    return clock, make_cluster(clock, ["pod-1", "pod-2", "pod-3"], outlier_detection=OUTLIERS)


def test_it_ejects_after_consecutive_failures_and_not_before(outliers):
    _, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    for _ in range(4):
        cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.state is S.READY
    cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.state is S.EJECTED
    assert {cluster.pick().id for _ in range(100)} == {"pod-2", "pod-3"}  # type: ignore[union-attr]


def test_a_success_resets_the_failure_count(outliers):
    _, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    for code in [UNAVAILABLE] * 4 + [OK] + [UNAVAILABLE] * 4:
        cluster.record_result(ep, code, 0.001)
    assert ep.state is S.READY


def test_a_code_outside_failure_codes_does_not_count(outliers):
    _, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    for _ in range(10):
        cluster.record_result(ep, NOT_FOUND, 0.001)
    assert ep.state is S.READY


def test_an_ejected_endpoint_returns_at_the_first_sweep_after_its_time(outliers):
    clock, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    assert fail_until_ejected(cluster, ep) == 30
    clock.advance(29.9)
    cluster.sweep_outliers()
    assert ep.state is S.EJECTED
    clock.advance(0.1)
    cluster.sweep_outliers()
    assert ep.state is S.READY
    assert "pod-1" in {cluster.pick().id for _ in range(100)}  # type: ignore[union-attr]


def test_ejection_time_grows_with_each_ejection_up_to_the_maximum(outliers):
    clock, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    durations = []
    for _ in range(5):
        durations.append(fail_until_ejected(cluster, ep))
        clock.advance(durations[-1])
        cluster.sweep_outliers()
        assert ep.state is S.READY
    assert durations == [30, 60, 90, 100, 100]


def test_a_quiet_interval_forgives_one_ejection(outliers):
    clock, cluster = outliers
    ep = cluster.endpoints["pod-1"]
    fail_until_ejected(cluster, ep)
    clock.advance(30)
    cluster.sweep_outliers()  # back to READY
    clock.advance(10)
    cluster.sweep_outliers()  # an interval without failures
    assert fail_until_ejected(cluster, ep) == 30


def test_it_ejects_at_most_max_ejection_percent_but_always_one(outliers):
    _, cluster = outliers
    fail_until_ejected(cluster, cluster.endpoints["pod-1"])
    ep = cluster.endpoints["pod-2"]
    for _ in range(10):
        cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.state is S.READY  # 10 % of 3 rounds down to 0; the floor of one is taken


def test_it_ejects_two_of_twenty_endpoints_at_ten_percent():
    clock = FakeClock()
    names = [f"pod-{i}" for i in range(20)]
    cluster = make_cluster(clock, names, outlier_detection=OUTLIERS)
    for name in names[:3]:
        for _ in range(5):
            cluster.record_result(cluster.endpoints[name], UNAVAILABLE, 0.001)
    states = [cluster.endpoints[n].state for n in names[:3]]
    assert states == [S.EJECTED, S.EJECTED, S.READY]


def test_it_does_not_eject_when_outlier_detection_is_off():
    cluster = make_cluster(
        FakeClock(), ["pod-1", "pod-2"], outlier_detection=OutlierDetectionConfig(enabled=False)
    )
    ep = cluster.endpoints["pod-1"]
    for _ in range(50):
        cluster.record_result(ep, UNAVAILABLE, 0.001)
    assert ep.state is S.READY


# --- drain timeouts when a pod comes back under the same name -------------------------------


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose timers run on the fake clock, so a drain timeout fires on demand."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._fake_clock = clock

    def time(self) -> float:
        return self._fake_clock()


class FakeCall:
    cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def restarted_pod(drain_old_first: bool) -> tuple[FakeCall, FakeCall]:
    """A StatefulSet-style restart: `db-0` returns on a new IP while its old self drains.

    Both selves get a call and a 5 s drain timeout; returns the calls after 6 s.
    """
    clock = FakeClock()
    loop = FakeTimeLoop(clock)

    async def scenario() -> tuple[FakeCall, FakeCall]:
        cluster = make_cluster(clock, [])
        cluster.apply(Add((Address("10.0.0.1", 5000, pod_name="db-0"),)))
        old, old_call = cluster.endpoints["db-0"], FakeCall()
        old.begin(old_call)  # type: ignore[arg-type]
        if drain_old_first:
            cluster.drain("db-0", timeout_s=5)
        cluster.apply(Add((Address("10.0.0.2", 5000, pod_name="db-0"),)))
        new, new_call = cluster.endpoints["db-0"], FakeCall()
        assert new is not old and old.state is S.DRAINING
        new.begin(new_call)  # type: ignore[arg-type]
        cluster.drain("db-0", timeout_s=5)
        if not drain_old_first:
            old.finish(old_call, clock())  # type: ignore[arg-type]
        clock.advance(6)
        for _ in range(3):
            await asyncio.sleep(0)
        await cluster.close()
        return old_call, new_call

    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_a_drain_timeout_cancels_the_calls_still_in_flight():
    clock = FakeClock()
    loop = FakeTimeLoop(clock)

    async def scenario() -> FakeCall:
        cluster = make_cluster(clock, ["pod-1"])
        call = FakeCall()
        cluster.endpoints["pod-1"].begin(call)  # type: ignore[arg-type]
        cluster.drain("pod-1", timeout_s=5)
        clock.advance(4.9)
        await asyncio.sleep(0)
        assert not call.cancelled
        clock.advance(0.2)
        for _ in range(3):
            await asyncio.sleep(0)
        await cluster.close()
        return call

    try:
        assert loop.run_until_complete(scenario()).cancelled
    finally:
        loop.close()


def test_the_old_pods_last_call_does_not_cancel_the_new_pods_drain_timeout():
    _, new_call = restarted_pod(drain_old_first=False)
    assert new_call.cancelled


def test_draining_the_new_pod_does_not_cancel_the_old_pods_drain_timeout():
    old_call, new_call = restarted_pod(drain_old_first=True)
    assert new_call.cancelled
    assert old_call.cancelled
