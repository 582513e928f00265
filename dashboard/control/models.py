"""The operator's desired state, the long-running operations, and the audit log.

Desired state is what an operator asked for and the balancers must hold: per
endpoint a weight and/or a drain, per service a policy. It is pushed to every
balancer replica when set and re-applied whenever a replica (re)connects, so a
restarted replica comes back to it. `base_*` keep what the balancers had before
the first override, which is what clearing an override (or its expiry) restores.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class EndpointOverride(models.Model):
    """Desired state of one endpoint (a pod) of a service, keyed like the balancer's."""

    service = models.CharField(max_length=64)
    endpoint_id = models.CharField(max_length=253)
    weight = models.PositiveIntegerField(null=True, blank=True)  # None: the balancer's own
    base_weight = models.PositiveIntegerField(default=100)
    drained = models.BooleanField(default=False)
    drain_timeout_s = models.FloatField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "endpoint_id"], name="one_override_per_endpoint"
            )
        ]
        ordering = ["service", "endpoint_id"]

    def __str__(self) -> str:
        return f"{self.service}/{self.endpoint_id}"

    @property
    def is_empty(self) -> bool:
        """Asks nothing of the balancers any more."""
        return self.weight is None and not self.drained


class ClusterOverride(models.Model):
    """Desired load-balancing policy of one service."""

    service = models.CharField(max_length=64, unique=True)
    policy = models.CharField(max_length=32)
    base_policy = models.CharField(max_length=32, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service"]

    def __str__(self) -> str:
        return f"{self.service}: {self.policy}"


class Operation(models.Model):
    """A restart of a pod or a rollout restart of a deployment, step by step."""

    class Kind(models.TextChoices):
        RESTART = "restart"
        ROLLOUT_RESTART = "rollout_restart"

    class Step(models.TextChoices):
        DRAINING = "draining"
        DRAINED = "drained"
        RESTARTING = "restarting"
        WAITING_READY = "waiting_ready"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Step.DONE, Step.FAILED, Step.CANCELLED)

    kind = models.CharField(max_length=32, choices=Kind.choices)
    service = models.CharField(max_length=64)
    target = models.CharField(max_length=253)  # the pod, or the deployment
    step = models.CharField(max_length=32, choices=Step.choices, default=Step.DRAINING)
    detail = models.TextField(blank=True)
    new_pod = models.CharField(max_length=253, blank=True)
    actor = models.CharField(max_length=150)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The dashboard process running the steps (host, pid and a per-start id) and when it
    # last said it still does: a running operation whose owner stopped beating is orphaned.
    owner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # An operator asked to stop it; the owner stops at its next step and undoes its drain.
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.service}/{self.target}: {self.step}"

    @property
    def running(self) -> bool:
        return self.step not in self.FINISHED


class AuditEvent(models.Model):
    """One thing an operator or a token did or tried to do, and how it ended."""

    class Result(models.TextChoices):
        OK = "ok"  # every reachable replica took it
        PENDING = "pending"  # saved; some replicas (or all) were unreachable
        FAILED = "failed"
        DENIED = "denied"  # the actor's role may not do it

    class Source(models.TextChoices):
        UI = "ui"
        API = "api"
        SYSTEM = "system"  # expiry, re-application

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150)
    source = models.CharField(max_length=16, choices=Source.choices)
    token = models.CharField(max_length=32, blank=True)  # the API token's key prefix
    action = models.CharField(max_length=32)
    service = models.CharField(max_length=64, blank=True, db_index=True)
    target = models.CharField(max_length=253, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices)
    detail = models.TextField(blank=True)
    # The balancer replicas that were down when it was pushed; each one is taken off
    # (and the detail says when) once the reconciler sees it hold the desired state.
    pending_replicas = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}: {self.result}"
        )


class ServiceAutomation(models.Model):
    """What an operator lets Ballast do on its own for one service: all off by default.

    Every automatic action runs as the system actor, bounded per interval, audited
    with its reason, and none runs while `AutomationSwitch` is paused.
    """

    service = models.CharField(max_length=64, unique=True)
    # Weights from each pod's CPU per call (operator overrides win over them).
    autoweights = models.BooleanField(default=False)
    # Drain and restart a pod whose memory trend predicts an OOM kill soon.
    oom_guard = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service"]

    def __str__(self) -> str:
        return f"{self.service}: autoweights={self.autoweights} oom_guard={self.oom_guard}"


class AutomationSwitch(models.Model):
    """The one switch that stops every automatic action on every service (one row)."""

    paused = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    updated_at = models.DateTimeField(auto_now=True)

    @classmethod
    def is_paused(cls) -> bool:
        """True while an operator has stopped all automation (no row: running)."""
        return cls.objects.filter(pk=1, paused=True).exists()


class AutoWeight(models.Model):
    """The weight the auto-weights controller gives one pod, and why (its inputs in words).

    Desired only while the service's `ServiceAutomation.autoweights` is on and automation
    is not paused; an operator's weight override on the pod wins over it.
    """

    service = models.CharField(max_length=64)
    endpoint_id = models.CharField(max_length=253)
    weight = models.PositiveIntegerField()
    reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "endpoint_id"], name="one_auto_weight_per_endpoint"
            )
        ]
        ordering = ["service", "endpoint_id"]

    def __str__(self) -> str:
        return f"{self.service}/{self.endpoint_id}: {self.weight}"
