"""`GET /api/v1/desired-state/`: the operator's whole desired state, for a balancer replica
that starts (`[control_plane]` in its config) to hold before it takes its first call.

Read from the models alone (not from the reconciler's view of them): per service its
policy override and the endpoints with a weight or a drain — the operator's weight, else
the pod's auto weight while the service's autoweights are on and automation not paused.
Overrides whose time is up are left out even before the reconciler deletes them, so a
replica never starts on a state the dashboard is about to revert. Any logged-in user or
API token may read it; a balancer uses a token of a viewer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.control import automation
from dashboard.control.api.base import ControlView
from dashboard.control.models import ClusterOverride, EndpointOverride


class EndpointStateOut(serializers.Serializer):
    endpoint_id = serializers.CharField(help_text="The pod's name, as the balancers key it.")
    weight = serializers.IntegerField(allow_null=True, help_text="null: the balancer's own.")
    drained = serializers.BooleanField()
    drain_timeout_s = serializers.FloatField(
        allow_null=True, help_text="Calls still running after this long are cancelled."
    )


class ServiceStateOut(serializers.Serializer):
    name = serializers.CharField(help_text="The service, which is the balancer cluster's name.")
    policy = serializers.CharField(allow_null=True, help_text="null: the balancer's own.")
    endpoints = EndpointStateOut(many=True)


class DesiredStateOut(serializers.Serializer):
    services = ServiceStateOut(many=True)
    generated_at = serializers.DateTimeField()


def _live(overrides: QuerySet[Any], now: datetime) -> QuerySet[Any]:
    """The overrides whose time is not up."""
    return overrides.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def desired_state(now: datetime) -> dict[str, Any]:
    """Every service with a live override: its policy (or None) and its endpoints'
    weights and drains, sorted by name; endpoints that ask nothing are left out."""
    services: dict[str, dict[str, Any]] = {}

    def service(name: str) -> dict[str, Any]:
        return services.setdefault(name, {"name": name, "policy": None, "endpoints": []})

    for c in _live(ClusterOverride.objects.all(), now):
        service(c.service)["policy"] = c.policy
    autos, _ = automation.desired_auto_weights()
    for o in _live(EndpointOverride.objects.order_by("service", "endpoint_id"), now):
        auto = autos.get(o.service, {}).pop(o.endpoint_id, None)
        if o.is_empty and auto is None:
            continue
        service(o.service)["endpoints"].append({
            "endpoint_id": o.endpoint_id, "weight": o.weight if o.weight is not None else auto,
            "drained": o.drained, "drain_timeout_s": o.drain_timeout_s if o.drained else None,
        })  # fmt: skip
    for name, weights in autos.items():  # pods with an auto weight and no override
        for endpoint_id, weight in weights.items():
            service(name)["endpoints"].append(
                {"endpoint_id": endpoint_id, "weight": weight, "drained": False,
                 "drain_timeout_s": None}
            )  # fmt: skip
    for found in services.values():
        found["endpoints"].sort(key=lambda e: e["endpoint_id"])
    return {"services": [services[n] for n in sorted(services)], "generated_at": now}


class DesiredState(ControlView):
    @extend_schema(responses=DesiredStateOut)
    def get(self, request: Request) -> Response:
        """The desired state of every service: what a balancer replica must hold before it
        serves (policies, weights, drains; expired overrides left out)."""
        return Response(DesiredStateOut(desired_state(timezone.now())).data)
