"""What the API takes and gives: request bodies (checked strictly, with messages that say
what to send) and the shapes of its answers, which also make the OpenAPI schema."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from balancer.endpoint import MAX_WEIGHT, MIN_WEIGHT
from balancer.picker import POLICIES
from dashboard.control.actions import MIN_DRAIN_TIMEOUT_S, Invalid, validate_weight
from dashboard.control.models import AuditEvent, Operation

MAX_EXPIRES_IN_S = 366 * 24 * 3600  # an override that outlives a year is a default
MAX_DRAIN_TIMEOUT_S = 24 * 3600.0  # the admin API takes milliseconds in 32 bits
MAX_WINDOW_S = 900  # the page history holds 15 minutes


# ---- request bodies ----------------------------------------------------------------------


class WeightField(serializers.IntegerField):
    """A JSON integer in the weight range and nothing else: not "300", 1.5, 300.0 or true."""

    def to_internal_value(self, data: Any) -> int:
        try:
            return validate_weight(data)
        except Invalid as err:  # the field's name comes first in the error already
            raise serializers.ValidationError(str(err).removeprefix("weight ")) from None


class SecondsField(serializers.FloatField):
    """A finite JSON number of seconds from `min_value` to `max_value` (not "5", not true)."""

    def __init__(self, **kwargs: Any) -> None:
        low, high = kwargs["min_value"], kwargs["max_value"]
        kwargs["error_messages"] = {
            "invalid": f"must be a number of seconds from {low:g} to {high:g}",
            "min_value": f"must be at least {low:g} seconds",
            "max_value": f"must be at most {high:g} seconds",
        }
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        value = float(super().to_internal_value(data))
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class WholeSecondsField(serializers.IntegerField):
    """A JSON integer of seconds from `min_value` to `max_value` and nothing else: as
    strict as a weight (not "600", "1e3", 600.0 or true)."""

    def __init__(self, **kwargs: Any) -> None:
        low, high = kwargs["min_value"], kwargs["max_value"]
        self.range_text = f"a whole number of seconds from {low} to {high}"
        kwargs["error_messages"] = {
            key: f"must be {self.range_text}" for key in ("invalid", "min_value", "max_value")
        }
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


def expires_at(seconds: int | None) -> datetime | None:
    return None if seconds is None else timezone.now() + timedelta(seconds=seconds)


class Expiring(serializers.Serializer):
    expires_in_s = WholeSecondsField(
        required=False, allow_null=True, min_value=1, max_value=MAX_EXPIRES_IN_S,
        help_text="The override reverts by itself after this many seconds.",
    )  # fmt: skip


class WeightIn(Expiring):
    weight = WeightField(
        min_value=MIN_WEIGHT, max_value=MAX_WEIGHT,
        help_text="The pod's share of new requests is weight ÷ the READY pods' weights.",
    )  # fmt: skip


class DrainIn(Expiring):
    timeout_s = SecondsField(
        required=False, allow_null=True, min_value=MIN_DRAIN_TIMEOUT_S,
        max_value=MAX_DRAIN_TIMEOUT_S,
        help_text="Calls still running after this long are cancelled (1 ms at least, the"
        " balancers count milliseconds); none: wait for them.",
    )  # fmt: skip


class PolicyIn(Expiring):
    policy = serializers.ChoiceField(
        choices=POLICIES,
        error_messages={
            "invalid_choice": f"{{input!r}} is unknown: use one of {', '.join(POLICIES)}"
        },
    )


class StatsQuery(serializers.Serializer):
    window_s = serializers.IntegerField(min_value=1, max_value=MAX_WINDOW_S, default=60)


# ---- answers -----------------------------------------------------------------------------


class ImbalanceOut(serializers.Serializer):
    max_mean = serializers.FloatField(allow_null=True)
    cv = serializers.FloatField(allow_null=True)
    busiest = serializers.CharField(allow_null=True)
    flagged = serializers.BooleanField()
    leans_away = serializers.BooleanField(
        required=False,
        help_text="Ballast's own share only: uneven past the limits, but a load-aware policy"
        " leaning away from the pods that bypassing clients keep busy (not flagged).",
    )


class ReplicaStatusOut(serializers.Serializer):
    id = serializers.CharField()
    up = serializers.BooleanField(allow_null=True)
    converged = serializers.BooleanField(allow_null=True)


class ReplicaOut(ReplicaStatusOut):
    address = serializers.CharField()


class PolicyOverrideOut(serializers.Serializer):
    policy = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField()


class ServiceOut(serializers.Serializer):
    name = serializers.CharField()
    pods = serializers.IntegerField(allow_null=True)
    ready = serializers.IntegerField(allow_null=True)
    rps = serializers.FloatField(allow_null=True)
    pod_rps = serializers.FloatField(allow_null=True)
    err_ratio = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)
    policy = serializers.CharField(allow_null=True, help_text="As the balancers report it.")
    policy_override = PolicyOverrideOut(allow_null=True)
    imbalance = ImbalanceOut(allow_null=True)
    pod_imbalance = ImbalanceOut(allow_null=True)
    replicas = ReplicaStatusOut(many=True, allow_null=True)
    updated = serializers.IntegerField(allow_null=True, help_text="Unix ms of the newest frame.")


class DesiredOut(serializers.Serializer):
    weight = serializers.IntegerField(allow_null=True)
    drained = serializers.BooleanField()
    drain_timeout_s = serializers.FloatField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField()


class PodOut(serializers.Serializer):
    pod = serializers.CharField()
    state = serializers.CharField(allow_null=True)
    weight = serializers.IntegerField(allow_null=True)
    rps = serializers.FloatField(allow_null=True)
    err_s = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)
    in_flight = serializers.IntegerField(allow_null=True)
    pod_rps = serializers.FloatField(allow_null=True)
    cpu_m = serializers.IntegerField(allow_null=True)
    mem = serializers.IntegerField(allow_null=True)
    mem_limit = serializers.IntegerField(allow_null=True)
    restarts = serializers.IntegerField(allow_null=True)
    last_reason = serializers.CharField(allow_null=True)
    started = serializers.IntegerField(allow_null=True)
    phase = serializers.CharField(allow_null=True)
    ready = serializers.BooleanField(allow_null=True)
    # Predicted seconds until the pod's memory meets its limit; null when not growing.
    oom_s = serializers.IntegerField(allow_null=True)
    desired = DesiredOut(allow_null=True)


class PodStatsOut(serializers.Serializer):
    pod = serializers.CharField()
    frames = serializers.IntegerField(help_text="Frames of the window the pod is in.")
    rps = serializers.FloatField(allow_null=True)
    err_s = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True, help_text="Mean of the frames that have one.")


class StatsOut(serializers.Serializer):
    service = serializers.CharField()
    window_s = serializers.IntegerField()
    frames = serializers.IntegerField()
    pods = PodStatsOut(many=True)


class ReplicaResultOut(serializers.Serializer):
    replica = serializers.CharField()
    applied = serializers.BooleanField()
    pending = serializers.BooleanField()
    error = serializers.CharField()


class ActOut(serializers.Serializer):
    result = serializers.ChoiceField(choices=["ok", "pending", "failed"])
    state = serializers.DictField(help_text="The desired state after the action.")
    replicas = ReplicaResultOut(many=True)
    audit_id = serializers.IntegerField()
    detail = serializers.CharField(required=False, help_text="Only with 503: pending everywhere.")


class ErrorOut(serializers.Serializer):
    detail = serializers.CharField()


class AuditEventOut(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id", "at", "actor", "source", "token", "action", "service", "target",
            "before", "after", "result", "detail",
        ]  # fmt: skip


class OperationOut(serializers.ModelSerializer):
    running = serializers.BooleanField(read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id", "kind", "service", "target", "step", "detail", "new_pod", "actor",
            "started_at", "finished_at", "running",
        ]  # fmt: skip
