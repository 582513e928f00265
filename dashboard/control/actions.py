"""What an operator (or a token) can do, in one place: the REST API and through it the
dashboard's buttons call these.

Each action checks its input (unknown service or pod, weight out of range, unknown
policy), saves the desired state in a transaction (so two operators acting at once
leave one consistent row and two audit entries), pushes it to every balancer replica
that is up, and records an audit event with what it was before and after and how
the replicas took it. A replica that is down (or does not answer) does not fail the
action: the state is saved and marked pending for it, and the reconciler applies it
when the replica is back. Acting twice (draining a drained pod) is not an error.

Actions run in a worker thread (Django's sync views); the admin calls run on an event
loop through `async_to_sync`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import models, transaction

from balancer.endpoint import MAX_WEIGHT, MIN_WEIGHT, check_weight
from balancer.picker import POLICIES
from dashboard.app.history import service_history
from dashboard.collector.runner import ReplicaTarget
from dashboard.control import runtime
from dashboard.control.desired import Command, configured
from dashboard.control.models import (
    AuditEvent,
    AutomationSwitch,
    AutoWeight,
    ClusterOverride,
    EndpointOverride,
    Operation,
    ServiceAutomation,
)
from dashboard.control.push import PushResult, push_all

DEFAULT_WEIGHT = 100
# The admin API takes a drain timeout in whole milliseconds: less would round to 0 ms,
# which it reads as "no timeout".
MIN_DRAIN_TIMEOUT_S = 0.001
# A pod is named as Kubernetes names it (a DNS-1123 subdomain) or by its address.
MAX_POD_NAME = 253
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}")
SHOWN_CHARS = 64  # a name quoted in a message or the audit log is cut to this


class ActionError(Exception):
    """An action refused, with the HTTP status the API answers with."""

    status = 400


class Invalid(ActionError):
    status = 400


class NotFound(ActionError):
    status = 404


class Conflict(ActionError):
    status = 409


class Unavailable(ActionError):
    status = 503


@dataclass(frozen=True)
class Actor:
    """Who acts, and how: from the dashboard (a session) or the API (a token)."""

    name: str
    source: str = AuditEvent.Source.UI
    token: str = ""
    user: Any = None


@dataclass
class Outcome:
    """How an action ended: its audit event, the desired state after it, and per replica
    whether it took it (`applied`), or the state waits for it (`pending`)."""

    audit: AuditEvent
    state: dict[str, Any]
    replicas: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending_everywhere(self) -> bool:
        """No replica took it: saved, but nothing balances by it yet."""
        return bool(self.replicas) and not any(r["applied"] for r in self.replicas)


# ---- what the balancers report -----------------------------------------------------------


def latest_frame(service: str) -> dict[str, Any] | None:
    newest = service_history().latest(service, 1)
    return json.loads(newest[0]) if newest else None


def shown(name: str) -> str:
    """`name` quoted for a message or the audit log: at most `SHOWN_CHARS` characters of
    it, unprintable ones escaped, and how long it was when it was cut."""
    if len(name) <= SHOWN_CHARS:
        return repr(name)
    return f"{name[:SHOWN_CHARS]!r}… ({len(name)} characters)"


def known_service(service: str) -> str:
    if service not in settings.BALLAST_SERVICES:
        known = ", ".join(settings.BALLAST_SERVICES) or "none (set BALLAST_SERVICES)"
        raise NotFound(f"unknown service {shown(service)}: the services are {known}")
    return service


def valid_pod_name(pod: str) -> str:
    """`pod` if it can name a pod: a Kubernetes name (DNS-1123 subdomain, at most 253
    characters) or a host:port address. Invalid otherwise, before anything looks it up."""
    if len(pod) <= MAX_POD_NAME and (_DNS_1123.fullmatch(pod) or _HOST_PORT.fullmatch(pod)):
        return pod
    raise Invalid(
        f"pod name {shown(pod)} is not valid: use the pod's Kubernetes name (lowercase"
        f" letters, digits, '-' and '.', at most {MAX_POD_NAME} characters) or its host:port"
    )


def balanced_pod(service: str, pod: str) -> dict[str, Any]:
    """The pod as the balancers last reported it; NotFound when they route to no such pod."""
    pods = _last_balanced_pods(known_service(service))
    for p in pods:
        if p["pod"] == pod:
            return dict(p)
    names = ", ".join(p["pod"] for p in pods) or "none reported yet"
    raise NotFound(f"service {service!r} has no pod {shown(pod)} behind its balancers: {names}")


def _last_balanced_pods(service: str) -> list[dict[str, Any]]:
    """The pods the balancers routed to in the newest frame that has any: while every
    replica is down the frames have none, and an action is still saved (pending)."""
    history = service_history()
    for encoded in reversed(history.latest(service, history.capacity)):
        pods = [p for p in json.loads(encoded).get("pods", []) if p.get("state") is not None]
        if pods:
            return pods
    return []


def replica_addresses() -> dict[str, str]:
    """The balancer replicas by id and admin address: the embedded collector's, else the
    settings' (``BALLAST_BALANCERS``)."""
    installed = runtime.current().replicas
    if installed:
        return {t.id: t.address for t in installed}
    return dict(settings.BALLAST_BALANCERS)


def replicas() -> tuple[ReplicaTarget, ...]:
    """The balancer replicas to push to, with the admin token; Unavailable without one."""
    installed = runtime.current().replicas
    if installed:
        return installed
    token = settings.BALLAST_ADMIN_TOKEN or ""
    if settings.BALLAST_BALANCERS and not token:
        raise Unavailable("BALLAST_ADMIN_TOKEN is not set: the balancers' admin API needs it")
    return tuple(
        ReplicaTarget(rid, addr, token, settings.BALLAST_ADMIN_TLS)
        for rid, addr in settings.BALLAST_BALANCERS.items()
    )


def _configured(service: str) -> tuple[int, str] | None:
    """The service's configured default weight and policy, as the first replica that is
    up reports them (what the reconciler holds an endpoint without an override to);
    None without a collector in this process."""
    collector = runtime.current().collector
    if collector is None:
        return None
    for snapshot in collector.snapshots().values():
        found = configured(snapshot, service)
        if found is not None:
            return found
    return None


def _down_replicas(service: str) -> set[str]:
    """Replicas the collector knows to be down: not worth a call that would time out."""
    collector = runtime.current().collector
    if collector is not None:
        return {rid for rid, snap in collector.snapshots().items() if snap is None}
    frame = latest_frame(service) or {}
    return {r["id"] for r in frame.get("replicas", []) if not r.get("up")}


def push(service: str, commands: Sequence[Command]) -> list[dict[str, Any]]:
    """Sends `commands` to every replica that is up; one result per configured replica."""
    targets = replicas()
    if not targets:
        raise Unavailable(
            "no balancer replica is configured: set BALLAST_BALANCERS (id=host:port,...);"
            " on Kubernetes none was found (yet) in BALLAST_BALANCERS_SERVICE"
        )
    _note_change()
    down = _down_replicas(service)
    reachable = [t for t in targets if t.id not in down]
    results: dict[str, PushResult] = {
        t.id: PushResult(t.id, applied=False, unreachable=True, error="replica is down")
        for t in targets
        if t.id in down
    }
    if reachable:
        results.update({r.replica: r for r in async_to_sync(push_all)(reachable, commands)})
    return [_result_dict(results[t.id]) for t in targets]


def _note_change() -> None:
    """Tells the reconciler in this process (if any) that the desired state changed: no
    replica shows as converged until a snapshot after the change says so."""
    current = runtime.current()
    if current.loop is not None and current.reconciler is not None:
        current.loop.call_soon_threadsafe(current.reconciler.note_change)


def _result_dict(r: PushResult) -> dict[str, Any]:
    return {
        "replica": r.replica,
        "applied": r.applied,
        "pending": not r.applied and r.unreachable,
        "error": r.error,
    }


# ---- the actions -------------------------------------------------------------------------


def validate_weight(weight: object) -> int:
    """The balancer's own weight check, worded for an operator."""
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise Invalid(f"weight must be a whole number from {MIN_WEIGHT} to {MAX_WEIGHT}")
    try:
        return check_weight(weight)
    except ValueError as err:
        raise Invalid(str(err)) from None


def validate_policy(policy: object) -> str:
    if policy not in POLICIES:
        raise Invalid(f"policy {policy!r} is unknown: use one of {', '.join(POLICIES)}")
    return str(policy)


def endpoint_state(o: EndpointOverride | None) -> dict[str, Any] | None:
    """An endpoint's desired state as the audit log and the API show it."""
    if o is None:
        return None
    return {
        "weight": o.weight,
        "drained": o.drained,
        "drain_timeout_s": o.drain_timeout_s,
        "expires_at": o.expires_at.isoformat() if o.expires_at else None,
    }


def _override_for_update(
    service: str, pod: str, observed: dict[str, Any]
) -> tuple[EndpointOverride, bool]:
    """The pod's override row, locked for this transaction (created when it had none:
    two first acts on a pod at once then wait for each other instead of both inserting).
    Returns the row and whether it existed before."""
    weight = observed.get("weight")
    base = weight if isinstance(weight, int) else DEFAULT_WEIGHT
    override, created = EndpointOverride.objects.select_for_update().get_or_create(
        service=service, endpoint_id=pod, defaults={"base_weight": base}
    )
    return override, not created


def _audit(
    actor: Actor,
    action: str,
    service: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    result: str = AuditEvent.Result.OK,
    detail: str = "",
) -> AuditEvent:
    event: AuditEvent = AuditEvent.objects.create(
        actor=actor.name, source=actor.source, token=actor.token, action=action,
        service=service, target=target, before=before, after=after, result=result,
        detail=detail,
    )  # fmt: skip
    return event


def _finish(audit: AuditEvent, results: list[dict[str, Any]]) -> None:
    """Marks the audit event with how the replicas took the change."""
    failed = [r for r in results if not r["applied"] and not r["pending"]]
    pending = [r for r in results if r["pending"]]
    if failed:
        audit.result = AuditEvent.Result.FAILED
    elif pending:
        audit.result = AuditEvent.Result.PENDING
    notes = [f"{r['replica']}: {r['error']}" for r in failed + pending]
    audit.detail = "; ".join(notes)
    # The reconciler takes each off once it sees the replica hold the desired state.
    audit.pending_replicas = [r["replica"] for r in pending]
    audit.save(update_fields=["result", "detail", "pending_replicas"])


def _refuse_during_operation(service: str, pod: str, what: str) -> None:
    """Conflict while a restart of `pod` or a rollout restart of `service` runs: giving
    the pod its calls back would undo the operation's drain while it restarts."""
    running = (
        Operation.objects.filter(service=service)
        .exclude(step__in=Operation.FINISHED)
        .filter(models.Q(kind=Operation.Kind.ROLLOUT_RESTART) | models.Q(target=pod))
        .first()
    )
    if running is not None:
        raise Conflict(
            f"a {running.kind.replace('_', ' ')} of {running.target} is running"
            f" ({running.step}), so {pod} cannot be {what} now: wait for it to finish"
        )


def _change_endpoint(
    actor: Actor,
    action: str,
    service: str,
    pod: str,
    change: Any,
    commands: Any,
    guard: Any = None,
) -> Outcome:
    observed = balanced_pod(service, pod)
    with transaction.atomic():
        if guard is not None:
            guard()
        override, existed = _override_for_update(service, pod, observed)
        before = endpoint_state(override) if existed else None
        change(override)
        override.updated_by = actor.user if getattr(actor.user, "pk", None) else None
        if override.is_empty:
            override.delete()
            after = None
        else:
            override.save()
            after = endpoint_state(override)
        audit = _audit(actor, action, service, pod, before, after)
    results = push(service, commands(override))
    _finish(audit, results)
    return Outcome(audit, after or {}, results)


def set_weight(
    actor: Actor, service: str, pod: str, weight: object, expires_at: datetime | None = None
) -> Outcome:
    value = validate_weight(weight)

    def change(o: EndpointOverride) -> None:
        o.weight = value
        o.expires_at = expires_at

    return _change_endpoint(
        actor, "set_weight", service, pod, change,
        lambda o: [Command("weight", service, pod, weight=value)],
    )  # fmt: skip


def drain(
    actor: Actor,
    service: str,
    pod: str,
    timeout_s: float | None = None,
    expires_at: datetime | None = None,
) -> Outcome:
    if timeout_s is not None and not timeout_s >= MIN_DRAIN_TIMEOUT_S:
        raise Invalid(
            f"timeout_s must be at least {MIN_DRAIN_TIMEOUT_S} seconds (1 ms): the seconds"
            " until calls left are cancelled"
        )

    def change(o: EndpointOverride) -> None:
        o.drained = True
        o.drain_timeout_s = timeout_s
        o.expires_at = expires_at

    return _change_endpoint(
        actor, "drain", service, pod, change,
        lambda o: [Command("drain", service, pod, timeout_s=timeout_s)],
    )  # fmt: skip


def undrain(actor: Actor, service: str, pod: str, *, force: bool = False) -> Outcome:
    """Returns the pod to service. Conflict while a restart of it (or a rollout of its
    service) runs, unless `force`: the operation itself undoes its drain that way."""

    def change(o: EndpointOverride) -> None:
        o.drained = False
        o.drain_timeout_s = None

    return _change_endpoint(
        actor, "undrain", service, pod, change, lambda o: [Command("undrain", service, pod)],
        None if force else lambda: _refuse_during_operation(service, pod, "undrained"),
    )  # fmt: skip


def clear_endpoint(actor: Actor, service: str, pod: str, *, force: bool = False) -> Outcome:
    """Drops the pod's override: its weight back to the configured default (what it was
    before when no replica says), undrained. Conflict while a restart of it (or a
    rollout of its service) runs, unless `force`."""
    base: dict[str, int] = {}
    defaults = _configured(service)
    auto = _auto_weight(service, pod)

    def change(o: EndpointOverride) -> None:
        base["weight"] = defaults[0] if defaults is not None else o.base_weight
        if auto is not None:
            base["weight"] = auto  # its auto weight is desired again, not the default
        o.weight = None
        o.drained = False
        o.drain_timeout_s = None
        o.expires_at = None

    return _change_endpoint(
        actor, "clear", service, pod, change,
        lambda o: [Command("weight", service, pod, weight=base["weight"]),
                   Command("undrain", service, pod)],
        None if force else lambda: _refuse_during_operation(service, pod, "cleared"),
    )  # fmt: skip


def _auto_weight(service: str, pod: str) -> int | None:
    """The pod's auto weight while it is desired (autoweights on, not paused); else None."""
    if AutomationSwitch.is_paused():
        return None
    if not ServiceAutomation.objects.filter(service=service, autoweights=True).exists():
        return None
    found = AutoWeight.objects.filter(service=service, endpoint_id=pod).first()
    return found.weight if found is not None else None


def set_policy(
    actor: Actor, service: str, policy: object, expires_at: datetime | None = None
) -> Outcome:
    value = validate_policy(policy)
    frame = latest_frame(known_service(service)) or {}
    with transaction.atomic():
        override = ClusterOverride.objects.select_for_update().filter(service=service).first()
        before = {"policy": override.policy} if override else None
        if override is None:
            override = ClusterOverride(service=service, base_policy=frame.get("policy") or "")
        override.policy = value
        override.expires_at = expires_at
        override.updated_by = actor.user if getattr(actor.user, "pk", None) else None
        override.save()
        after = {"policy": value, "expires_at": expires_at.isoformat() if expires_at else None}
        audit = _audit(actor, "set_policy", service, service, before, after)
    results = push(service, [Command("policy", service, policy=value)])
    _finish(audit, results)
    return Outcome(audit, after, results)


def clear_policy(actor: Actor, service: str) -> Outcome:
    known_service(service)
    with transaction.atomic():
        override = ClusterOverride.objects.select_for_update().filter(service=service).first()
        if override is None:
            audit = _audit(actor, "clear_policy", service, service, None, None)
            return Outcome(audit, {}, [])
        before = {"policy": override.policy}
        defaults = _configured(service)
        base = defaults[1] if defaults is not None else override.base_policy
        override.delete()
        audit = _audit(actor, "clear_policy", service, service, before, None)
    results = push(service, [Command("policy", service, policy=base)]) if base else []
    _finish(audit, results)
    return Outcome(audit, {}, results)


def deny(actor: Actor, action: str, service: str = "", target: str = "") -> AuditEvent:
    """Records an attempt the actor's role does not allow."""
    return _audit(
        actor, action, service, target, None, None, AuditEvent.Result.DENIED,
        "the operator role is needed to act",
    )  # fmt: skip
