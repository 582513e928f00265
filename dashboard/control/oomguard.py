"""Act before the OOM killer: restart a pod whose memory trend predicts an OOM kill soon.

For each service whose `ServiceAutomation.oom_guard` is on, while `AutomationSwitch` is
not paused, every `interval_s` the guard reads the collector's forecasts
(`collector/memory.py`) and, when a pod's predicted time to OOM is under `threshold_s`,
starts a restart of that pod through the operator's restart flow (`operations.py`:
drain, wait for its calls, restart through the platform, wait for the new pod), as the
system actor. The rules, each of which makes it wait rather than act:

- one pod at a time per service, and never while another operation (an operator's
  restart or rollout, or its own previous one) runs on the service;
- never below the service's ready floor: the other pods ready must be at least
  `min_ready` (default: all but this one, N−1), and never none; on Kubernetes the
  platform's dry-run eviction (the PodDisruptionBudget) is asked too and its refusal
  is audited;
- a cool-down: a pod it acted on is left alone for `cooldown_s` (`retry_s` after a
  refusal), read from the audit, so no pod is restarted twice in a row.

Each act is audited (action ``oom_guard``) with its reason in words ("inventory-abc:
working set 231 MiB of 256 MiB, +1.2 MiB/s → OOM in ~21 s; restarting before the OOM
killer does"); the charts show it as a marker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from balancer.lifecycle import OneTask, every
from dashboard.collector.memory import OomForecast
from dashboard.collector.runner import Collector
from dashboard.control import operations
from dashboard.control.actions import ActionError, Actor
from dashboard.control.models import AuditEvent, AutomationSwitch, Operation, ServiceAutomation
from platforms.base import PodFacts

log = logging.getLogger(__name__)

ACTION = "oom_guard"
ACTING = "restarting before the OOM killer does"

Start = Callable[[Actor, str, str], Operation]


@dataclass(frozen=True)
class GuardConfig:
    """When the guard acts and how often. `min_ready` 0 means all pods but one (N−1)."""

    threshold_s: float = 120.0
    cooldown_s: float = 300.0
    retry_s: float = 30.0
    min_ready: int = 0
    interval_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("threshold_s", "cooldown_s", "retry_s", "interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"oom guard: {name} must be positive, got {getattr(self, name)!r}")
        if self.min_ready < 0:
            raise ValueError(f"oom guard: min_ready must be 0 (N−1) or more, got {self.min_ready}")


def config_from_settings() -> GuardConfig:
    """``BALLAST_OOM_GUARD_THRESHOLD_S``, ``_COOLDOWN_S`` and ``_MIN_READY``."""
    return GuardConfig(
        threshold_s=settings.BALLAST_OOM_GUARD_THRESHOLD_S,
        cooldown_s=settings.BALLAST_OOM_GUARD_COOLDOWN_S,
        min_ready=settings.BALLAST_OOM_GUARD_MIN_READY,
    )


def ready_floor(pods: Sequence[PodFacts], config: GuardConfig) -> int:
    """How many other pods must stay ready while one restarts: `min_ready`, or N−1; at least 1."""
    return max(1, config.min_ready or len(pods) - 1)


def choose(
    forecasts: Mapping[str, OomForecast],
    pods: Sequence[PodFacts],
    config: GuardConfig,
    cooling: set[str],
) -> tuple[OomForecast | None, str]:
    """The pod to restart now (the soonest to OOM under the threshold) or None, and why not."""
    due = sorted(
        (f for f in forecasts.values() if f.seconds_to_oom <= config.threshold_s),
        key=lambda f: f.seconds_to_oom,
    )
    if not due:
        return None, ""
    ready = {p.name for p in pods if p.ready}
    floor = ready_floor(pods, config)
    for candidate in due:
        if candidate.pod in cooling:
            continue
        others = len(ready - {candidate.pod})
        if others < floor:
            return None, (
                f"{candidate.reason()}; not restarting: {others} other pod(s) ready,"
                f" the floor is {floor}"
            )
        return candidate, ""
    return None, f"{due[0].reason()}; not restarting: cooling down after its last restart"


def _cooling(service: str, config: GuardConfig) -> set[str]:
    """The pods the guard acted on within the cool-down (or failed on within `retry_s`)."""
    now = timezone.now()
    events = AuditEvent.objects.filter(
        action=ACTION, service=service, at__gte=now - timedelta(seconds=config.cooldown_s)
    ).values_list("target", "result", "at")
    retry_from = now - timedelta(seconds=config.retry_s)
    return {
        target
        for target, result, at in events
        if result != AuditEvent.Result.FAILED or at >= retry_from
    }


def _enabled(service: str) -> bool:
    on: bool = ServiceAutomation.objects.filter(service=service, oom_guard=True).exists()
    paused: bool = AutomationSwitch.is_paused()
    return on and not paused


def _busy(service: str) -> bool:
    running = Operation.objects.filter(service=service).exclude(step__in=Operation.FINISHED)
    busy: bool = running.exists()
    return busy


def guard_service(
    service: str,
    forecasts: Mapping[str, OomForecast],
    pods: Sequence[PodFacts],
    config: GuardConfig,
    start: Start = operations.start_restart,
) -> tuple[AuditEvent | None, str]:
    """One look at one service (in a worker thread): the audit event of what it did (a
    restart started, or one the platform refused) and, when it waited, why."""
    if not forecasts or not _enabled(service):
        return None, ""
    if _busy(service):
        return None, "another operation runs on the service"
    forecast, why = choose(forecasts, pods, config, _cooling(service, config))
    if forecast is None:
        return None, why
    return _act(service, forecast, start), ""


def _act(service: str, forecast: OomForecast, start: Start) -> AuditEvent:
    reason = f"{forecast.reason()}; {ACTING}"
    facts = {
        "oom_s": round(forecast.seconds_to_oom),
        "memory_bytes": forecast.memory_bytes,
        "limit_bytes": forecast.limit_bytes,
        "slope_bytes_per_s": round(forecast.slope_bytes_per_s),
    }
    try:
        op = start(operations.SYSTEM, service, forecast.pod)
    except ActionError as err:
        log.warning("oom guard: %s; the restart was refused: %s", forecast.reason(), err)
        return _audit(service, forecast.pod, facts, AuditEvent.Result.FAILED,
                      f"{reason}: refused: {err}")  # fmt: skip
    log.warning("oom guard: %s", reason)
    return _audit(
        service, forecast.pod, {**facts, "operation": op.pk}, AuditEvent.Result.OK, reason
    )


def _audit(service: str, pod: str, after: dict[str, int], result: str, detail: str) -> AuditEvent:
    event: AuditEvent = AuditEvent.objects.create(
        actor=operations.SYSTEM.name, source=operations.SYSTEM.source, action=ACTION,
        service=service, target=pod, before=None, after=after, result=result, detail=detail,
    )  # fmt: skip
    return event


class OomGuard(OneTask):
    """Runs `guard_service` for every service of `collector` every `config.interval_s`.
    `start()`, `stop()`."""

    task_name = "oom guard"

    def __init__(self, collector: Collector, config: GuardConfig) -> None:
        self.collector = collector
        self.config = config
        self._said: dict[str, str] = {}  # per service, why it last waited (logged once)

    async def check(self) -> list[AuditEvent]:
        """One look at every service; the audit events of what it did."""
        done: list[AuditEvent] = []
        for service, target in self.collector.config.services.items():
            # Read on the loop, which is where the collector changes them.
            forecasts = self.collector.memory.forecasts(target.deployment)
            pods = list(self.collector.pods(target.deployment) or [])
            event, why = await sync_to_async(guard_service)(service, forecasts, pods, self.config)
            if event is not None:
                done.append(event)
            # Said once per kind of wait: its figures change every look.
            said = re.sub(r"[0-9.]+", "#", why)
            if why and said != self._said.get(service):
                log.info("oom guard, %s: %s", service, why)
            self._said[service] = said
        return done

    async def _run(self) -> None:
        await every(
            self.config.interval_s, self.check, log, "the oom guard's look failed; trying again"
        )
