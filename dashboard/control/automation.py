"""What Ballast may do on its own, in the database: per service the automation an operator
turned on (`ServiceAutomation`), the one switch that pauses all of it
(`AutomationSwitch`), and the auto weights the controller gives (`AutoWeight`).

Every change an operator makes here is audited with the operator as actor; every auto
weight the controller gives is audited as the system actor ("ballast") with its reason.
Turning a service's autoweights off, or pausing, drops its auto weights in the same
transaction: its pods go back to their defaults as any desired-state change converges
(the reconciler sends the weights), and nothing automatic is left behind to resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from dashboard.control import actions, runtime
from dashboard.control.actions import Actor
from dashboard.control.autoweights import Decision
from dashboard.control.models import (
    AuditEvent,
    AutomationSwitch,
    AutoWeight,
    EndpointOverride,
    ServiceAutomation,
)

SYSTEM = "ballast"
SET_AUTOMATION = "set_automation"
PAUSE = "pause_automation"
RESUME = "resume_automation"
AUTO_WEIGHT = "auto_weight"
# The audit actions that change the desired state (the reconciler's `CHANGES`).
CHANGES = (SET_AUTOMATION, PAUSE, RESUME, AUTO_WEIGHT)
SWITCHES = ("autoweights", "oom_guard")


def _unix_ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at is not None else 0


def _note_change() -> None:
    """Tells the reconciler in this process (if any) that the desired state changed."""
    current = runtime.current()
    if current.loop is not None and current.reconciler is not None:
        current.loop.call_soon_threadsafe(current.reconciler.note_change)


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


# ---- reading -----------------------------------------------------------------------------


def switches(service: str) -> dict[str, bool]:
    """The service's automation switches (all off without a row)."""
    row = ServiceAutomation.objects.filter(service=service).first()
    return {name: bool(row and getattr(row, name)) for name in SWITCHES}


def automation_state(service: str) -> dict[str, Any]:
    """The service's switches, the global pause and the auto weights its pods have now."""
    actions.known_service(service)
    row = ServiceAutomation.objects.select_related("updated_by").filter(service=service).first()
    return {
        "service": service,
        **switches(service),
        "paused": AutomationSwitch.is_paused(),
        "updated_by": _username(row.updated_by) if row else None,
        "updated_at": row.updated_at if row else None,
        "auto_weights": [_auto_weight(w) for w in AutoWeight.objects.filter(service=service)],
    }


def _auto_weight(w: AutoWeight) -> dict[str, Any]:
    return {"pod": w.endpoint_id, "weight": w.weight, "reason": w.reason,
            "updated_at": w.updated_at}  # fmt: skip


def pause_state() -> dict[str, Any]:
    row = AutomationSwitch.objects.select_related("updated_by").filter(pk=1).first()
    return {
        "paused": bool(row and row.paused),
        "updated_by": _username(row.updated_by) if row else None,
        "updated_at": row.updated_at if row else None,
    }


def autoweights_on() -> set[str]:
    """The services whose weights the controller sets now: autoweights on, not paused."""
    if AutomationSwitch.is_paused():
        return set()
    return set(ServiceAutomation.objects.filter(autoweights=True).values_list("service", flat=True))


def desired_auto_weights() -> tuple[dict[str, dict[str, int]], int]:
    """The auto weights that are desired now (services with autoweights on, not paused),
    by service and pod, and when the newest of them (or a switch) changed (unix ms)."""
    changed = max(
        [_unix_ms(a.updated_at) for a in ServiceAutomation.objects.all()]
        + [_unix_ms(s.updated_at) for s in AutomationSwitch.objects.all()]
        + [0]
    )
    weights: dict[str, dict[str, int]] = {}
    on = autoweights_on()
    for w in AutoWeight.objects.filter(service__in=on):
        weights.setdefault(w.service, {})[w.endpoint_id] = w.weight
        changed = max(changed, _unix_ms(w.updated_at))
    return weights, changed


@dataclass(frozen=True)
class ServiceInputs:
    """What the controller needs from the database for one service."""

    current: Mapping[str, int]  # auto weights given now, by pod
    overridden: frozenset[str]  # pods with an operator weight: theirs wins


def controller_inputs() -> dict[str, ServiceInputs]:
    """Per service the controller works on now (autoweights on, not paused) its inputs."""
    on = autoweights_on()
    current: dict[str, dict[str, int]] = {s: {} for s in on}
    for w in AutoWeight.objects.filter(service__in=on):
        current[w.service][w.endpoint_id] = w.weight
    overridden: dict[str, set[str]] = {s: set() for s in on}
    for service, pod in EndpointOverride.objects.filter(
        service__in=on, weight__isnull=False
    ).values_list("service", "endpoint_id"):
        overridden[service].add(pod)
    return {s: ServiceInputs(current[s], frozenset(overridden[s])) for s in on}


# ---- the operator's switches -------------------------------------------------------------


def set_switches(actor: Actor, service: str, changes: Mapping[str, bool]) -> dict[str, Any]:
    """Turns the service's automation on or off (`changes`: autoweights and/or oom_guard),
    audited with `actor`. Turning autoweights off drops the service's auto weights."""
    actions.known_service(service)
    unknown = sorted(set(changes) - set(SWITCHES))
    if unknown or not changes:
        raise actions.Invalid(f"send one or more of {', '.join(SWITCHES)} as true or false")
    with transaction.atomic():
        row, _ = ServiceAutomation.objects.select_for_update().get_or_create(service=service)
        before = {name: getattr(row, name) for name in SWITCHES}
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_by = actor.user if getattr(actor.user, "pk", None) else None
        row.save()
        after = {name: getattr(row, name) for name in SWITCHES}
        dropped = 0 if row.autoweights else _drop(AutoWeight.objects.filter(service=service))
        _audit_act(actor, SET_AUTOMATION, service, service, before, after, _dropped(dropped))
    _note_change()
    return automation_state(service)


def set_paused(actor: Actor, paused: bool) -> dict[str, Any]:
    """Pauses (or resumes) every automatic action on every service, audited with `actor`.
    Pausing drops every auto weight: the pods go back to their defaults."""
    with transaction.atomic():
        row, _ = AutomationSwitch.objects.select_for_update().get_or_create(pk=1)
        before = {"paused": row.paused}
        row.paused = paused
        row.updated_by = actor.user if getattr(actor.user, "pk", None) else None
        row.save()
        dropped = _drop(AutoWeight.objects.all()) if paused else 0
        detail = _dropped(dropped) or ("" if paused else "automation runs again where it is on")
        _audit_act(actor, PAUSE if paused else RESUME, "", "automation", before,
                   {"paused": paused}, detail)  # fmt: skip
    _note_change()
    return pause_state()


def _drop(rows: Any) -> int:
    count: int = rows.delete()[0]
    return count


def _dropped(count: int) -> str:
    return f"{count} auto weight(s) dropped: those pods go back to their defaults" if count else ""


def _audit_act(
    actor: Actor, action: str, service: str, target: str,
    before: dict[str, Any], after: dict[str, Any], detail: str,
) -> AuditEvent:  # fmt: skip
    event: AuditEvent = AuditEvent.objects.create(
        actor=actor.name, source=actor.source, token=actor.token, action=action,
        service=service, target=target, before=before, after=after,
        result=AuditEvent.Result.OK, detail=detail,
    )  # fmt: skip
    return event


# ---- the controller's writes -------------------------------------------------------------


def save_decisions(service: str, decisions: Sequence[Decision], present: Iterable[str]) -> int:
    """Gives the changed weights of `decisions` (each audited as the system with its
    reason) and forgets the auto weights of pods no longer `present`; nothing when the
    service's autoweights went off or automation was paused meanwhile. Returns how many
    weights were given or dropped."""
    with transaction.atomic():
        if service not in autoweights_on():
            return 0
        present = set(present)
        AutoWeight.objects.filter(service=service).exclude(endpoint_id__in=present).delete()
        given = 0
        for d in decisions:
            if d.changed and d.pod in present:
                _give(service, d)
                given += 1
    return given


def _give(service: str, d: Decision) -> None:
    if d.weight is None:
        AutoWeight.objects.filter(service=service, endpoint_id=d.pod).delete()
    else:
        AutoWeight.objects.update_or_create(
            service=service, endpoint_id=d.pod,
            defaults={"weight": d.weight, "reason": d.reason[:300]},
        )  # fmt: skip
    AuditEvent.objects.create(
        actor=SYSTEM, source=AuditEvent.Source.SYSTEM, action=AUTO_WEIGHT, service=service,
        target=d.pod, before={"weight": d.was}, after={"weight": d.weight},
        result=AuditEvent.Result.OK, detail=d.reason,
    )  # fmt: skip
