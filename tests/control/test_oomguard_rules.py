"""The OOM guard's rules: what makes it restart a pod, and everything that makes it wait."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.collector.memory import MiB, OomForecast
from dashboard.collector.runner import CollectorConfig, ServiceTarget
from dashboard.control.actions import Actor, Conflict
from dashboard.control.models import AuditEvent, AutomationSwitch, Operation, ServiceAutomation
from dashboard.control.oomguard import ACTION, GuardConfig, OomGuard, guard_service
from platforms.base import PodFacts

pytestmark = pytest.mark.django_db

SERVICE = "inventory"
CONFIG = GuardConfig(threshold_s=120, cooldown_s=300, retry_s=30)


def pod(name: str, ready: bool = True) -> PodFacts:
    return PodFacts(name, SERVICE, "127.0.0.1:1", "Running", ready, 0, 0.0,
                    memory_bytes=200 * MiB, memory_limit_bytes=256 * MiB)  # fmt: skip


PODS = [pod("inventory-a"), pod("inventory-b"), pod("inventory-c")]


def soon(name: str, seconds: float) -> OomForecast:
    return OomForecast(name, 231 * MiB, 256 * MiB, 1.2 * MiB, seconds)


class Starts:
    """The restart flow's seam: records each restart it is asked for, as a running operation."""

    def __init__(self, refuse: str = "") -> None:
        self.pods: list[str] = []
        self.refuse = refuse

    def __call__(self, actor: Actor, service: str, target: str) -> Operation:
        if self.refuse:
            raise Conflict(self.refuse)
        self.pods.append(target)
        op: Operation = Operation.objects.create(
            kind=Operation.Kind.RESTART, service=service, target=target, actor=actor.name
        )
        return op


def guard(forecasts: dict[str, OomForecast], starts: Starts, pods=PODS, config=CONFIG):
    return guard_service(SERVICE, forecasts, pods, config, start=starts)


@pytest.fixture
def guarded() -> None:
    ServiceAutomation.objects.create(service=SERVICE, oom_guard=True)


def finish_operations() -> None:
    Operation.objects.update(step=Operation.Step.DONE, finished_at=timezone.now())


def test_it_does_nothing_while_the_guard_is_off() -> None:
    starts = Starts()
    assert guard({"inventory-a": soon("inventory-a", 21)}, starts) == (None, "")
    ServiceAutomation.objects.create(service=SERVICE, oom_guard=False, autoweights=True)
    assert guard({"inventory-a": soon("inventory-a", 21)}, starts) == (None, "")
    assert starts.pods == [] and not AuditEvent.objects.exists()


def test_it_does_nothing_while_automation_is_paused(guarded: None) -> None:
    AutomationSwitch.objects.create(pk=1, paused=True)
    starts = Starts()
    assert guard({"inventory-a": soon("inventory-a", 21)}, starts) == (None, "")
    assert starts.pods == []


def test_it_restarts_a_pod_due_to_oom_and_audits_why(guarded: None) -> None:
    starts = Starts()
    event, _ = guard({"inventory-a": soon("inventory-a", 21)}, starts)
    assert starts.pods == ["inventory-a"]
    assert event is not None
    assert (event.actor, event.source, event.action) == ("ballast", "system", ACTION)
    assert event.result == AuditEvent.Result.OK
    assert event.detail == (
        "inventory-a: working set 231 MiB of 256 MiB, +1.2 MiB/s → OOM in ~21 s;"
        " restarting before the OOM killer does"
    )
    assert event.after["oom_s"] == 21 and event.after["operation"] == Operation.objects.get().pk


def test_it_leaves_a_pod_alone_while_its_oom_is_further_than_the_threshold(
    guarded: None,
) -> None:
    starts = Starts()
    guard({"inventory-a": soon("inventory-a", 600)}, starts)
    assert starts.pods == []


def test_it_restarts_one_pod_at_a_time_the_soonest_first(guarded: None) -> None:
    starts = Starts()
    due = {"inventory-a": soon("inventory-a", 90), "inventory-b": soon("inventory-b", 30)}
    guard(due, starts)
    event, why = guard(due, starts)  # the first restart still runs
    assert starts.pods == ["inventory-b"]
    assert event is None and why == "another operation runs on the service"


def test_it_waits_while_an_operator_operation_runs(guarded: None) -> None:
    Operation.objects.create(
        kind=Operation.Kind.ROLLOUT_RESTART, service=SERVICE, target=SERVICE, actor="alice"
    )
    starts = Starts()
    guard({"inventory-a": soon("inventory-a", 21)}, starts)
    assert starts.pods == []


def test_it_never_takes_the_service_below_its_ready_floor(guarded: None) -> None:
    starts = Starts()
    pods = [pod("inventory-a"), pod("inventory-b", ready=False), pod("inventory-c")]
    event, why = guard({"inventory-a": soon("inventory-a", 21)}, starts, pods)
    assert starts.pods == [] and event is None
    assert why.endswith("not restarting: 1 other pod(s) ready, the floor is 2")
    # A configured minimum of 1 ready lets it go on with one pod not ready.
    guard({"inventory-a": soon("inventory-a", 21)}, starts, pods, GuardConfig(min_ready=1))
    assert starts.pods == ["inventory-a"]


def test_it_never_restarts_the_only_ready_pod(guarded: None) -> None:
    starts = Starts()
    guard({"inventory-a": soon("inventory-a", 21)}, starts, [pod("inventory-a")])
    assert starts.pods == []


def test_it_cools_down_before_acting_on_the_same_pod_again(guarded: None) -> None:
    starts = Starts()
    due = {"inventory-a": soon("inventory-a", 21)}
    guard(due, starts)
    finish_operations()
    event, why = guard(due, starts)
    assert starts.pods == ["inventory-a"] and event is None
    assert why.endswith("cooling down after its last restart")
    AuditEvent.objects.filter(action=ACTION).update(at=timezone.now() - timedelta(seconds=301))
    guard(due, starts)
    assert starts.pods == ["inventory-a", "inventory-a"]


def test_it_audits_a_refused_restart_and_tries_again_after_the_retry_delay(
    guarded: None,
) -> None:
    due = {"inventory-a": soon("inventory-a", 21)}
    refused = Starts(refuse="the PodDisruptionBudget inventory allows no disruption now")
    event, _ = guard(due, refused)
    assert event is not None and event.result == AuditEvent.Result.FAILED
    assert event.detail.endswith(
        "refused: the PodDisruptionBudget inventory allows no disruption now"
    )
    starts = Starts()
    guard(due, starts)  # within retry_s: waits
    AuditEvent.objects.filter(action=ACTION).update(at=timezone.now() - timedelta(seconds=31))
    guard(due, starts)
    assert starts.pods == ["inventory-a"]


class Watched:
    """What the guard reads of the collector: the services, each pod's forecast, the pods."""

    def __init__(self, forecasts: dict[str, OomForecast], pods: list[PodFacts]) -> None:
        self.config = CollectorConfig(
            replicas=[], services={SERVICE: ServiceTarget(SERVICE, SERVICE)}
        )
        self.memory = self
        self._forecasts = forecasts
        self._pods = pods

    def forecasts(self, deployment: str) -> dict[str, OomForecast]:
        return self._forecasts

    def pods(self, deployment: str) -> list[PodFacts]:
        return self._pods


@pytest.mark.django_db(transaction=True)
async def test_it_says_once_why_it_waits_not_every_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await ServiceAutomation.objects.acreate(service=SERVICE, oom_guard=True)
    pods = [pod("inventory-a"), pod("inventory-b", ready=False), pod("inventory-c")]
    watched = Watched({"inventory-a": soon("inventory-a", 21)}, pods)
    guard_loop = OomGuard(watched, CONFIG)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="dashboard.control.oomguard"):
        for seconds in (21, 19, 17):
            watched._forecasts = {"inventory-a": soon("inventory-a", seconds)}
            assert await guard_loop.check() == []
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "oom guard, inventory: inventory-a: working set 231 MiB of 256 MiB, +1.2 MiB/s"
        " → OOM in ~21 s; not restarting: 1 other pod(s) ready, the floor is 2"
    ]
