"""Reading: services, their pods with live figures and desired state, stats over a window,
balancer replicas, the audit log and the operations. Any logged-in user (or token)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.control import actions
from dashboard.control.api import observed
from dashboard.control.api.base import ControlView
from dashboard.control.api.filters import AuditFilter, OperationFilter
from dashboard.control.api.serializers import (
    AuditEventOut,
    ErrorOut,
    OperationOut,
    PodOut,
    ReplicaOut,
    ServiceOut,
    StatsOut,
    StatsQuery,
)
from dashboard.control.models import AuditEvent, Operation

NOT_FOUND = {404: ErrorOut}


class ServiceList(ControlView):
    @extend_schema(responses=ServiceOut(many=True))
    def get(self, request: Request) -> Response:
        """Every service of BALLAST_SERVICES from its newest frame."""
        summaries = [observed.service_summary(s) for s in settings.BALLAST_SERVICES]
        return Response(ServiceOut(summaries, many=True).data)


class ServiceDetail(ControlView):
    @extend_schema(responses={200: ServiceOut, **NOT_FOUND})
    def get(self, request: Request, service: str) -> Response:
        """One service; its name and nulls before its first frame."""
        summary = observed.service_summary(actions.known_service(service))
        return Response(ServiceOut(summary).data)


class PodList(ControlView):
    @extend_schema(responses={200: PodOut(many=True), **NOT_FOUND})
    def get(self, request: Request, service: str) -> Response:
        """The pods of the newest frame, each with its desired state (null: no override)."""
        return Response(PodOut(observed.pods(service), many=True).data)


class PodDetail(ControlView):
    @extend_schema(responses={200: PodOut, 400: ErrorOut, **NOT_FOUND})
    def get(self, request: Request, service: str, pod: str) -> Response:
        return Response(PodOut(observed.pod(service, pod)).data)


class ServiceStats(ControlView):
    @extend_schema(parameters=[StatsQuery], responses={200: StatsOut, **NOT_FOUND})
    def get(self, request: Request, service: str) -> Response:
        """Per pod the mean requests/s, errors/s and p99 over the last `window_s` (1 to 900)."""
        query = StatsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        stats = observed.window_stats(service, query.validated_data["window_s"])
        return Response(StatsOut(stats).data)


class ReplicaList(ControlView):
    @extend_schema(responses=ReplicaOut(many=True))
    def get(self, request: Request) -> Response:
        """The balancer replicas: up and holding the desired state (null: not known yet)."""
        return Response(ReplicaOut(observed.replicas(), many=True).data)


class AuditList(ControlView, generics.ListAPIView):
    """What operators and tokens did or tried, newest first, 50 a page."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventOut
    filterset_class = AuditFilter


class OperationList(ControlView, generics.ListAPIView):
    """Restarts and rollout restarts, newest first, 50 a page."""

    queryset = Operation.objects.all()
    serializer_class = OperationOut
    filterset_class = OperationFilter


class OperationDetail(ControlView, generics.RetrieveAPIView):
    """One operation and how far it got."""

    queryset = Operation.objects.all()
    serializer_class = OperationOut
