"""Explain and preview: why a pod gets its share (`GET .../pods/<pod>/explain/`, anyone
who may read), and what a weight or a drain would do before it is applied
(`?dry_run=1` on the weight and drain acts: operators, as the acts; nothing is saved,
pushed or audited).

The "why" comes from the balancer replicas' latest snapshots: the embedded collector's
when it runs in this process, else asked of every replica on the spot.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from asgiref.sync import async_to_sync
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.tls import TlsError, open_channel
from dashboard.collector.explain import PodWhy, explain_pod, known_pods
from dashboard.collector.runner import ReplicaTarget
from dashboard.control import actions, runtime
from dashboard.control.api.base import ControlView
from dashboard.control.api.preview import Change, Preview, preview
from dashboard.control.api.serializers import ErrorOut

SNAPSHOT_TIMEOUT_S = 2.0


# ---- why this share ----------------------------------------------------------------------


class ReplicaWhyOut(serializers.Serializer):
    replica = serializers.CharField()
    state = serializers.CharField()
    state_reason = serializers.CharField()
    state_since = serializers.IntegerField(help_text="Unix ms it entered its state.")
    weight = serializers.IntegerField(help_text="The operator's weight.")
    slow_start_factor = serializers.FloatField(help_text="Below 1 while it ramps up.")
    slow_start_ends = serializers.IntegerField(
        allow_null=True, help_text="Unix ms its slow start ends; null when not ramping."
    )
    effective_weight = serializers.FloatField(help_text="Weight × slow start; 0: not routed.")
    expected_share = serializers.FloatField(
        help_text="Of the replica's new requests (0 to 1): effective weight ÷ the sum."
    )
    in_flight = serializers.IntegerField()
    load = serializers.FloatField(
        help_text="What the policy compares: least_request in flight + fast failures;"
        " peak_ewma latency ms × (in flight + 1); else in flight (not used to pick)."
    )
    fast_failure_load = serializers.FloatField()
    ewma_latency_ms = serializers.FloatField()
    latency_penalty = serializers.FloatField(
        help_text="peak_ewma: its latency ÷ the fastest pod's (beyond the tolerance), ≥ 1."
    )
    ejections_total = serializers.IntegerField()
    ejection_multiplier = serializers.IntegerField()
    last_ejected = serializers.IntegerField(allow_null=True, help_text="Unix ms; null: never.")
    last_ejection_reason = serializers.CharField()


class PodWhyOut(serializers.Serializer):
    pod = serializers.CharField()
    policy = serializers.CharField()
    share_basis = serializers.CharField(
        help_text='"weights" (round_robin, random) or "weights at equal load".'
    )
    summary = serializers.CharField(help_text="Why, in one sentence (the first replica's).")
    replicas = ReplicaWhyOut(many=True, help_text="Each balancer replica that is up.")


class PodExplain(ControlView):
    @extend_schema(responses={200: PodWhyOut, 400: ErrorOut, 404: ErrorOut, 503: ErrorOut})
    def get(self, request: Request, service: str, pod: str) -> Response:
        """Why the pod gets its share of new requests, as each balancer replica sees it:
        state and reason, weight, slow start, effective weight, expected share, the
        policy's load signal, peak-EWMA latency and penalty, and ejections."""
        return Response(PodWhyOut(explained(service, pod)).data)


def explained(service: str, pod: str) -> PodWhy:
    """The pod's "why"; NotFound naming the pods there are, Unavailable while no replica
    is up."""
    snapshots = replica_snapshots(actions.known_service(service))
    why = explain_pod(snapshots, service, pod)
    if why is not None:
        return why
    if not any(s is not None for s in snapshots.values()):
        raise actions.Unavailable(
            f"no balancer replica of {service!r} is up to explain {actions.shown(pod)}:"
            " try again when one is back (GET /api/v1/replicas/ says which are down)"
        )
    names = ", ".join(known_pods(snapshots, service)) or "none"
    raise actions.NotFound(
        f"service {service!r} has no pod {actions.shown(pod)} behind its balancers: {names}"
    )


def replica_snapshots(service: str) -> dict[str, admin_pb2.Snapshot | None]:
    """Every replica's latest snapshot (None: down): the embedded collector's, else asked."""
    collector = runtime.current().collector
    if collector is not None:
        return collector.snapshots()
    return async_to_sync(_ask_all)(actions.replicas(), service)


async def _ask_all(
    targets: tuple[ReplicaTarget, ...], service: str
) -> dict[str, admin_pb2.Snapshot | None]:
    found = await asyncio.gather(*(_ask(t, service) for t in targets))
    return {t.id: snapshot for t, snapshot in zip(targets, found, strict=True)}


async def _ask(target: ReplicaTarget, service: str) -> admin_pb2.Snapshot | None:
    """The replica's snapshot of `service`; None when it does not answer in time."""
    metadata = (("authorization", f"Bearer {target.token}"),)
    request = admin_pb2.GetSnapshotRequest(clusters=[service])
    try:
        async with open_channel(target.address, target.tls) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            snapshot: admin_pb2.Snapshot = await stub.GetSnapshot(
                request, metadata=metadata, timeout=SNAPSHOT_TIMEOUT_S
            )
            return snapshot
    except (grpc.aio.AioRpcError, TlsError):
        return None


# ---- what-if -----------------------------------------------------------------------------


class DryRunQuery(serializers.Serializer):
    dry_run = serializers.BooleanField(
        default=False,
        help_text="1: answer with the expected share of every pod after the change, and"
        " warnings; nothing is saved, sent to the balancers or audited.",
    )
    hot_cpu_m = serializers.IntegerField(
        required=False, min_value=0,
        help_text="Warn when a pod would run above this CPU (millicores);"
        " BALLAST_PREVIEW_HOT_CPU_M by default.",
    )  # fmt: skip
    min_ready = serializers.IntegerField(
        required=False, min_value=0,
        help_text="Warn when fewer READY pods would take requests;"
        " BALLAST_PREVIEW_MIN_READY by default.",
    )  # fmt: skip


class PodPreviewOut(serializers.Serializer):
    pod = serializers.CharField()
    state = serializers.CharField(allow_null=True)
    weight = serializers.IntegerField(allow_null=True)
    weight_after = serializers.IntegerField(allow_null=True)
    share = serializers.FloatField(help_text="Of new requests via Ballast now (0 to 1).")
    share_after = serializers.FloatField()
    cpu_m = serializers.IntegerField(allow_null=True)
    cpu_after_m = serializers.IntegerField(
        allow_null=True, help_text="Its CPU now × share after ÷ share now; null: unknown."
    )


class PreviewWarningOut(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["hot", "ready_floor"])
    pod = serializers.CharField(allow_null=True)
    text = serializers.CharField()


class PreviewOut(serializers.Serializer):
    dry_run = serializers.BooleanField()
    action = serializers.ChoiceField(choices=["set_weight", "drain"])
    pod = serializers.CharField()
    policy = serializers.CharField(allow_null=True)
    share_basis = serializers.CharField()
    pods = PodPreviewOut(many=True)
    warnings = PreviewWarningOut(many=True)
    hot_cpu_m = serializers.IntegerField()
    min_ready = serializers.IntegerField()


def dry_run_query(request: Request) -> dict[str, Any]:
    """The act's query: `dry_run` and the thresholds; 400 when one is not understood."""
    query = DryRunQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    return dict(query.validated_data)


def previewed(service: str, pod: str, weight: int | None, query: dict[str, Any]) -> Response:
    """The dry run's answer: `weight` for the pod (None: its drain) against the newest
    frame. NotFound when the balancers route to no such pod; nothing changes."""
    actions.balanced_pod(service, pod)
    frame = actions.latest_frame(service) or {}
    answer: Preview = preview(
        frame,
        Change(pod, weight),
        hot_cpu_m=query.get("hot_cpu_m", settings.BALLAST_PREVIEW_HOT_CPU_M),
        min_ready=query.get("min_ready", settings.BALLAST_PREVIEW_MIN_READY),
    )
    return Response(PreviewOut(answer).data)
