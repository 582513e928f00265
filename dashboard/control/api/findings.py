"""`GET /api/v1/services/{service}/findings/`: what the collector diagnosed about the
service, from its newest frame. Today one finding: clients that bypass Ballast and are
pinned to a pod by long-lived connections (dashboard/collector/pinning/)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.collector.pinning import pinning_frame, shares_of
from dashboard.control import actions, runtime
from dashboard.control.api.base import ControlView
from dashboard.control.api.serializers import ErrorOut


class ConnectionOut(serializers.Serializer):
    peer = serializers.CharField(help_text="The client's address as the pod sees it.")
    origin = serializers.ChoiceField(
        ["bypass", "client", "unknown"],
        help_text="bypass: a client that does not use Ballast; client: the same or a"
        " proxyless client (its host runs one: not told apart by address); unknown: the"
        " balancer engine's own connections are not known (HAProxy).",
    )
    calls_s = serializers.FloatField(
        allow_null=True, help_text="Calls started per second over the last channelz read."
    )
    calls = serializers.IntegerField(help_text="Calls started since it opened.")
    age_s = serializers.IntegerField(help_text="Since the collector first saw it.")
    at_least = serializers.BooleanField(
        help_text="It was open at the collector's first read: older, maybe."
    )


class PinningPodOut(serializers.Serializer):
    pod = serializers.CharField()
    bypass_share = serializers.FloatField(
        allow_null=True, help_text="Share of its calls that bypassed Ballast, 0 to 1."
    )
    ballast_conns = serializers.IntegerField(
        allow_null=True, help_text="Ballast's connections to it; null without channelz."
    )
    client_conns = serializers.IntegerField(
        allow_null=True, help_text="Its other connections; null without channelz."
    )
    conns = ConnectionOut(
        many=True,
        allow_null=True,
        help_text="The busiest 10 of its other connections; null without channelz, or"
        " (for a pod the finding is not about) when the collector runs in another process.",
    )


class FindingsOut(serializers.Serializer):
    service = serializers.CharField()
    t = serializers.IntegerField(allow_null=True, help_text="Unix ms of the frame read.")
    finding = serializers.CharField(
        allow_null=True, help_text="In words, with the numbers; null: nothing to say."
    )
    pinned = serializers.CharField(allow_null=True, help_text="The pod the finding is about.")
    pods = PinningPodOut(many=True)


def findings(service: str) -> dict[str, Any]:
    """The service's findings from its newest frame; nulls and no pods before one. With the
    collector in this process every pod's connections are given (frames carry only the
    pinned pod's: `pinning.slim`), as it holds them now."""
    frame = actions.latest_frame(service) or {}
    pinning: Mapping[str, Any] = frame.get("pinning") or {}
    collector = runtime.current().collector
    if pinning and collector is not None:
        pinning = pinning_frame(frame, collector.pinning.connections, shares_of(pinning))
    return {
        "service": service,
        "t": frame.get("t"),
        "finding": pinning.get("finding"),
        "pinned": pinning.get("pinned"),
        "pods": [_pod(p) for p in pinning.get("pods", [])],
    }


def _pod(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "pod": pod["pod"],
        "bypass_share": pod.get("bypass_share"),
        "ballast_conns": pod.get("ballast_conns"),
        "client_conns": pod.get("client_conns"),
        "conns": pod.get("conns"),
    }


class ServiceFindings(ControlView):
    @extend_schema(responses={200: FindingsOut, 404: ErrorOut})
    def get(self, request: Request, service: str) -> Response:
        """Clients that bypass Ballast, pinned to pods: per pod the bypass share of its
        calls and the client connections it holds (from its channelz, where it serves it),
        and the finding in words when it matters."""
        return Response(FindingsOut(findings(actions.known_service(service))).data)
