"""Acting: weights, drains, policies, clearing overrides, restarts. Operators and admins;
anyone else is answered 403 and the attempt audited (`ControlView.permission_denied`).

A thin layer over `dashboard.control.actions` and `operations`: the body is checked,
the action runs (one at a time in this process: `base.ACTING`), and its outcome is the
answer — 503 with the same body when no replica took it (the state is saved and
pending until one is back).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.control import actions, operations
from dashboard.control.actions import Outcome
from dashboard.control.api.base import ACTING, ControlView, actor_of
from dashboard.control.api.explain import DryRunQuery, PreviewOut, dry_run_query, previewed
from dashboard.control.api.parsers import StrictJSONParser
from dashboard.control.api.serializers import (
    ActOut,
    DrainIn,
    ErrorOut,
    OperationOut,
    PolicyIn,
    WeightIn,
    expires_at,
)

PENDING_EVERYWHERE = (
    "saved, but no balancer replica could be reached: the change is pending and is"
    " applied when a replica is back"
)
ACT_RESPONSES = {
    200: ActOut,
    400: ErrorOut,
    404: ErrorOut,
    415: ErrorOut,
    503: OpenApiResponse(ActOut, description=PENDING_EVERYWHERE),
}
# The weight and drain acts answer a dry run (`?dry_run=1`) with a preview instead.
PREVIEWABLE_RESPONSES = {
    **ACT_RESPONSES,
    200: PolymorphicProxySerializer(
        component_name="ActOrPreview", serializers=[ActOut, PreviewOut],
        resource_type_field_name=None,
    ),
}  # fmt: skip
CANCEL_RESPONSES = {202: OperationOut, 404: ErrorOut, 409: ErrorOut}
OPERATION_RESPONSES = {
    202: OperationOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut, 503: ErrorOut,
}  # fmt: skip


class ActView(ControlView):
    """An act: its body, if it takes one, is JSON and nothing else (415 otherwise), and
    the schema offers only application/json."""

    parser_classes = [StrictJSONParser]


def _body(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def answer(outcome: Outcome) -> Response:
    """The action's outcome: 200, or 503 when no replica took it."""
    data: dict[str, Any] = {
        "result": outcome.audit.result,
        "state": outcome.state,
        "replicas": outcome.replicas,
        "audit_id": outcome.audit.pk,
    }
    if outcome.pending_everywhere:
        data["detail"] = PENDING_EVERYWHERE
        return Response(data, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response(data)


class SetWeight(ActView):
    action_names = {"POST": "set_weight"}

    @extend_schema(request=WeightIn, parameters=[DryRunQuery], responses=PREVIEWABLE_RESPONSES)
    def post(self, request: Request, service: str, pod: str) -> Response:
        """Sets the pod's weight on every balancer replica (optionally for a while).
        With `?dry_run=1`: every pod's expected share after it, and warnings, instead."""
        query = dry_run_query(request)
        body = _body(WeightIn, request)
        if query["dry_run"]:
            return previewed(service, pod, body["weight"], query)
        with ACTING:
            outcome = actions.set_weight(
                actor_of(request), service, pod, body["weight"],
                expires_at(body.get("expires_in_s")),
            )  # fmt: skip
        return answer(outcome)


class Drain(ActView):
    action_names = {"POST": "drain"}

    @extend_schema(request=DrainIn, parameters=[DryRunQuery], responses=PREVIEWABLE_RESPONSES)
    def post(self, request: Request, service: str, pod: str) -> Response:
        """Sends the pod no new requests; calls in flight finish (or are cancelled after
        `timeout_s`). Draining a drained pod is not an error. With `?dry_run=1`: every
        pod's expected share after it, and warnings, instead."""
        query = dry_run_query(request)
        body = _body(DrainIn, request)
        if query["dry_run"]:
            return previewed(service, pod, None, query)
        with ACTING:
            outcome = actions.drain(
                actor_of(request), service, pod, body.get("timeout_s"),
                expires_at(body.get("expires_in_s")),
            )  # fmt: skip
        return answer(outcome)


class Undrain(ActView):
    action_names = {"POST": "undrain"}

    @extend_schema(request=None, responses=ACT_RESPONSES)
    def post(self, request: Request, service: str, pod: str) -> Response:
        """Gives the pod new requests again."""
        with ACTING:
            return answer(actions.undrain(actor_of(request), service, pod))


class EndpointOverrideView(ActView):
    action_names = {"DELETE": "clear"}

    @extend_schema(responses=ACT_RESPONSES)
    def delete(self, request: Request, service: str, pod: str) -> Response:
        """Drops the pod's override: its weight from before, undrained."""
        with ACTING:
            return answer(actions.clear_endpoint(actor_of(request), service, pod))


class Policy(ActView):
    action_names = {"PUT": "set_policy", "DELETE": "clear_policy"}

    @extend_schema(request=PolicyIn, responses=ACT_RESPONSES)
    def put(self, request: Request, service: str) -> Response:
        """Sets the service's load-balancing policy on every replica (optionally for a while)."""
        body = _body(PolicyIn, request)
        with ACTING:
            outcome = actions.set_policy(
                actor_of(request), service, body["policy"], expires_at(body.get("expires_in_s"))
            )
        return answer(outcome)

    @extend_schema(responses=ACT_RESPONSES)
    def delete(self, request: Request, service: str) -> Response:
        """Drops the policy override: the policy from before comes back."""
        with ACTING:
            return answer(actions.clear_policy(actor_of(request), service))


class Restart(ActView):
    action_names = {"POST": "restart"}

    @extend_schema(request=None, responses=OPERATION_RESPONSES)
    def post(self, request: Request, service: str, pod: str) -> Response:
        """Starts a restart that loses no request: drain, restart, wait until ready.
        Follow it at /api/v1/operations/{id}/; 409 while another runs for the service."""
        with ACTING:
            operation = operations.start_restart(actor_of(request), service, pod)
        return Response(OperationOut(operation).data, status=status.HTTP_202_ACCEPTED)


class RolloutRestart(ActView):
    action_names = {"POST": "rollout_restart"}

    @extend_schema(request=None, responses=OPERATION_RESPONSES)
    def post(self, request: Request, service: str) -> Response:
        """Starts restarting the service's pods one at a time, each as a restart does."""
        with ACTING:
            operation = operations.start_rollout_restart(actor_of(request), service)
        return Response(OperationOut(operation).data, status=status.HTTP_202_ACCEPTED)


class CancelOperation(ControlView):
    action_names = {"POST": "cancel"}

    @extend_schema(request=None, responses=CANCEL_RESPONSES)
    def post(self, request: Request, pk: int) -> Response:
        """Asks a running restart or rollout to stop: it stops at its next check, gives a
        pod it drained but did not restart yet its traffic back, and ends `cancelled`
        (follow it at /api/v1/operations/{id}/). One whose dashboard process is gone
        is finished at once. 409 when it has already finished."""
        with ACTING:
            operation = operations.request_cancel(actor_of(request), pk)
        return Response(OperationOut(operation).data, status=status.HTTP_202_ACCEPTED)
